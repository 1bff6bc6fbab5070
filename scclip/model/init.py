"""Data-driven initialisation of per-patch feature embeddings from a truncated SVD (PCA/LSI loadings).

With ~1 non-zero feature per patch, randomly initialised embeddings learn slowly and overfit. Starting each
feature's vector at its loadings on the top ``d_model`` singular vectors of the (preprocessed) training
matrix means that, summed over patches, the tokens already hold the cell's PCA (RNA) / LSI (ATAC)
coordinates — the representation the strong linear baselines start from — and training refines it.
"""

from __future__ import annotations

import numpy as np
import torch

from scclip.model.patch import PatchEmbedding


def svd_loadings(X, k: int, *, seed: int = 0, skip: int = 0) -> np.ndarray:
    """(n_features, k) right singular vectors of CSR ``X`` scaled by their singular values, unit RMS overall.

    The ``skip`` leading vectors are left out (components ``skip .. skip + k - 1`` are returned).
    """
    skip = min(int(skip), max(0, min(X.shape) - 2))
    k_eff = max(1, min(k, min(X.shape) - 1 - skip))
    from sklearn.utils.extmath import randomized_svd  # ~1 s to import: only when a model is initialised

    _, s, vt = randomized_svd(X, n_components=k_eff + skip, random_state=seed, n_iter=4)
    load = (vt[skip:].T * s[skip:]).astype(np.float32)
    load /= np.sqrt((load**2).mean()) + 1e-12
    if k_eff < k:  # fewer components than the token width: pad with small noise
        pad = np.random.default_rng(seed).normal(0, 0.02, (load.shape[0], k - k_eff)).astype(np.float32)
        load = np.concatenate([load, pad], axis=1)
    return load


@torch.no_grad()
def svd_init_(embed: PatchEmbedding, X, *, seed: int = 0, scale: float = 0.1, skip: int = 0) -> None:
    """Initialise a ``per_patch`` embedding in place from the SVD of training rows ``X`` (no-op for ``shared``)."""
    if embed.mode != "per_patch" or X.shape[0] < 3:
        return
    load = svd_loadings(X, embed.weight.shape[1], seed=seed, skip=skip)
    embed.weight.copy_(torch.from_numpy(load * scale))
