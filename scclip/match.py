"""Cross-modal matching in a joint embedding: nearest partners, match tables, one-to-one pairing, label transfer.

All similarities are cosine and computed block-wise (see :mod:`scclip.metrics`): memory stays
``O(n_ref x chunk_size)``, never ``n x m``, except for the exact Hungarian assignment, which needs the dense cost
matrix and is therefore limited to moderate sizes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scclip.errors import ScclipError
from scclip.metrics import (
    as_embedding,
    auto_chunk,
    knn_vote,
    pair_embeddings,
    paired_pass,
    prepare_metric,
    topk_chunked,
)

#: Largest ``n_rna x n_atac`` for which ``method="auto"`` uses the exact Hungarian assignment (10,000 x 10,000).
HUNGARIAN_MAX_PAIRS = 10_000 * 10_000
_ONE_TO_ONE_METHODS = ("auto", "hungarian", "sinkhorn", "greedy")


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        msg = f"device {device!r} is not a torch device; use 'cpu' or 'cuda'."
        raise ScclipError(msg) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = "device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu'."
        raise ScclipError(msg)
    return dev


def topk_partners(
    query,
    ref,
    *,
    k: int = 10,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    candidate_bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar ``ref`` cells for every ``query`` cell.

    Parameters
    ----------
    query, ref
        ``(n, d)`` and ``(m, d)`` embeddings.
    k
        Partners per query cell (capped at ``m``).
    chunk_size
        Query rows scored per block; memory is ``O(m x chunk_size)``. Default: a block of about 128 MB.
    device
        ``"cpu"`` or a CUDA device: the reference is moved there once and the blocks are scored there.
    candidate_bias
        ``(m,)`` scores added to the similarity of each ``ref`` cell before ranking (the Sinkhorn
        normalisation of :func:`sinkhorn_bias`); the similarities returned stay the cosine.

    Returns
    -------
    ``(indices, similarities)``: ``(n, k)`` int64 positions into ``ref`` and float32 cosine similarities, best first.
    """
    q, r = pair_embeddings(query, ref, paired=False)
    if int(k) < 1:
        msg = f"k must be a positive integer, got {k}."
        raise ScclipError(msg)
    kk = min(int(k), r.shape[0])
    dev = _device(device)
    q, r = prepare_metric(q, "cosine"), prepare_metric(r, "cosine")
    if candidate_bias is None:
        idx, sim = topk_chunked(q, r, kk, chunk_size=chunk_size, device=dev)
        return idx.numpy(), sim.numpy()
    qb, rb = _biased(q, r, candidate_bias)
    idx, _ = topk_chunked(qb, rb, kk, chunk_size=chunk_size, device=dev)
    return idx.numpy(), (q[:, None, :] * r[idx]).sum(-1).numpy()


def _biased(q: torch.Tensor, r: torch.Tensor, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """``[q, 1]`` and ``[r, bias]``: their dot products are the cosine plus the candidate's bias."""
    b = torch.as_tensor(np.asarray(bias, dtype=np.float32)).reshape(-1, 1)
    if b.shape[0] != r.shape[0]:
        msg = f"candidate_bias has {b.shape[0]} values for {r.shape[0]} candidate cells; give one per cell."
        raise ScclipError(msg)
    return torch.cat([q, torch.ones(q.shape[0], 1)], 1), torch.cat([r, b], 1)


def _names(names, n: int, what: str) -> np.ndarray:
    if names is None:
        return np.arange(n).astype(str).astype(object)
    arr = np.asarray(names, dtype=object).ravel()
    if arr.shape[0] != n:
        msg = f"{what} has {arr.shape[0]} entries but the embedding has {n} rows; give one name per cell."
        raise ScclipError(msg)
    return arr


def match_paired(
    rna_emb,
    atac_emb,
    *,
    k: int = 10,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    candidate_bias: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Top-``k`` partners of every paired cell in both directions, and where its true partner ranks.

    One block-wise pass per direction yields the partners, the true partner's rank and FOSCTTM together
    (the cheapest way to match and score a large paired data set; row ``i`` of both inputs is one cell).
    ``candidate_bias = (rna_bias, atac_bias)`` ranks candidates by cosine + bias (:func:`sinkhorn_bias`); the
    similarities returned stay the cosine.

    Returns
    -------
    ``{"rna_to_atac": d, "atac_to_rna": d, "foscttm": {"rna_to_atac", "atac_to_rna", "mean"}}`` where each ``d``
    holds ``indices`` ``(n, k)`` int64, ``similarities`` ``(n, k)`` float32 (cosine, best first),
    ``true_partner_rank`` ``(n,)`` (1 + other cells strictly more similar than the partner) and ``foscttm``
    ``(n,)`` (per cell; exact ties count half).
    """
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=True)
    if int(k) < 1:
        msg = f"k must be a positive integer, got {k}."
        raise ScclipError(msg)
    kk, n, dev = min(int(k), rna.shape[0]), rna.shape[0], _device(device)
    q, r = prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine")
    out = {}
    for j, (name, a, b) in enumerate((("rna_to_atac", q, r), ("atac_to_rna", r, q))):
        if candidate_bias is None:
            st = paired_pass(a, b, chunk_size=chunk_size, topk=kk, device=dev)
            sims = st["top_score"]
        else:
            st = paired_pass(*_biased(a, b, candidate_bias[1 - j]), chunk_size=chunk_size, topk=kk, device=dev)
            sims = (a[:, None, :] * b[torch.from_numpy(st["top_idx"])]).sum(-1).numpy()
        out[name] = {
            "indices": st["top_idx"],
            "similarities": sims,
            "true_partner_rank": st["greater"].astype(np.int64) + 1,
            "foscttm": (st["greater"] + 0.5 * st["ties"]) / (n - 1),
        }
    f1, f2 = (float(out[d]["foscttm"].mean()) for d in ("rna_to_atac", "atac_to_rna"))
    out["foscttm"] = {"rna_to_atac": f1, "atac_to_rna": f2, "mean": (f1 + f2) / 2}
    return out


def match_table(
    rna_emb,
    atac_emb,
    *,
    rna_names=None,
    atac_names=None,
    k: int = 10,
    paired: bool,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    sinkhorn: bool = False,
) -> pd.DataFrame:
    """Top-``k`` cross-modal partners of every cell, both directions stacked.

    ``sinkhorn`` ranks the partners by the matching-time Sinkhorn plan (:func:`sinkhorn_bias`) instead of the
    plain cosine, which damps hub cells; ``similarity`` stays the cosine.

    Returns
    -------
    DataFrame with columns ``cell``, ``modality`` (the query cell's modality, ``"rna"`` or ``"atac"``),
    ``partner`` (a cell of the other modality), ``rank`` (1..k) and ``similarity`` (cosine); when ``paired``
    (row ``i`` of both embeddings is the same cell) also ``true_partner_rank``: 1 + the number of other-modality
    cells strictly more similar to the query than its true partner (1 = the partner is the best match).
    """
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=paired)
    rn = _names(rna_names, rna.shape[0], "rna_names")
    an = _names(atac_names, atac.shape[0], "atac_names")
    bias = sinkhorn_bias(rna, atac, chunk_size=chunk_size) if sinkhorn else None
    kw = {"chunk_size": chunk_size, "device": device}
    both = match_paired(rna, atac, k=k, candidate_bias=bias, **kw) if paired else None
    parts = []
    for j, (mod, q, r, qn, rnames) in enumerate((("rna", rna, atac, rn, an), ("atac", atac, rna, an, rn))):
        if both is not None:
            res = both["rna_to_atac" if mod == "rna" else "atac_to_rna"]
            idx, sim = res["indices"], res["similarities"]
        else:
            idx, sim = topk_partners(q, r, k=k, candidate_bias=None if bias is None else bias[1 - j], **kw)
        kk = idx.shape[1]
        df = pd.DataFrame(
            {
                "cell": np.repeat(qn, kk),
                "modality": mod,
                "partner": rnames[idx.ravel()],
                "rank": np.tile(np.arange(1, kk + 1), q.shape[0]),
                "similarity": sim.ravel(),
            }
        )
        if both is not None:
            df["true_partner_rank"] = np.repeat(res["true_partner_rank"], kk)
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out["modality"] = pd.Categorical(out["modality"], categories=["rna", "atac"])
    return out


# --------------------------------------------------------------------------- one-to-one assignment
def _hungarian(q: torch.Tensor, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    cost = (1.0 - q @ r.T).double().numpy()
    return linear_sum_assignment(cost)


def _augment(x: torch.Tensor, scale: float, bias: np.ndarray | None) -> torch.Tensor:
    """Append a column so that ``[s * q, 1] . [r, g] = s * (q . r) + g``."""
    if bias is None:
        return x * scale
    return torch.cat([x * scale, torch.from_numpy(bias.astype(np.float32)).unsqueeze(1)], dim=1)


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
            _augment(q[rows], scale, None if cb is None else np.ones(rows.size)),
            _augment(r[cols], 1.0, cb),
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


def _sinkhorn_potentials(
    q: torch.Tensor, r: torch.Tensor, *, eps: float, n_iter: int, tol: float, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Log-domain Sinkhorn with uniform marginals on ``exp(cos / eps)``, computed block-wise.

    Returns the potentials ``(f, g)`` of the plan ``P_ij = exp(cos_ij / eps + f_i + g_j)``.
    """
    n, m = q.shape[0], r.shape[0]
    f, g = np.zeros(n), np.zeros(m)

    def half(a: torch.Tensor, b: torch.Tensor, pot: np.ndarray, log_mass: float) -> np.ndarray:
        c = auto_chunk(b.shape[0], chunk_size)
        bt = _augment(b, 1.0, pot).T.contiguous()
        new = np.empty(a.shape[0])
        ones = torch.ones(min(c, a.shape[0]), 1)
        for i0 in range(0, a.shape[0], c):
            blk = torch.cat([a[i0 : i0 + c] / eps, ones[: min(c, a.shape[0] - i0)]], dim=1) @ bt
            new[i0 : i0 + c] = log_mass - torch.logsumexp(blk, dim=1).double().numpy()
        return new

    for _it in range(n_iter):
        f_new = half(q, r, g, -np.log(n))
        g = half(r, q, f_new, -np.log(m))
        # Row marginals before this f update were exp(f - f_new) / n: stop once they are within tol of uniform.
        done = np.max(np.abs(np.expm1(f - f_new))) < tol
        f = f_new
        if done:
            break
    return f, g


def sinkhorn_bias(
    rna_emb, atac_emb, *, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-4, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Matching-time Sinkhorn normalisation (as in MatchCLOT): per-cell biases ``(rna_bias, atac_bias)``.

    The entropic transport plan ``P_ij = exp(cos_ij / eps + f_i + g_j)`` with uniform marginals makes the
    similarity matrix doubly stochastic, which damps hub cells that are everyone's nearest neighbour. Ranking
    the ATAC candidates of RNA cell ``i`` by ``P_ij`` is ranking them by ``cos_ij + eps * g_j``, and the RNA
    candidates of ATAC cell ``j`` by ``cos_ij + eps * f_i``: the biases are ``eps * f`` and ``eps * g``, for
    :func:`scclip.metrics.paired_metrics` (``candidate_bias``). Block-wise: ``O(m x chunk)`` memory.
    """
    if not eps > 0:
        msg = f"sinkhorn eps must be > 0, got {eps}."
        raise ScclipError(msg)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=False)
    q, r = prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine")
    f, g = _sinkhorn_potentials(q, r, eps=eps, n_iter=n_iter, tol=tol, chunk_size=chunk_size)
    return eps * f, eps * g


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
    rn = _names(rna_names, rna.shape[0], "rna_names")
    an = _names(atac_names, atac.shape[0], "atac_names")
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
        f, g = _sinkhorn_potentials(
            q, r, eps=sinkhorn_eps, n_iter=sinkhorn_iter, tol=1e-3, chunk_size=chunk_size
        )
        ii, jj = _greedy(q, r, k=k, chunk_size=chunk_size, scale=1.0 / sinkhorn_eps, row_bias=f, col_bias=g)
    ii, jj = np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)
    sim = (q[torch.from_numpy(ii)] * r[torch.from_numpy(jj)]).sum(1).numpy()
    out = pd.DataFrame({"rna": rn[ii], "atac": an[jj], "rna_index": ii, "atac_index": jj, "similarity": sim})
    out.attrs["method"] = method
    return out


def transfer_labels(
    ref_emb, ref_labels, query_emb, *, k: int = 15, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Label query cells by majority vote of their ``k`` nearest (cosine) reference cells.

    Returns
    -------
    ``(labels, confidence)``: the winning label per query cell (ties go to the label of the nearest neighbour
    among the tied ones) and its vote share in ``(0, 1]``. Reference cells with missing labels are ignored.
    """
    as_embedding(query_emb, name="query_emb")
    return knn_vote(ref_emb, ref_labels, query_emb, k=k, chunk_size=chunk_size)
