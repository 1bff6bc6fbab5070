"""Sparse patch embedding: genome-sorted features -> one token per contiguous patch.

A cell's features (genes or peaks, in genome order) are cut into ``n_patches`` contiguous patches. The token
of patch ``p`` is a weighted sum over that patch's non-zero features, so the cost is proportional to the
number of non-zeros, never to the number of features (one ``embedding_bag`` call):

    token[b, p] = bias[p] + sum_{f in patch p, x[b, f] != 0} x[b, f] * W[w(f)]

``per_patch``: ``w(f) = f`` (every feature its own vector, per-patch bias).
``shared``: ``w(f) = offset of f inside its patch`` (one ``Linear(patch_size, d)`` for all patches, the
paper's ViT-style pad-and-reshape embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def uses_pinned_memory(device: str | torch.device) -> bool:
    """Whether host batches bound for ``device`` are staged in pinned memory (CUDA only)."""
    return torch.device(device).type == "cuda"


@dataclass
class SparseBatch:
    """Non-zeros of a batch of cells (COO, rows sorted).

    rows, cols : (nnz,) int64 cell index within the batch and feature index
    values : (nnz,) float32
    n_cells : batch size
    sorted_cols : columns ascend within every row (canonical CSR); enables the search-based bag offsets
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    n_cells: int
    sorted_cols: bool = False

    @classmethod
    def from_csr(cls, X, *, device: str | torch.device = "cpu") -> SparseBatch:
        """From a scipy CSR matrix (a batch of rows); to CUDA through pinned memory, without blocking."""
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(np.asarray(X.indptr)))
        cols = torch.from_numpy(np.asarray(X.indices, dtype=np.int64))
        values = torch.from_numpy(np.asarray(X.data, dtype=np.float32))
        return cls(torch.from_numpy(rows), cols, values, X.shape[0], sorted_cols=True).to(device)

    def to(self, device) -> SparseBatch:
        """On ``device``; host -> CUDA copies go through pinned memory with ``non_blocking=True``."""
        device = torch.device(device)
        if device.type == "cpu" and self.values.device.type == "cpu":
            return self
        pin = uses_pinned_memory(device) and self.values.device.type == "cpu"
        move = (lambda t: t.pin_memory().to(device, non_blocking=True)) if pin else (lambda t: t.to(device))
        return SparseBatch(
            move(self.rows), move(self.cols), move(self.values), self.n_cells, self.sorted_cols
        )

    def dropout(self, p: float) -> SparseBatch:
        """Drop each non-zero with probability ``p`` (training-time feature masking)."""
        if p <= 0:
            return self
        keep = torch.rand(self.values.shape, device=self.values.device) >= p
        return SparseBatch(
            self.rows[keep], self.cols[keep], self.values[keep], self.n_cells, self.sorted_cols
        )

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
        # Patches are contiguous feature ranges (the feature space's layout): a token's non-zeros are then
        # found by binary search from the patch's first feature, without per-non-zero patch lookups.
        self.contiguous = bool((patch[1:] >= patch[:-1]).all()) if len(patch) > 1 else True
        self.register_buffer(
            "patch_start", torch.searchsorted(patch, torch.arange(self.n_patches)), persistent=False
        )
        n_rows = self.patch_size if mode == "shared" else len(patch)
        # Scaled so that a patch with a handful of non-zeros starts with unit-scale tokens.
        self.weight = nn.Parameter(torch.randn(n_rows, d_model) * 0.02)
        self.bias = nn.Parameter(torch.zeros(self.n_patches if mode == "per_patch" else 1, d_model))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        B, P, d = batch.n_cells, self.n_patches, self.weight.shape[1]
        cols, values = batch.cols, batch.values.to(self.weight.dtype)
        if self.contiguous and batch.sorted_cols:
            # Non-zeros are ordered by (cell, feature), hence by token: each token's bag starts where the
            # search for (cell, first feature of its patch) lands.
            n = self.patch.numel()
            cells = torch.arange(B, device=cols.device)[:, None] * n
            offsets = torch.searchsorted(batch.rows * n + cols, (cells + self.patch_start).reshape(-1))
        else:
            slot = batch.rows * P + self.patch[cols]  # (nnz,) the (cell, patch) token of every non-zero
            slot, order = torch.sort(slot, stable=True)
            cols, values = cols[order], values[order]
            counts = torch.bincount(slot, minlength=B * P)
            offsets = counts.cumsum(0) - counts
        index = cols if self.mode == "per_patch" else self.weight_index[cols]
        # One bag per token: a fused gather-scale-sum, never an (nnz, d) intermediate.
        tokens = F.embedding_bag(index, self.weight, offsets, mode="sum", per_sample_weights=values)
        tokens = tokens.view(B, P, d).add_(self.bias)  # in place: embedding_bag's backward does not need it
        return self.norm(tokens)

    def occupied(self, batch: SparseBatch) -> torch.Tensor:
        """(B, n_patches) bool: whether the cell has a non-zero feature in the patch (stored zeros count as
        empty: they leave the token at its empty value)."""
        B, P = batch.n_cells, self.n_patches
        nz = batch.values != 0
        slot = batch.rows[nz] * P + self.patch[batch.cols[nz]]  # (nnz,) the (cell, patch) of every non-zero
        out = torch.zeros(B * P, dtype=torch.bool, device=batch.values.device)
        return out.index_fill_(0, slot, True).view(B, P)

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
