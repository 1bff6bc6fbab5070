"""Check, map, preprocess and encode cells read in row chunks (:func:`scclip.io.read_backed`).

The chunked twins of :func:`~scclip.api.map_modality` and :func:`~scclip.api.prepare_modality` + encoding,
with the same numbers: mapping, RNA normalisation, ATAC TF-IDF (with the model's stored idf) and encoding work
cell by cell; what needs every cell (the count coverage, and whether RNA input already looks normalised) is
accumulated over the chunks. Only one chunk of the raw matrix is in memory at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.features import align_features
from scclip.io import Modality, check_chunk_size, check_values
from scclip.preprocess import ValueStats, binarize, normalize_rna, rna_preprocessing_info, tfidf

logger = logging.getLogger(__name__)


class MappedChunks:
    """Iterate ``(lo, hi, cells lo:hi on the model's features as float32 CSR)`` over one modality.

    Each chunk's values are checked (NaN, negative counts: the error names the cells), its per-feature totals
    are added up for :attr:`report` (``count_coverage``), and :attr:`stats` follows the mapped values.
    ``n_chunks`` counts the chunks read by the last pass. The callers (``embed``, ``train``) have already run
    :func:`scclip.io.check_chunkable` on ``data``.
    """

    def __init__(self, data: Modality, features, *, mod: str, genome: str | None = None, chunk_size=None):
        self.data, self.mod, self.chunk_size = data, mod, check_chunk_size(chunk_size)
        self.alignment = align_features(data, features, genome=genome)
        self.col_sums = np.zeros(data.n_vars)
        self.stats, self.n_chunks = ValueStats(), 0

    def __iter__(self) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        self.col_sums, self.stats, self.n_chunks = np.zeros(self.data.n_vars), ValueStats(), 0
        for lo, hi, X in self.data.chunks(self.chunk_size):
            check_values(X, self.mod, f"{self.data.source} (cells {lo:,} to {hi:,})")
            self.col_sums += np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
            mapped = self.alignment.transform(X)
            del X
            self.stats.add(mapped)
            self.n_chunks += 1
            yield lo, hi, mapped

    @property
    def report(self) -> dict:
        """The coverage report of :func:`scclip.api.map_modality` (valid after a full pass)."""
        return {**self.alignment.report, "count_coverage": self.alignment.coverage_of(self.col_sums)}


def map_all(
    data: Modality, features, mod: str, *, genome: str | None = None, chunk_size=None
) -> tuple[sp.csr_matrix, dict]:
    """:func:`scclip.api.map_modality` chunk by chunk: (CSR cells x model features, coverage report).

    The result (on the model's features) is in memory; the raw matrix is read one chunk at a time.
    """
    chunks = MappedChunks(data, features, mod=mod, genome=genome, chunk_size=chunk_size)
    X = sp.vstack([m for _, _, m in chunks], format="csr", dtype=np.float32)
    X.sort_indices()
    return X, chunks.report


def preprocess_chunk(model, X: sp.csr_matrix, mod: str, looks_normalized: bool) -> sp.csr_matrix:
    """The model's preprocessing of mapped counts, cell by cell (see :func:`scclip.api.preprocess_modality`)."""
    if mod == "rna":
        return X if looks_normalized else normalize_rna(X)
    return binarize(X) if model.preprocessing["atac"]["method"] == "binary" else tfidf(X, model.idf)


def preprocessing_info(model, mod: str, stats: ValueStats) -> dict:
    """The record :func:`scclip.preprocess.prepare_rna` / ``prepare_atac`` return, from all chunks' stats."""
    normalized, reason = stats.decision()
    if mod == "rna":
        return rna_preprocessing_info(normalized, reason)
    method = model.preprocessing["atac"]["method"]
    info = {"method": method, "input": reason}
    if normalized and "negative" in reason:
        info["warning"] = f"ATAC input {reason}: expected counts"
    if method == "tfidf":
        info["idf"] = np.asarray(model.idf, dtype=np.float32)
    return info


def embed_modality(
    model,
    data: Modality,
    mod: str,
    *,
    genome: str | None = None,
    chunk_size=None,
    batch_size: int = 1024,
    device=None,
) -> tuple[np.ndarray, dict]:
    """Map, preprocess and encode one modality chunk by chunk: (embeddings, report of
    :func:`scclip.api.prepare_modality`).

    Whether RNA input already looks normalised is decided on the first chunk and checked on all cells at
    the end; in the rare case the answer changes, the cells are encoded again with the answer for all cells.
    """
    if mod == "atac" and model.preprocessing["atac"]["method"] == "tfidf" and model.idf is None:
        msg = "the model uses TF-IDF ATAC but stores no idf: re-save it with its training idf, or embed in memory"
        raise ScclipError(msg)
    chunks = MappedChunks(data, model.feature_space[mod], mod=mod, genome=genome, chunk_size=chunk_size)
    out = np.empty((data.n_obs, model.embed_dim), dtype=np.float32)

    def encode(looks_normalized: bool | None) -> bool:
        for lo, hi, mapped in chunks:
            if looks_normalized is None:
                looks_normalized = chunks.stats.decision()[0]
            X = preprocess_chunk(model, mapped, mod, looks_normalized)
            out[lo:hi] = model.encode(mod, X, counts=mapped, batch_size=batch_size, device=device)
        return bool(looks_normalized)

    used = encode(None)
    if mod == "rna" and chunks.stats.decision()[0] != used:
        why = chunks.stats.decision()[1]
        logger.info("rna: all cells (%s) disagree with the first chunk on normalisation; encoding again", why)
        encode(not used)
    return out, {**chunks.report, "preprocessing": preprocessing_info(model, mod, chunks.stats)}
