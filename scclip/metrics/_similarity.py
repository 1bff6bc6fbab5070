"""Similarity kernels of the cross-modal metrics, computed chunk-wise.

Every function takes embeddings as ``(n, d)`` float arrays (numpy or torch); for the paired metrics row ``i`` of
``rna_emb`` and row ``i`` of ``atac_emb`` are the same cell. Similarities are cosine by default (the inputs are
L2-normalised inside) or negative Euclidean distance (``metric="euclidean"``). Nothing ever holds an ``n x m``
matrix: rows of one modality are scored against all of the other in blocks of ``chunk_size`` rows, so memory is
``O(m x chunk_size)`` (two float32 buffers; the default chunk keeps each buffer near 128 MB).

Conventions (those of the project's reference figures):

- FOSCTTM and top-k count ties at random *in expectation*: a candidate exactly as similar as the true partner
  counts half towards FOSCTTM, and the chance that the partner lands in the top ``k`` is averaged over every
  order of the tied candidates.
- ``mean`` is the average of the two directions (RNA -> ATAC and ATAC -> RNA).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from scclip.errors import ScclipError

_BUFFER_ELEMENTS = 2**25  # float32 elements per scoring buffer (128 MB)
_METRICS = ("cosine", "euclidean")


# --------------------------------------------------------------------------- inputs and scoring kernels
def as_embedding(x, *, name: str = "embedding") -> torch.Tensor:
    """Return ``x`` as a contiguous 2-D float32 CPU tensor, raising :class:`ScclipError` on bad input."""
    if hasattr(x, "tocsr") or hasattr(x, "toarray"):
        msg = f"{name} is a sparse matrix; embeddings must be dense (n_cells, n_dims) arrays, e.g. obsm['X_scclip']."
        raise ScclipError(msg)
    try:
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    except (TypeError, ValueError) as err:
        msg = f"{name} must be a numeric (n_cells, n_dims) array ({err})."
        raise ScclipError(msg) from err
    if t.ndim != 2:
        msg = f"{name} must be a 2-D (n_cells, n_dims) array, got shape {tuple(t.shape)}."
        raise ScclipError(msg)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        msg = f"{name} must hold numbers, got dtype {t.dtype}."
        raise ScclipError(msg)
    t = t.to(torch.float32).contiguous()
    if t.shape[0] == 0 or t.shape[1] == 0:
        msg = f"{name} is empty (shape {tuple(t.shape)}); it needs at least one cell and one dimension."
        raise ScclipError(msg)
    if not bool(torch.isfinite(t).all()):
        msg = f"{name} contains NaN or infinite values; re-embed the cells or drop those rows."
        raise ScclipError(msg)
    return t


def check_metric(metric: str) -> None:
    if metric not in _METRICS:
        msg = f"metric must be one of {_METRICS}, got {metric!r}."
        raise ScclipError(msg)


def prepare_metric(x: torch.Tensor, metric: str) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x


def pair_embeddings(rna_emb, atac_emb, *, paired: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rna = as_embedding(rna_emb, name="rna_emb")
    atac = as_embedding(atac_emb, name="atac_emb")
    if rna.shape[1] != atac.shape[1]:
        msg = f"rna_emb has {rna.shape[1]} dimensions but atac_emb has {atac.shape[1]}; both modalities must be embedded in the same space."
        raise ScclipError(msg)
    if paired and rna.shape[0] != atac.shape[0]:
        msg = (
            f"paired metrics need one row per cell in both modalities (row i = the same cell), got {rna.shape[0]} "
            f"RNA and {atac.shape[0]} ATAC rows; subset both to the shared cells in the same order."
        )
        raise ScclipError(msg)
    if paired and rna.shape[0] < 2:
        msg = "paired metrics need at least 2 cells."
        raise ScclipError(msg)
    return rna, atac


def auto_chunk(n_ref: int, chunk_size: int | None) -> int:
    """Rows per block: ``chunk_size`` if given, else as many as keep one ``rows x n_ref`` buffer near 128 MB."""
    if chunk_size is None:
        return int(min(4096, max(16, _BUFFER_ELEMENTS // max(n_ref, 1))))
    if int(chunk_size) < 1:
        msg = f"chunk_size must be a positive number of rows, got {chunk_size}."
        raise ScclipError(msg)
    return int(chunk_size)


def _score_block(
    q: torch.Tensor, ref_t: torch.Tensor, ref_bias: torch.Tensor | None, out: torch.Tensor
) -> None:
    """Fill ``out`` with similarity scores (higher = closer) of rows ``q`` against every reference row.

    ``ref_t`` is the transposed reference ``(d, m)``. For the Euclidean metric ``ref_bias`` is ``-|r|^2`` and the
    score ``2 q.r - |r|^2`` orders each row exactly as ``-|q - r|^2`` does.
    """
    if ref_bias is None:
        torch.mm(q, ref_t, out=out)
    else:
        torch.addmm(ref_bias, q, ref_t, alpha=2.0, out=out)


def _ref_bias(ref: torch.Tensor, metric: str) -> torch.Tensor | None:
    return None if metric == "cosine" else -(ref * ref).sum(1, keepdim=True).T.contiguous()


def topk_chunked(
    query: torch.Tensor,
    ref: torch.Tensor,
    k: int,
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    self_index: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` most similar ``ref`` rows for each ``query`` row, block by block.

    ``query`` and ``ref`` must already be prepared (normalised for cosine). ``self_index[i]`` (>= 0) names a
    ``ref`` row that query ``i`` may not pick (itself). Returns CPU ``(indices int64, scores float32)``, best first.
    """
    dev = torch.device(device)
    n, m = query.shape[0], ref.shape[0]
    c = auto_chunk(m, chunk_size)
    ref_d = ref.to(dev)
    ref_t = ref_d.T
    bias = _ref_bias(ref_d, metric)
    buf = torch.empty((min(c, n), m), dtype=torch.float32, device=dev)
    idx = torch.empty((n, k), dtype=torch.int64)
    val = torch.empty((n, k), dtype=torch.float32)
    for i0 in range(0, n, c):
        i1 = min(n, i0 + c)
        s = buf[: i1 - i0]
        _score_block(query[i0:i1].to(dev), ref_t, bias, s)
        if self_index is not None:
            rows = np.flatnonzero(self_index[i0:i1] >= 0)
            s[torch.from_numpy(rows).to(dev), torch.from_numpy(self_index[i0:i1][rows]).to(dev)] = -torch.inf
        v, j = torch.topk(s, k, dim=1)
        idx[i0:i1], val[i0:i1] = j.cpu(), v.cpu()
    return idx, val


def paired_pass(
    query: torch.Tensor,
    ref: torch.Tensor,
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    ties: bool = True,
    temperatures: Sequence[float] = (),
    topk: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """One direction of the paired statistics: for each query row ``i`` (true partner ``ref[i]``).

    Returns ``sign_sum`` (candidates more similar than the partner minus those less similar), with ``ties``
    also ``greater`` (other candidates strictly more similar) and ``ties`` (other candidates exactly as
    similar); per temperature ``T``, ``log_p_T`` (log of the partner's row-softmax mass of ``score / T``); with
    ``topk > 0``, ``top_idx`` / ``top_score`` (each row's best ``topk`` candidates) from the same pass.

    The partner's own score is read from the same matrix product as the candidates', so ties are exact. Two
    ``chunk x m`` float32 buffers are reused; the counts come from the sums of ``sign(s - s_ii)`` and of its
    absolute value (two cheap reductions, exact below 2**24 candidates, float64 beyond).
    """
    dev = torch.device(device)
    n, m = query.shape[0], ref.shape[0]
    c = auto_chunk(m, chunk_size)
    ref = ref.to(dev)
    ref_t = ref.T
    bias = _ref_bias(ref, metric)
    rows = min(c, n)
    s_buf = torch.empty((rows, m), dtype=torch.float32, device=dev)
    b_buf = torch.empty((rows, m), dtype=torch.float32, device=dev)
    acc = torch.float64 if m > 2**24 else torch.float32
    sgn = np.empty(n, dtype=np.float64)
    absum = np.empty(n, dtype=np.float64) if ties else None
    log_p = {t: np.empty(n, dtype=np.float64) for t in temperatures}
    top_idx = torch.empty((n, topk), dtype=torch.int64)
    top_val = torch.empty((n, topk), dtype=torch.float32)
    for i0 in range(0, n, c):
        i1 = min(n, i0 + c)
        w = i1 - i0
        s, b = s_buf[:w], b_buf[:w]
        _score_block(query[i0:i1].to(dev), ref_t, bias, s)
        diag = s[torch.arange(w, device=dev), torch.arange(i0, i1, device=dev)].clone().unsqueeze(1)
        if topk:
            v, j = torch.topk(s, topk, dim=1)
            top_idx[i0:i1], top_val[i0:i1] = j.cpu(), v.cpu()
        for t in temperatures:
            torch.div(s, t, out=b)
            log_p[t][i0:i1] = (diag[:, 0] / t - torch.logsumexp(b, dim=1)).double().cpu().numpy()
        torch.sub(s, diag, out=b)
        b.sign_()
        sgn[i0:i1] = b.sum(1, dtype=acc).double().cpu().numpy()
        if ties:
            b.abs_()
            absum[i0:i1] = b.sum(1, dtype=acc).double().cpu().numpy()
    # The partner itself has sign 0, so it adds nothing to either sum.
    out = {"sign_sum": np.rint(sgn)}
    if ties:
        out.update(greater=np.rint((sgn + absum) / 2), ties=np.rint((m - 1) - absum))
    out.update({f"log_p_{t}": v for t, v in log_p.items()})
    if topk:
        out.update(top_idx=top_idx.numpy(), top_score=top_val.numpy())
    return out
