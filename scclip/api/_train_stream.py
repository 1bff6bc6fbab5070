"""Out-of-core training inputs (``train(..., out_of_core=True)``): map once to an on-disk cache, stream from it.

One pass over the file (:class:`~scclip.api.MappedChunks`, ``chunk_size`` cells at a time) writes both
modalities' counts on the model's features to :class:`scclip.io.DiskCSR` caches in the run folder and keeps in
memory only what needs random access: the validation cells, a seeded sample of :data:`SVD_CELLS` training cells
(the SVD initialisation of the per-feature embedding) and of :data:`HOLDOUT_CELLS` held-out cells (scored at the
end). The same pass adds up the ATAC counts of the training cells (the idf, exactly as in memory) and the value
statistics that decide the RNA normalisation. The loop then reads the caches through
:class:`scclip.training.ChunkStream` (shuffled chunk order, preprocessing applied per load). Peak memory follows
``chunk_size``, the model and the kept cells, not the number of cells.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from scclip.api._chunked import MappedChunks, preprocess_chunk, preprocessing_info
from scclip.errors import ScclipError
from scclip.io import DiskCSR, DiskCSRWriter
from scclip.model.encode import resolve_device
from scclip.model.init import svd_init_
from scclip.pretrained import ScclipModel

#: Training cells (a seeded sample) whose SVD initialises the per-feature embedding out of core.
SVD_CELLS = 20_000
#: Held-out cells (a seeded sample) scored at the end of an out-of-core run.
HOLDOUT_CELLS = 20_000


@dataclass
class StreamedCounts:
    """What the mapping pass leaves: the caches, the reports and the rows kept in memory (``keep``, sorted)."""

    caches: dict[str, DiskCSR]
    reports: dict[str, dict]
    stats: dict
    kept: dict[str, sp.csr_matrix]
    keep: np.ndarray
    svd_rows: np.ndarray
    held_rows: np.ndarray
    atac_train_sums: np.ndarray
    n_train: int
    chunk_size: int
    folder: Path
    seconds: float
    init_seconds: float = 0.0

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where ``rows`` (all in :attr:`keep`) are in :attr:`kept`."""
        return np.searchsorted(self.keep, rows)


def _sample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, n, replace=False)) if len(rows) > n else np.asarray(rows)


def cache_counts(
    data, fs, split: dict, *, genome, chunk_size: int, folder: Path, seed: int
) -> StreamedCounts:
    """Map both modalities of ``data`` (:class:`scclip.io.BackedData`, paired cells) onto ``fs`` chunk by chunk
    into ``folder/rna`` and ``folder/atac`` (replaced), keeping the rows described in the module docstring."""
    t0 = time.perf_counter()
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng([seed, 18])
    svd_rows, held_rows = (
        _sample(split["train"], SVD_CELLS, rng),
        _sample(split["holdout"], HOLDOUT_CELLS, rng),
    )
    keep = np.unique(np.concatenate([split["val"], svd_rows, held_rows]).astype(np.int64))
    is_train = np.zeros(data["rna"].n_obs, dtype=bool)
    is_train[split["train"]] = True
    caches, reports, stats, kept = {}, {}, {}, {}
    sums = np.zeros(fs["atac"].n_features)
    for m in ("rna", "atac"):
        chunks = MappedChunks(data[m], fs[m], mod=m, genome=genome, chunk_size=chunk_size)
        writer, parts = DiskCSRWriter(folder / m, n_cols=fs[m].n_features), []
        for lo, hi, X in chunks:
            writer.append(X)
            parts.append(X[keep[(keep >= lo) & (keep < hi)] - lo])
            if m == "atac":
                sums += np.asarray(X[is_train[lo:hi]].sum(axis=0, dtype=np.float64)).ravel()
        caches[m], reports[m], stats[m] = writer.close(), chunks.report, chunks.stats
        kept[m] = sp.vstack(parts, format="csr", dtype=np.float32)
        kept[m].sort_indices()
    return StreamedCounts(
        caches, reports, stats, kept, keep, svd_rows, held_rows, sums, len(split["train"]), chunk_size, folder,
        time.perf_counter() - t0,
    )  # fmt: skip


def streamed_model(fs, mcfg, tcfg, counts: StreamedCounts, *, atac_method: str, resume: bool):
    """A seeded new model (idf from the training cells' summed counts, as :func:`scclip.preprocess.tfidf_fit`),
    the preprocessing of a load, the preprocessed kept rows and the reports; the SVD initialisation runs on
    the kept sample of training cells unless resuming. Returns (model, transform, kept, reports)."""
    prep = {"rna": {"method": "log1p", "target_sum": 1e4}, "atac": {"method": atac_method}}
    idf = None
    if atac_method == "tfidf":
        s = counts.atac_train_sums
        idf = np.divide(counts.n_train, s, out=np.zeros_like(s), where=s > 0).astype(np.float32)
    torch.manual_seed(tcfg.seed)  # seeded initial weights, as in memory
    model = ScclipModel.create(fs, mcfg, preprocessing=prep, idf=idf)
    normalized = {m: bool(counts.stats[m].decision()[0]) for m in ("rna", "atac")}

    def transform(mod: str, X: sp.csr_matrix) -> sp.csr_matrix:
        return preprocess_chunk(model, X, mod, normalized[mod])

    t0 = time.perf_counter()
    kept = {m: transform(m, counts.kept[m]) for m in ("rna", "atac")}
    if mcfg.embedding_init == "svd" and not resume:
        rows = counts.positions(counts.svd_rows)
        for m in ("rna", "atac"):
            svd_init_(model.net.encoders[m].embed, kept[m][rows], seed=tcfg.seed, skip=mcfg.svd_skip)
    counts.init_seconds = time.perf_counter() - t0
    reports = {
        m: {**counts.reports[m], "preprocessing": preprocessing_info(model, m, counts.stats[m])}
        for m in ("rna", "atac")
    }
    return model, transform, kept, reports


def fit_out_of_core(
    model, counts: StreamedCounts, split: dict, *, transform, kept, tcfg, out_dir, resume, progress
):
    """:func:`scclip.training.fit` on batches streamed from the caches (validation on the kept cells), then
    the caches are deleted. Returns (fit result, the kept (RNA, ATAC, ATAC counts), the split with the
    held-out sample's positions in them, the record for ``model.summary['out_of_core']``)."""
    from scclip.training import ChunkStream, fit

    stream = ChunkStream(
        counts.caches["rna"], counts.caches["atac"], split["train"], chunk_size=counts.chunk_size,
        seed=tcfg.seed, transform=transform,
    )  # fmt: skip
    result = fit(
        model.net, kept["rna"], kept["atac"], train_idx=split["train"], val_idx=counts.positions(split["val"]),
        cfg=tcfg, out_dir=out_dir, resume=resume, progress=progress, stream=stream,
    )  # fmt: skip
    record = {
        "chunk_size": counts.chunk_size,
        "chunks_per_load": stream.chunks_per_load,
        "cache_bytes": int(sum(c.nbytes() for c in counts.caches.values())),
        "cache_seconds": counts.seconds,
        "init_seconds": counts.init_seconds,
        "svd_cells": len(counts.svd_rows),
        "holdout_cells_scored": len(counts.held_rows),
    }
    shutil.rmtree(counts.folder, ignore_errors=True)
    matrices = (kept["rna"], kept["atac"], counts.kept["atac"])
    return result, matrices, {**split, "holdout": counts.positions(counts.held_rows)}, record


def cache_folder(out_dir, rank: int) -> Path:
    """Where an out-of-core run keeps its caches (one per rank under torchrun)."""
    return Path(out_dir) / f"stream_cache_rank{rank}"


def check_out_of_core(out_of_core: bool, chunk_size, feature_path: bool, out_dir) -> Path | None:
    """The cache folder of an out-of-core run (``None`` in memory); a clear error for options it cannot take."""
    if not out_of_core:
        return None
    if chunk_size is None:
        msg = "out-of-core training streams the cells from disk in chunks: give chunk_size (--chunk-size, e.g. 10000)"
        raise ScclipError(msg)
    if feature_path:
        msg = "the feature path (--feature-path) needs the training matrices in memory: drop it or --out-of-core"
        raise ScclipError(msg)
    return cache_folder(out_dir, int(os.environ.get("RANK", "0")))


def fit_streamed(fs, mcfg, tcfg, counts, split, *, atac_method, resume, out_dir, progress):
    """:func:`streamed_model` + :func:`fit_out_of_core` (the out-of-core twin of the in-memory fit of :func:`scclip.train`): (model, fit result, reports, (matrices and split for the summary), ``{'out_of_core': record}``)."""
    model, transform, kept, reports = streamed_model(
        fs, mcfg, tcfg, counts, atac_method=atac_method, resume=resume
    )
    model.net.to(resolve_device(tcfg.device))
    result, matrices, summary_split, record = fit_out_of_core(
        model, counts, split, transform=transform, kept=kept, tcfg=tcfg, out_dir=out_dir, resume=resume,
        progress=progress,
    )  # fmt: skip
    return model, result, reports, (matrices, summary_split), {"out_of_core": record}
