"""Sparse patch embedding: genome-sorted features -> one token per contiguous patch.

A cell's features (genes or peaks, in genome order) are cut into ``n_patches`` contiguous patches. The token
of patch ``p`` is a weighted sum over that patch's non-zero features, so the cost is proportional to the
number of non-zeros, never to the number of features:

    token[b, p] = bias[p] + sum_{f in patch p, x[b, f] != 0} x[b, f] * W[w(f)]

``per_patch``: ``w(f) = f`` (every feature its own vector, per-patch bias).
``shared``: ``w(f) = offset of f inside its patch`` (one ``Linear(patch_size, d)`` for all patches, the
paper's ViT-style pad-and-reshape embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class SparseBatch:
    """Non-zeros of a batch of cells (COO, rows sorted).

    rows, cols : (nnz,) int64 cell index within the batch and feature index
    values : (nnz,) float32
    n_cells : batch size
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    n_cells: int

    @classmethod
    def from_csr(cls, X, *, device: str | torch.device = "cpu") -> SparseBatch:
        """From a scipy CSR matrix (a batch of rows)."""
        indptr = np.asarray(X.indptr)
        counts = torch.from_numpy(np.diff(indptr).astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(X.shape[0]), counts)
        return cls(
            rows=rows.to(device),
            cols=torch.from_numpy(np.asarray(X.indices, dtype=np.int64)).to(device),
            values=torch.from_numpy(np.asarray(X.data, dtype=np.float32)).to(device),
            n_cells=X.shape[0],
        )

    def to(self, device) -> SparseBatch:
        return SparseBatch(self.rows.to(device), self.cols.to(device), self.values.to(device), self.n_cells)

    def dropout(self, p: float) -> SparseBatch:
        """Drop each non-zero with probability ``p`` (training-time feature masking)."""
        if p <= 0:
            return self
        keep = torch.rand(self.values.shape, device=self.values.device) >= p
        return SparseBatch(self.rows[keep], self.cols[keep], self.values[keep], self.n_cells)

    def to_dense(self, n_features: int) -> torch.Tensor:
        out = torch.zeros(self.n_cells, n_features, device=self.values.device)
        out[self.rows, self.cols] = self.values
        return out


class PatchEmbedding(nn.Module):
    """Tokens of shape (B, n_patches, d_model) from a :class:`SparseBatch`.

    Parameters
    ----------
    patch, offset
        (n_features,) patch index and position inside the patch of every feature (from the feature space).
    n_patches, patch_size
        Layout of the feature space.
    d_model
        Token width.
    mode
        ``"per_patch"`` or ``"shared"``.
    """

    def __init__(self, patch, offset, *, n_patches: int, patch_size: int, d_model: int, mode: str) -> None:
        super().__init__()
        self.mode, self.n_patches, self.patch_size = mode, int(n_patches), int(patch_size)
        patch = torch.as_tensor(np.asarray(patch), dtype=torch.long)
        offset = torch.as_tensor(np.asarray(offset), dtype=torch.long)
        self.register_buffer("patch", patch, persistent=False)
        weight_index = offset if mode == "shared" else torch.arange(len(patch))
        self.register_buffer("weight_index", weight_index, persistent=False)
        n_rows = self.patch_size if mode == "shared" else len(patch)
        # Scaled so that a patch with a handful of non-zeros starts with unit-scale tokens.
        self.weight = nn.Parameter(torch.randn(n_rows, d_model) * 0.02)
        self.bias = nn.Parameter(torch.zeros(self.n_patches if mode == "per_patch" else 1, d_model))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        B, P, d = batch.n_cells, self.n_patches, self.weight.shape[1]
        slot = batch.rows * P + self.patch[batch.cols]  # (nnz,)
        contrib = self.weight[self.weight_index[batch.cols]] * batch.values[:, None]  # (nnz, d)
        tokens = torch.zeros(B * P, d, dtype=contrib.dtype, device=contrib.device)
        tokens = tokens.index_add(0, slot, contrib).view(B, P, d)  # (B, P, d)
        return self.norm(tokens + self.bias)

    def dense_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same tokens from a dense (B, n_features) matrix (for tests: the obvious implementation)."""
        B, P, ps = x.shape[0], self.n_patches, self.patch_size
        if self.mode == "shared":
            padded = torch.zeros(B, P * ps, dtype=x.dtype, device=x.device)
            padded[:, self.patch * ps + self.weight_index] = x  # pad, then reshape
            tokens = padded.view(B, P, ps) @ self.weight  # (B, P, d)
        else:
            tokens = torch.stack(
                [x[:, self.patch == p] @ self.weight[self.patch == p] for p in range(P)], dim=1
            )
        return self.norm(tokens + self.bias)
