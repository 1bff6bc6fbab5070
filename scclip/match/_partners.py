"""Nearest cross-modal partners: top-k per cell, paired tables with the true partner's rank, label transfer.

All similarities are cosine and computed block-wise (see :mod:`scclip.metrics`): memory stays
``O(n_ref x chunk_size)``, never ``n x m``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scclip.errors import ScclipError
from scclip.match._sinkhorn import sinkhorn_bias
from scclip.metrics import (
    as_embedding,
    knn_vote,
    pair_embeddings,
    paired_pass,
    prepare_metric,
    resolve_search,
    topk_chunked,
    topk_ivf,
)


def device_of(device: str | torch.device) -> torch.device:
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
    search: str = "exact",
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
    search
        ``"exact"`` (every pair scored), ``"ivf"`` (approximate: an inverted file, :func:`scclip.metrics.topk_ivf`,
        for hundreds of thousands of cells) or ``"auto"`` (``"ivf"`` on CPU from
        :data:`scclip.metrics.AUTO_IVF_PAIRS` query x reference pairs, else exact). With ``candidate_bias`` the
        search is exact.

    Returns
    -------
    ``(indices, similarities)``: ``(n, k)`` int64 positions into ``ref`` and float32 cosine similarities, best first.
    """
    q, r = pair_embeddings(query, ref, paired=False)
    if int(k) < 1:
        msg = f"k must be a positive integer, got {k}."
        raise ScclipError(msg)
    kk = min(int(k), r.shape[0])
    dev = device_of(device)
    q, r = prepare_metric(q, "cosine"), prepare_metric(r, "cosine")
    how = resolve_search(search, q.shape[0], r.shape[0], dev)  # a bad option is refused even with a bias
    if candidate_bias is None and how == "ivf":
        idx, sim, _ = topk_ivf(q, r, kk, device=dev)
        return idx.numpy(), sim.numpy()
    if candidate_bias is None:
        idx, sim = topk_chunked(q, r, kk, chunk_size=chunk_size, device=dev)
        return idx.numpy(), sim.numpy()
    qb, rb = biased(q, r, candidate_bias)
    idx, _ = topk_chunked(qb, rb, kk, chunk_size=chunk_size, device=dev)
    return idx.numpy(), (q[:, None, :] * r[idx]).sum(-1).numpy()


def biased(q: torch.Tensor, r: torch.Tensor, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """``[q, 1]`` and ``[r, bias]``: their dot products are the cosine plus the candidate's bias."""
    b = torch.as_tensor(np.asarray(bias, dtype=np.float32)).reshape(-1, 1)
    if b.shape[0] != r.shape[0]:
        msg = f"candidate_bias has {b.shape[0]} values for {r.shape[0]} candidate cells; give one per cell."
        raise ScclipError(msg)
    return torch.cat([q, torch.ones(q.shape[0], 1)], 1), torch.cat([r, b], 1)


def cell_names(names, n: int, what: str) -> np.ndarray:
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
    kk, n, dev = min(int(k), rna.shape[0]), rna.shape[0], device_of(device)
    q, r = prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine")
    out = {}
    for j, (name, a, b) in enumerate((("rna_to_atac", q, r), ("atac_to_rna", r, q))):
        if candidate_bias is None:
            st = paired_pass(a, b, chunk_size=chunk_size, topk=kk, device=dev)
            sims = st["top_score"]
        else:
            st = paired_pass(*biased(a, b, candidate_bias[1 - j]), chunk_size=chunk_size, topk=kk, device=dev)
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
    rn = cell_names(rna_names, rna.shape[0], "rna_names")
    an = cell_names(atac_names, atac.shape[0], "atac_names")
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
