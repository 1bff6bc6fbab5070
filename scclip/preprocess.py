"""Row-wise preprocessing of RNA and ATAC count matrices (CSR in, CSR out, never densified).

Every function works cell by cell (except :func:`tfidf_fit`, which sums over cells), so it can be applied to
any row subset or to one batch at a time and gives the same rows as on the whole matrix.

* RNA: ``normalize_total(target_sum=1e4)`` then ``log1p`` (:func:`normalize_rna`), skipped by
  :func:`prepare_rna` when the input already looks normalised (:func:`looks_normalized`).
* ATAC: binarisation (:func:`binarize`) or TF-IDF ``log1p(tf * idf * scale)`` with ``tf`` the counts divided by
  the cell's total and ``idf = n_cells / counts of the feature`` (:func:`tfidf_fit`, :func:`tfidf`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scclip.errors import ScclipError

__all__ = [
    "ValueStats",
    "binarize",
    "diagnose",
    "looks_normalized",
    "normalize_rna",
    "prepare_atac",
    "prepare_rna",
    "tfidf",
    "tfidf_fit",
]

_LOG_MAX = 20.0  # log1p of any realistic normalised count is below this (log1p(1e6) ~ 13.8)
_ATAC_METHODS = ("binary", "tfidf")


def _csr(X) -> sp.csr_matrix:
    """``X`` as float32 CSR, sharing memory where possible (dense input, e.g. one batch, becomes sparse)."""
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim != 2:
        msg = f"Expected a 2-d cells x features matrix, got shape {arr.shape}."
        raise ScclipError(msg)
    return sp.csr_matrix(arr)


def _row_scale(X: sp.csr_matrix, factor: np.ndarray) -> sp.csr_matrix:
    """Multiply each row by ``factor`` (returns a new matrix)."""
    out = X.copy()
    out.data = out.data * np.repeat(factor.astype(np.float32), np.diff(out.indptr))
    return out


def _row_sums(X: sp.csr_matrix) -> np.ndarray:
    return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()


def normalize_rna(X, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """Scale each cell to ``target_sum`` total counts, then ``log1p`` (scanpy ``normalize_total`` + ``log1p``).

    Cells with no counts stay all-zero. Returns float32 CSR.
    """
    X = _csr(X)
    totals = _row_sums(X)
    factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = _row_scale(X, factor)
    np.log1p(out.data, out=out.data)
    return out


class ValueStats:
    """What :func:`diagnose` looks at in stored values, added up over row blocks (:meth:`add`); :meth:`decision`
    is the answer for all blocks stacked. :func:`diagnose` is one block; :class:`scclip.api.MappedChunks` adds file chunks."""

    def __init__(self) -> None:
        self.size, self.finite, self.integer = 0, True, True
        self.min, self.max = np.inf, -np.inf
        self.n_totals, self.first_total = 0, None
        self.total_min, self.total_max = np.inf, -np.inf

    def add(self, X: sp.csr_matrix) -> None:
        data = X.data
        if data.size:
            self.size += data.size
            self.finite &= bool(np.isfinite(data).all())
            self.min, self.max = min(self.min, float(data.min())), max(self.max, float(data.max()))
            self.integer &= bool(np.allclose(data, np.round(data), atol=1e-4))
        totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
        totals = totals[totals > 0]
        if totals.size:
            self.first_total = totals[0] if self.first_total is None else self.first_total
            self.n_totals += totals.size
            self.total_min, self.total_max = (
                min(self.total_min, totals.min()),
                max(self.total_max, totals.max()),
            )

    def decision(self) -> tuple[bool, str]:
        """``(looks normalised, why)`` from the values added so far."""
        if self.size == 0:
            return False, "no non-zero values"
        if not self.finite:
            return True, "contains NaN or infinite values"
        if self.min < 0:
            return True, "has negative values (scaled / centred data)"
        if self.integer:
            return False, "integer values (raw counts)"
        if self.max <= _LOG_MAX:
            return True, f"non-integer values with maximum {self.max:.3g} (log-scale)"
        if self.n_totals > 1 and self.total_max - self.total_min <= 1e-3 * self.total_max:
            why = f"non-integer values and every cell sums to {self.first_total:.4g} (normalised, not logged)"
            return True, why
        return False, "non-integer values on a count scale (e.g. ambient-corrected counts)"


def _diagnose(X) -> tuple[bool, str]:
    """(looks normalised, why) from the stored values of ``X``."""
    stats = ValueStats()
    stats.add(_csr(X))
    return stats.decision()


def diagnose(X) -> tuple[bool, str]:
    """``(looks normalised, why)``: what :func:`prepare_rna` will see in ``X`` (see :func:`looks_normalized`)."""
    return _diagnose(X)


def looks_normalized(X) -> bool:
    """Whether ``X`` already looks normalised rather than raw counts.

    Normalised: negative values (scaled data), non-integer values with a log-scale maximum (<= 20), or
    non-integer values whose cells all have the same total. Integer values, and non-integer values on a count
    scale with varying totals (e.g. ambient-corrected counts), count as raw.
    """
    return _diagnose(X)[0]


def prepare_rna(X, *, target_sum: float = 1e4) -> tuple[sp.csr_matrix, dict]:
    """Normalise raw RNA counts (:func:`normalize_rna`) unless they already look normalised.

    Returns
    -------
    The float32 CSR matrix and a dict: ``normalized`` (whether this call normalised), ``reason`` (what the
    input looked like) and, for suspicious input, ``warning``.
    """
    normalized, reason = _diagnose(X)
    info = rna_preprocessing_info(normalized, reason, target_sum=target_sum)
    if normalized:
        return _csr(X), info
    return normalize_rna(X, target_sum=target_sum), info


def rna_preprocessing_info(looks_normalized: bool, reason: str, *, target_sum: float = 1e4) -> dict:
    """The record :func:`prepare_rna` returns for input diagnosed as ``(looks_normalized, reason)``."""
    info: dict = {"normalized": not looks_normalized, "reason": reason}
    if not looks_normalized:
        info["target_sum"] = target_sum
    elif "negative" in reason or "NaN" in reason:
        info["warning"] = f"RNA input {reason}: expected raw counts or log-normalised values; used as it is"
    else:
        info["warning"] = (
            f"RNA input looks already normalised ({reason}): used as it is, not normalised again; "
            "pass raw counts for the model's own normalize_total + log1p"
        )
    return info


def binarize(X) -> sp.csr_matrix:
    """1 where ``X`` is non-zero, float32 CSR (explicit zeros dropped)."""
    out = _csr(X).copy()
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data = np.ones_like(out.data)
    return out


def tfidf_fit(X) -> np.ndarray:
    """Inverse document frequency per feature: ``n_cells / total counts of the feature`` (0 when unseen)."""
    X = _csr(X)
    totals = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
    return np.divide(X.shape[0], totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)


def tfidf(X, idf, *, scale: float = 1e4) -> sp.csr_matrix:
    """``log1p(tf * idf * scale)`` with ``tf`` = counts / cell total; float32 CSR, empty cells stay empty."""
    X = _csr(X)
    idf = np.asarray(idf, dtype=np.float32).ravel()
    if idf.shape[0] != X.shape[1]:
        msg = f"idf has {idf.shape[0]} values but the matrix has {X.shape[1]} features: use the idf fitted on these features."
        raise ScclipError(msg)
    totals = _row_sums(X)
    out = _row_scale(X, np.divide(scale, totals, out=np.zeros_like(totals), where=totals > 0))
    out.data = np.log1p(out.data * idf[out.indices])
    out.eliminate_zeros()
    return out


def prepare_atac(X, *, method: str = "binary", idf=None) -> tuple[sp.csr_matrix, dict]:
    """ATAC input for the model: ``'binary'`` (:func:`binarize`) or ``'tfidf'`` (:func:`tfidf`).

    For ``'tfidf'`` pass the ``idf`` fitted on the training cells; without it the idf is fitted on ``X``
    (returned in the dict as ``idf``) and the dict carries a note saying so.
    """
    if method not in _ATAC_METHODS:
        msg = f"Unknown ATAC preprocessing {method!r}: use one of {', '.join(_ATAC_METHODS)}."
        raise ScclipError(msg)
    transformed, reason = _diagnose(X)
    info: dict = {"method": method, "input": reason}
    if transformed and "negative" in reason:
        info["warning"] = f"ATAC input {reason}: expected counts"
    if method == "binary":
        return binarize(X), info
    if idf is None:
        idf = tfidf_fit(X)
        info["note"] = "idf fitted on this matrix; pass the training idf to transform new cells the same way"
    info["idf"] = np.asarray(idf, dtype=np.float32)
    return tfidf(X, idf), info
