"""One-to-one pairing of RNA and ATAC cells: exact (Hungarian), scalable greedy, or Sinkhorn then greedy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scclip.errors import ScclipError
from scclip.match._partners import cell_names
from scclip.match._sinkhorn import augment_scores, sinkhorn_potentials
from scclip.metrics import pair_embeddings, prepare_metric, topk_chunked

#: Largest ``n_rna x n_atac`` for which ``method="auto"`` uses the exact Hungarian assignment (10,000 x 10,000).
HUNGARIAN_MAX_PAIRS = 10_000 * 10_000
_ONE_TO_ONE_METHODS = ("auto", "hungarian", "sinkhorn", "greedy")


def _hungarian(q: torch.Tensor, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    cost = (1.0 - q @ r.T).double().numpy()
    return linear_sum_assignment(cost)


def _greedy(
    q: torch.Tensor,
    r: torch.Tensor,
    *,
    k: int = 10,
    chunk_size: int | None = None,
    scale: float = 1.0,
    row_bias: np.ndarray | None = None,
    col_bias: np.ndarray | None = None,
    exact_below: int = 2000,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching on ``scale * cos + row_bias + col_bias`` over each row's top-``k`` candidates.

    Candidate edges are accepted best first while both ends are free; rows left without a free candidate get a
    new round over the still-free columns (``k`` grows 4x when a round assigns under 10% of them), and once at
    most ``exact_below`` rows remain they are finished with the exact Hungarian assignment.
    """
    n, m = q.shape[0], r.shape[0]
    rb = np.zeros(n) if row_bias is None else row_bias
    row_free, col_free = np.ones(n, dtype=bool), np.ones(m, dtype=bool)
    out_i: list[int] = []
    out_j: list[int] = []
    target = min(n, m)
    while len(out_i) < target:
        rows, cols = np.flatnonzero(row_free), np.flatnonzero(col_free)
        if min(rows.size, cols.size) <= exact_below:
            if row_bias is None and col_bias is None:
                ii, jj = _hungarian(q[rows], r[cols])
            else:  # exact on the adjusted score
                from scipy.optimize import linear_sum_assignment

                score = (scale * (q[rows] @ r[cols].T)).double().numpy()
                score += rb[rows][:, None] + (0 if col_bias is None else col_bias[cols][None, :])
                ii, jj = linear_sum_assignment(-score)
            out_i += rows[ii].tolist()
            out_j += cols[jj].tolist()
            break
        kk = min(k, cols.size)
        cb = None if col_bias is None else col_bias[cols]
        idx, val = topk_chunked(
            augment_scores(q[rows], scale, None if cb is None else np.ones(rows.size)),
            augment_scores(r[cols], 1.0, cb),
            kk,
            chunk_size=chunk_size,
        )
        val = val.double().numpy() + rb[rows][:, None]
        order = np.argsort(-val.ravel(), kind="stable")
        e_rows = rows[order // kk].tolist()
        e_cols = cols[idx.numpy().ravel()[order]].tolist()
        before = len(out_i)
        for i, j in zip(e_rows, e_cols, strict=True):
            if row_free[i] and col_free[j]:
                row_free[i] = col_free[j] = False
                out_i.append(i)
                out_j.append(j)
        if len(out_i) - before < 0.1 * min(rows.size, cols.size):
            k *= 4
    order = np.argsort(out_i)
    return np.asarray(out_i)[order], np.asarray(out_j)[order]


def one_to_one(
    rna_emb,
    atac_emb,
    *,
    method: str = "auto",
    rna_names=None,
    atac_names=None,
    k: int = 10,
    sinkhorn_eps: float = 0.05,
    sinkhorn_iter: int = 5,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    """Pair RNA and ATAC cells one-to-one (``min(n_rna, n_atac)`` pairs) maximising cosine similarity.

    Methods
    -------
    ``"hungarian"``
        Exact: :func:`scipy.optimize.linear_sum_assignment` on ``1 - cosine``. Needs the dense float64 cost
        matrix. Measured on 2 busy CPU cores (64-d embeddings; random / clustered / unrelated data): 2,000
        cells 0.05-0.2 s; 5,000 cells 0.7-1.5 s; 10,000 cells 5-10 s and 0.8 GB; 20,000 cells 30-70 s and 3.2 GB.
    ``"greedy"``
        Scalable: each cell's top-``k`` candidates (block-wise, ``O(m x chunk)`` memory) are accepted best first
        while both ends are free; cells left over get further rounds over the free cells, and the last 2,000 are
        finished exactly. A 1/2-approximation of the optimum that costs little more than one top-``k`` pass:
        20,000 clustered cells 1.7 s (total similarity 99% of the optimum, but 76% instead of 87% of true pairs
        recovered), 100,000 cells 36 s.
    ``"sinkhorn"``
        Entropic optimal transport (``exp(cos / sinkhorn_eps)``, uniform marginals, block-wise log-domain
        iterations, each two full passes over all pairs), then the greedy rounding on the transport plan. It
        damps hub cells that are everyone's nearest neighbour: on the same 20,000 cells 5 iterations took 29 s
        and recovered 83% of true pairs (20 iterations: no better). Suits up to a few tens of thousands of cells.
    ``"auto"``
        ``"hungarian"`` while ``n_rna x n_atac <= 10,000 x 10,000`` (at most ~10 s), else ``"greedy"``.

    Returns
    -------
    DataFrame with ``rna`` and ``atac`` (names, or positions as strings), ``rna_index``, ``atac_index``
    (positions) and ``similarity`` (cosine), one row per pair in RNA order; ``df.attrs["method"]`` says which
    method ran.
    """
    if method not in _ONE_TO_ONE_METHODS:
        msg = f"method must be one of {_ONE_TO_ONE_METHODS}, got {method!r}."
        raise ScclipError(msg)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=False)
    rn = cell_names(rna_names, rna.shape[0], "rna_names")
    an = cell_names(atac_names, atac.shape[0], "atac_names")
    q, r = prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine")
    if method == "auto":
        method = "hungarian" if q.shape[0] * r.shape[0] <= HUNGARIAN_MAX_PAIRS else "greedy"
    if method == "hungarian":
        ii, jj = _hungarian(q, r)
    elif method == "greedy":
        ii, jj = _greedy(q, r, k=k, chunk_size=chunk_size)
    else:
        if not sinkhorn_eps > 0:
            msg = f"sinkhorn_eps must be > 0, got {sinkhorn_eps}."
            raise ScclipError(msg)
        f, g = sinkhorn_potentials(
            q, r, eps=sinkhorn_eps, n_iter=sinkhorn_iter, tol=1e-3, chunk_size=chunk_size
        )
        ii, jj = _greedy(q, r, k=k, chunk_size=chunk_size, scale=1.0 / sinkhorn_eps, row_bias=f, col_bias=g)
    ii, jj = np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)
    sim = (q[torch.from_numpy(ii)] * r[torch.from_numpy(jj)]).sum(1).numpy()
    out = pd.DataFrame({"rna": rn[ii], "atac": an[jj], "rna_index": ii, "atac_index": jj, "similarity": sim})
    out.attrs["method"] = method
    return out
