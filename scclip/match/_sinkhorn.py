"""Entropic optimal transport between RNA and ATAC cells (log-domain Sinkhorn, block-wise) and the per-cell
biases that turn cosine ranking into ranking by the transport plan (matching-time normalisation, as in
MatchCLOT)."""

from __future__ import annotations

import numpy as np
import torch

from scclip.errors import ScclipError
from scclip.metrics import auto_chunk, pair_embeddings, prepare_metric


def augment_scores(x: torch.Tensor, scale: float, bias: np.ndarray | None) -> torch.Tensor:
    """Append a column so that ``[s * q, 1] . [r, g] = s * (q . r) + g``."""
    if bias is None:
        return x * scale
    return torch.cat([x * scale, torch.from_numpy(bias.astype(np.float32)).unsqueeze(1)], dim=1)


def sinkhorn_potentials(
    q: torch.Tensor, r: torch.Tensor, *, eps: float, n_iter: int, tol: float, chunk_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Log-domain Sinkhorn with uniform marginals on ``exp(cos / eps)``, computed block-wise.

    Returns the potentials ``(f, g)`` of the plan ``P_ij = exp(cos_ij / eps + f_i + g_j)``.
    """
    n, m = q.shape[0], r.shape[0]
    f, g = np.zeros(n), np.zeros(m)

    def half(a: torch.Tensor, b: torch.Tensor, pot: np.ndarray, log_mass: float) -> np.ndarray:
        c = auto_chunk(b.shape[0], chunk_size)
        bt = augment_scores(b, 1.0, pot).T.contiguous()
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
    f, g = sinkhorn_potentials(q, r, eps=eps, n_iter=n_iter, tol=tol, chunk_size=chunk_size)
    return eps * f, eps * g
