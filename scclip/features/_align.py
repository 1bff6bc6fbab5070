"""Zero-shot alignment: map any query dataset's features onto a model's feature space.

:func:`align_features` returns an :class:`Alignment` whose sparse matrix ``M`` (query features x model
features) turns a query count matrix into the model's features: ``X_model = X_query @ M``.

- RNA: genes match by id (when both sides have ids), then by exact symbol, then case-insensitively.
- ATAC: query peaks map onto model features (peaks or genome bins) by interval overlap (half-open
  ``[start, end)``). ``overlap="best"`` gives each peak to the single model feature it overlaps most (ties:
  the lower index), so counts are conserved; ``overlap="all"`` gives the count to every overlapped feature.
  Several peaks hitting one model feature are summed.
- Identical feature names (in any order) take a fast identity / permutation path.

A wrong genome is refused with :class:`~scclip.errors.GenomeMismatchError` naming the evidence: a declared
assembly that differs from the model's, peaks on chromosomes the model's assembly lacks or past its
chromosome ends, Ensembl ids of another species, or genes matching only when case is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from scclip.errors import ScclipError
from scclip.features._var_coords import var_gene_ids, var_gene_symbols, var_intervals
from scclip.genome import (
    BUNDLED_GENOMES,
    MATCH_CASEFOLD,
    MATCH_NAMES,
    check_casefold,
    check_declared_genome,
    check_ensembl_species,
    check_intervals_in_genome,
    match_genes,
)

if TYPE_CHECKING:
    from scclip.features._modality import ModalityFeatures

OVERLAP_RULES = ("best", "all")
LOW_COVERAGE = 0.1


@dataclass
class Alignment:
    """How a query's features map onto a model's features.

    Attributes
    ----------
    modality : ``"rna"`` or ``"atac"``
    matrix : CSR (n_query_features, n_model_features); ``X_model = X_query @ matrix``
    report : model_features_hit, model_features, frac_model_hit, query_features_used, query_features,
        frac_query_used, method, matched_by, warnings, unmapped_examples, ...
    """

    modality: str
    matrix: sparse.csr_matrix
    report: dict

    @property
    def n_query_features(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_model_features(self) -> int:
        return int(self.matrix.shape[1])

    def _as_csr(self, X) -> sparse.csr_matrix:
        X = getattr(X, "X", X)  # an AnnData
        if hasattr(X, "to_memory"):  # a backed sparse dataset
            X = X.to_memory()
        X = X.tocsr() if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X))
        if X.shape[1] != self.n_query_features:
            msg = (
                f"the matrix has {X.shape[1]} features but this alignment was built for "
                f"{self.n_query_features} query features; align the same dataset's var."
            )
            raise ScclipError(msg)
        return X

    def transform(self, X) -> sparse.csr_matrix:
        """Cells x model features (float32 CSR) from cells x query features (sparse, dense or AnnData)."""
        X = self._as_csr(X).astype(np.float32)
        out = sparse.csr_matrix(X @ self.matrix, dtype=np.float32)
        out.sort_indices()
        return out

    def count_coverage(self, X) -> float:
        """Fraction of the query's total counts on query features that map onto some model feature."""
        X = self._as_csr(X)
        return self.coverage_of(np.asarray(X.sum(axis=0, dtype=np.float64)).ravel())

    def coverage_of(self, col_sums) -> float:
        """:meth:`count_coverage` from the query's per-feature count totals (e.g. added up over row chunks)."""
        col_sums = np.asarray(col_sums, dtype=np.float64).ravel()
        total = col_sums.sum()
        mapped = np.diff(self.matrix.indptr) > 0
        return float(col_sums[mapped].sum() / total) if total > 0 else 0.0


# --- interval overlap ----------------------------------------------------------------------------------------

_SPAN = np.int64(1) << np.int64(
    40
)  # > any chromosome length: chromosome c occupies [c * SPAN, (c + 1) * SPAN)


def overlap_pairs(
    q_chrom, q_start, q_end, m_chrom, m_start, m_end
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All overlapping (query, model) pairs of half-open intervals and their overlap in bp.

    Vectorised: chromosomes are laid end to end on one axis, model intervals sorted by start, and for each
    query the candidate range is found with ``np.searchsorted`` on the model starts and on the running
    maximum of the model ends (so nested or overlapping model intervals are handled too).
    """
    codes, _ = pd.factorize(np.r_[np.asarray(q_chrom, dtype=str), np.asarray(m_chrom, dtype=str)])
    codes = codes.astype(np.int64) * _SPAN
    nq = len(q_chrom)
    qs, qe = codes[:nq] + np.asarray(q_start, np.int64), codes[:nq] + np.asarray(q_end, np.int64)
    ms, me = codes[nq:] + np.asarray(m_start, np.int64), codes[nq:] + np.asarray(m_end, np.int64)
    order = np.argsort(ms, kind="stable")
    ms_sorted, me_sorted = ms[order], me[order]
    lo = np.searchsorted(np.maximum.accumulate(me_sorted), qs, side="right") if len(ms) else np.zeros(nq, int)
    hi = np.searchsorted(ms_sorted, qe, side="left") if len(ms) else np.zeros(nq, int)
    counts = np.maximum(hi - lo, 0)
    q_idx = np.repeat(np.arange(nq, dtype=np.int64), counts)
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(lo, counts) + within
    ov = np.minimum(qe[q_idx], me_sorted[pos]) - np.maximum(qs[q_idx], ms_sorted[pos])
    keep = ov > 0
    return q_idx[keep], order[pos[keep]].astype(np.int64), ov[keep]


def bin_overlap_pairs(q_chrom, q_start, q_end, features: ModalityFeatures):
    """:func:`overlap_pairs` for fixed-width bins, computed arithmetically (bin = position // bin_size)."""
    bs = int(features.bin_size)
    m_chrom = features.chrom
    run_first = np.flatnonzero(np.r_[True, m_chrom[1:] != m_chrom[:-1]])
    run_len = np.diff(np.r_[run_first, len(m_chrom)])
    chroms = m_chrom[run_first]
    c = pd.Index(chroms).get_indexer(np.asarray(q_chrom, dtype=str))
    ok = c >= 0
    qi = np.flatnonzero(ok)
    c = c[ok]
    qs, qe = np.asarray(q_start, np.int64)[ok], np.asarray(q_end, np.int64)[ok]
    b0 = qs // bs
    b1 = np.minimum((qe - 1) // bs, run_len[c] - 1)
    counts = np.maximum(b1 - b0 + 1, 0)
    rep = np.repeat(np.arange(len(qi)), counts)
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    m_idx = run_first[c][rep] + b0[rep] + within
    ov = np.minimum(qe[rep], features.end[m_idx]) - np.maximum(qs[rep], features.start[m_idx])
    keep = ov > 0
    return qi[rep][keep].astype(np.int64), m_idx[keep].astype(np.int64), ov[keep]


def _is_regular_bins(features: ModalityFeatures) -> bool:
    if features.kind != "bins" or not features.bin_size or features.n_features == 0:
        return False
    chrom = features.chrom
    first = np.flatnonzero(np.r_[True, chrom[1:] != chrom[:-1]])
    if len(np.unique(chrom[first])) != len(first):
        return False
    run = np.repeat(first, np.diff(np.r_[first, len(chrom)]))
    return bool(np.array_equal(features.start, (np.arange(len(chrom)) - run) * int(features.bin_size)))


def select_pairs(q_idx, m_idx, ov, *, overlap: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply the overlap rule: ``"all"`` keeps every pair; ``"best"`` keeps, per query, the largest overlap."""
    if overlap == "all" or len(q_idx) == 0:
        return q_idx, m_idx
    order = np.lexsort((m_idx, -ov, q_idx))
    q_sorted = q_idx[order]
    first = np.r_[True, q_sorted[1:] != q_sorted[:-1]]
    return q_sorted[first], m_idx[order][first]


# --- alignment -----------------------------------------------------------------------------------------------


def _permutation(q_names: np.ndarray, m_names: np.ndarray) -> np.ndarray | None:
    if len(q_names) == len(m_names) and np.array_equal(q_names, m_names):
        return np.arange(len(m_names), dtype=np.int64)
    q, m = pd.Index(q_names), pd.Index(m_names)
    if len(q) == len(m) and q.is_unique and m.is_unique:
        perm = m.get_indexer(q)
        if (perm >= 0).all():
            return perm.astype(np.int64)
    return None


def _align_genes(adata, features: ModalityFeatures, warnings: list[str]):
    ids, symbols = var_gene_ids(adata), var_gene_symbols(adata)
    check_ensembl_species(ids, features.genome)
    idx, how = match_genes(ids, symbols, features.ids, features.names)
    check_casefold(how, features.genome, examples=symbols[how == MATCH_CASEFOLD])
    rows = np.flatnonzero(idx >= 0)
    matched_by = {name: int((how == code).sum()) for code, name in MATCH_NAMES.items() if (how == code).any()}
    if matched_by.get("symbol_casefold"):
        warnings.append(f"{matched_by['symbol_casefold']} genes matched only case-insensitively.")
    method = max(matched_by, key=matched_by.get) if matched_by else "symbol"
    return rows, idx[rows], method, matched_by, {}


def _align_intervals(adata, features: ModalityFeatures, warnings: list[str], overlap: str):
    q_chrom, q_start, q_end, source = var_intervals(adata)
    if features.genome in BUNDLED_GENOMES:
        warnings += check_intervals_in_genome(q_chrom, q_start, q_end, features.genome)
    if _is_regular_bins(features):
        q_idx, m_idx, ov = bin_overlap_pairs(q_chrom, q_start, q_end, features)
    else:
        q_idx, m_idx, ov = overlap_pairs(
            q_chrom, q_start, q_end, features.chrom, features.start, features.end
        )
    rows, cols = select_pairs(q_idx, m_idx, ov, overlap=overlap)
    matched_by = {"overlap": int(np.count_nonzero(np.bincount(rows, minlength=len(q_chrom))))}
    extra = {
        "query_coordinates": source,
        "query_features_multi_hit": int((np.bincount(q_idx, minlength=len(q_chrom)) > 1).sum()),
    }
    return rows, cols, "overlap", matched_by, extra


def _check_gene_species(q_names: np.ndarray, genome: str | None) -> None:
    """When no gene maps: raise GenomeMismatchError if the symbols belong to the other bundled assembly."""
    from scclip.errors import GenomeMismatchError
    from scclip.genome import gene_table, genome_alias

    own = genome_alias(genome) if genome else None
    other = {"mm10": "hg38", "hg38": "mm10"}.get(own or "")
    if other is None:
        return
    names = pd.Index(q_names)
    n_own = int(names.isin(gene_table(own)["gene_name"]).sum())
    n_other = int(names.isin(gene_table(other)["gene_name"]).sum())
    if n_other >= max(3 * n_own, 0.3 * len(names), 1):
        species = {"mm10": "mouse", "hg38": "human"}
        msg = (
            f"genome mismatch: {n_other} of {len(names)} gene names are {species[other]} ({other}) genes but "
            f"only {n_own} are {species[own]} ({own}) genes, the model's genome (e.g. {names[:3].tolist()}). "
            f"Use a {species[other]} model, or check the species of the data."
        )
        raise GenomeMismatchError(msg)


def align_features(
    adata, features: ModalityFeatures, *, genome: str | None = None, overlap: str = "best"
) -> Alignment:
    """Map a query AnnData's features (var) onto a model's features (zero-shot).

    Parameters
    ----------
    adata
        Query data (only ``var``, ``var_names`` and ``uns`` are read; backed AnnData is fine).
    features
        The model's :class:`~scclip.features.ModalityFeatures` for this modality (``features.genome`` is the
        model's assembly).
    genome
        The query's assembly as the user declares it (``"GRCh38"``, ``"mm10"``, ...); it must agree with the
        model's, like ``adata.uns['genome']`` and a 10x ``var['genome']`` column.
    overlap
        ATAC rule for a peak overlapping several model features: ``"best"`` or ``"all"``.

    Returns
    -------
    :class:`Alignment`; raises :class:`~scclip.errors.ScclipError` when nothing maps and
    :class:`~scclip.errors.GenomeMismatchError` on evidence of a wrong genome.
    """
    if overlap not in OVERLAP_RULES:
        raise ScclipError(f"unknown overlap rule {overlap!r}; use 'best' or 'all'.")
    q_names = np.asarray(adata.var_names).astype(str)
    nq, nm = len(q_names), features.n_features
    if nq == 0:
        raise ScclipError(f"the query {features.modality} data have no features (var is empty).")
    warnings = check_declared_genome(adata, features.genome, genome=genome)
    perm = _permutation(q_names, features.names)
    if perm is not None:
        rows, cols, method, matched_by, extra = np.arange(nq), perm, "identity", {"identity": nq}, {}
    elif features.modality == "rna":
        rows, cols, method, matched_by, extra = _align_genes(adata, features, warnings)
    else:
        rows, cols, method, matched_by, extra = _align_intervals(adata, features, warnings, overlap)
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(nq, nm), dtype=np.float32
    )
    used = np.diff(matrix.indptr) > 0
    n_used, n_hit = int(used.sum()), int(np.count_nonzero(np.bincount(cols, minlength=nm)))
    if n_used == 0:
        if features.modality == "rna":
            _check_gene_species(q_names, features.genome)
        msg = (
            f"no query feature maps onto the model's {nm} {features.modality} features ({features.kind}, "
            f"genome {features.genome}); check the genome / feature names: the query has e.g. "
            f"{q_names[:3].tolist()}, the model e.g. {features.names[:3].tolist()}."
        )
        raise ScclipError(msg)
    report = {
        "modality": features.modality,
        "method": method,
        "matched_by": matched_by,
        "overlap": overlap if features.modality == "atac" else None,
        "model_kind": features.kind,
        "genome": features.genome,
        "query_features": nq,
        "query_features_used": n_used,
        "frac_query_used": n_used / nq,
        "model_features": nm,
        "model_features_hit": n_hit,
        "frac_model_hit": n_hit / nm,
        "unmapped_examples": q_names[~used][:5].tolist(),
        **extra,
        "warnings": warnings,
    }
    if n_used / nq < LOW_COVERAGE:
        warnings.append(
            f"low coverage: only {n_used} of {nq} query {features.modality} features ({n_used / nq:.1%}) map "
            "onto the model; check the genome and feature names."
        )
    if features.kind == "own" and n_hit / nm < LOW_COVERAGE:
        warnings.append(
            f"low coverage: the query reaches only {n_hit} of the model's {nm} features ({n_hit / nm:.1%}); "
            "embeddings will rest on few features."
        )
    return Alignment(modality=features.modality, matrix=matrix, report=report)
