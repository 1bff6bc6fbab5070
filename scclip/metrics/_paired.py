"""Paired metrics: FOSCTTM, top-k accuracy and match probability, both directions, from one scoring pass each.

Row ``i`` of ``rna_emb`` and row ``i`` of ``atac_emb`` are the same cell. Ties count at random in expectation
(see ``_similarity``); ``mean`` is the average of the two directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from scclip.errors import ScclipError
from scclip.metrics._similarity import check_metric, pair_embeddings, paired_pass, prepare_metric


def _both(rna, atac, **kw) -> tuple[dict, dict]:
    return paired_pass(rna, atac, **kw), paired_pass(atac, rna, **kw)


def _summary(r2a: float, a2r: float) -> dict[str, float]:
    return {"rna_to_atac": float(r2a), "atac_to_rna": float(a2r), "mean": float((r2a + a2r) / 2)}


def _fos(stats: dict, m: int) -> np.ndarray:
    # greater + ties / 2 == ((m - 1) + greater - less) / 2: the sign sum alone gives FOSCTTM, ties included.
    return 0.5 + 0.5 * stats["sign_sum"] / (m - 1)


def _hit(stats: dict, k: int) -> np.ndarray:
    return np.clip((k - stats["greater"]) / (stats["ties"] + 1), 0.0, 1.0)


# --------------------------------------------------------------------------- paired metrics
def foscttm(rna_emb, atac_emb, *, metric: str = "cosine", chunk_size: int | None = None) -> dict[str, float]:
    """Fraction Of Samples Closer Than the True Match (lower is better; chance 0.5, perfect 0).

    For each cell, the fraction of the other modality's ``n - 1`` other cells that are more similar to it than
    its true partner (exact ties count half).

    Returns
    -------
    dict with ``rna_to_atac``, ``atac_to_rna`` and ``mean``.
    """
    check_metric(metric)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=True)
    kw = {"metric": metric, "chunk_size": chunk_size, "ties": False}
    r2a, a2r = _both(prepare_metric(rna, metric), prepare_metric(atac, metric), **kw)
    n = rna.shape[0]
    return _summary(_fos(r2a, n).mean(), _fos(a2r, n).mean())


def topk_accuracy(
    rna_emb,
    atac_emb,
    *,
    k: int | Sequence[int] = (1, 5),
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> dict:
    """Fraction of cells whose true partner is among the ``k`` most similar cells of the other modality.

    Ties are broken at random in expectation. Chance is ``k / n``.

    Returns
    -------
    For an int ``k``: dict with ``rna_to_atac``, ``atac_to_rna``, ``mean``. For a sequence: ``{k: that dict}``.
    """
    check_metric(metric)
    ks = [k] if np.isscalar(k) else list(k)
    if not ks or any(int(v) < 1 for v in ks):
        msg = f"k must be a positive integer or a sequence of them, got {k!r}."
        raise ScclipError(msg)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=True)
    r2a, a2r = _both(prepare_metric(rna, metric), prepare_metric(atac, metric), metric=metric, chunk_size=chunk_size)
    res = {int(v): _summary(_hit(r2a, int(v)).mean(), _hit(a2r, int(v)).mean()) for v in ks}
    return res[int(ks[0])] if np.isscalar(k) else res


def match_probability(
    rna_emb, atac_emb, *, temperature: float = 0.05, chunk_size: int | None = None
) -> dict[str, float]:
    """NeurIPS 2021 "match modality" score from a soft matching matrix.

    The matrix is the row softmax of cosine similarity divided by ``temperature``; the score is the mean mass on
    the true partner (the diagonal). ``atac_to_rna`` uses the softmax over RNA cells for each ATAC cell.
    Chance is ``1 / n``; perfect is 1.
    """
    if not temperature > 0:
        msg = f"temperature must be > 0, got {temperature}."
        raise ScclipError(msg)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=True)
    kw = {"metric": "cosine", "chunk_size": chunk_size, "ties": False, "temperatures": (float(temperature),)}
    r2a, a2r = _both(prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine"), **kw)
    key = f"log_p_{float(temperature)}"
    return _summary(np.exp(r2a[key]).mean(), np.exp(a2r[key]).mean())


def paired_metrics(
    rna_emb,
    atac_emb,
    *,
    ks: Sequence[int] = (1, 5),
    temperatures: Sequence[float] = (0.05,),
    chunk_size: int | None = None,
    candidate_bias: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """FOSCTTM, top-k and match probability (cosine) from one pass per direction.

    ``candidate_bias = (rna_bias, atac_bias)`` adds ``atac_bias[j]`` to every similarity when ATAC cell ``j`` is a
    candidate (RNA -> ATAC) and ``rna_bias[i]`` when RNA cell ``i`` is (ATAC -> RNA): the matching-time Sinkhorn
    normalisation of :func:`scclip.match.sinkhorn_bias` ranks candidates this way.

    Returns ``{"foscttm": summary, "top{k}": summary..., "match_probability@{T}": summary...}`` where each summary
    has ``rna_to_atac``, ``atac_to_rna`` and ``mean``.
    """
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=True)
    temps = tuple(float(t) for t in temperatures)
    kw = {"metric": "cosine", "chunk_size": chunk_size, "temperatures": temps}
    q, r = prepare_metric(rna, "cosine"), prepare_metric(atac, "cosine")
    if candidate_bias is None:
        r2a, a2r = _both(q, r, **kw)
    else:
        rna_bias, atac_bias = (_bias_column(b, x.shape[0], name) for b, x, name in
                               ((candidate_bias[0], q, "rna_bias"), (candidate_bias[1], r, "atac_bias")))  # fmt: skip
        ones_q, ones_r = torch.ones(q.shape[0], 1), torch.ones(r.shape[0], 1)
        # [query, 1] . [candidate, bias] = cosine + the candidate's bias
        r2a = paired_pass(torch.cat([q, ones_q], 1), torch.cat([r, atac_bias], 1), **kw)
        a2r = paired_pass(torch.cat([r, ones_r], 1), torch.cat([q, rna_bias], 1), **kw)
    n = rna.shape[0]
    out = {"foscttm": _summary(_fos(r2a, n).mean(), _fos(a2r, n).mean())}
    for k in ks:
        out[f"top{int(k)}"] = _summary(_hit(r2a, int(k)).mean(), _hit(a2r, int(k)).mean())
    for t in temps:
        key = f"log_p_{t}"
        out[f"match_probability@{t:g}"] = _summary(np.exp(r2a[key]).mean(), np.exp(a2r[key]).mean())
    return out


def _bias_column(bias, n: int, name: str) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(bias, dtype=np.float32)).reshape(-1, 1)
    if b.shape[0] != n or not bool(torch.isfinite(b).all()):
        msg = f"candidate_bias: {name} must hold {n} finite numbers (one per cell), got shape {tuple(b.shape)}."
        raise ScclipError(msg)
    return b
