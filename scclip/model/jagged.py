"""Jagged token layout for empty-patch skipping: only [CLS] and the non-empty patches' tokens of each cell.

Per-token work (layer norms, projections, MLP: ~90% of a block's FLOPs) runs on the flat (N, d) tokens of the
whole batch, N = the batch's non-empty tokens plus one [CLS] per cell. Attention pads each cell to the batch's
largest count K and masks the padding out of the keys, so each cell attends to its own tokens only.

Padding and unpadding are row gathers (``index_select``) in both directions, forward and backward: a scatter
(``index_copy``, or the ``index_put`` behind the backward of ``x[index]``) runs on one thread on CPU and took a
third of an embedding pass (benchmarks/profile_cpu.py, docs/benchmarks.md section 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` of a (n, C) tensor as a gather, where ``rows == n`` selects a row of zeros."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, rows)


class _Pad(torch.autograd.Function):
    """(N, C) flat tokens -> (B * K, C) padded slots; backward gathers each token's slot back."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        return take_rows(flat, source)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


class _Unpad(torch.autograd.Function):
    """(B * K, C) padded slots -> (N, C) real tokens; backward puts zeros in the padding."""

    @staticmethod
    def forward(ctx, padded: torch.Tensor, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(source)
        return padded.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (source,) = ctx.saved_tensors
        return take_rows(grad, source), None, None


@dataclass
class Jagged:
    """Where each kept token of a batch lives.

    index : (N,) int64 slot of every flat token in the padded (B * K) layout (cell-major, original order)
    source : (B * K,) int64 flat token of every slot, N for a padding slot (the inverse of ``index``)
    cls : (B,) int64 flat position of each cell's [CLS] (its first token)
    mask : (B, 1, 1, K) bool key mask of the padded layout (True = a real token)
    n_cells, length : B and K (1 + the most non-empty patches of any cell in the batch)
    """

    index: torch.Tensor
    source: torch.Tensor
    cls: torch.Tensor
    mask: torch.Tensor
    n_cells: int
    length: int

    @classmethod
    def from_keep(cls, keep: torch.Tensor) -> Jagged:
        """From a (B, T) bool mask of the tokens to keep (column 0, [CLS], kept for every cell)."""
        B = keep.shape[0]
        counts = keep.sum(1)  # (B,)
        K = int(counts.max()) if B else 0
        rank = keep.cumsum(1) - 1  # (B, T) place of each kept token within its cell
        rows = torch.arange(B, device=keep.device)[:, None] * K
        index = (rows + rank)[keep]  # (N,)
        mask = torch.arange(K, device=keep.device) < counts[:, None]  # (B, K)
        source = torch.full((B * K,), index.numel(), dtype=torch.int64, device=keep.device)
        source[index] = torch.arange(index.numel(), device=keep.device)
        return cls(index, source, counts.cumsum(0) - counts, mask[:, None, None, :], B, K)

    def pad(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, K, C), zeros in the padding."""
        return _Pad.apply(flat, self.source, self.index).view(self.n_cells, self.length, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, K, C) -> (N, C), the real tokens only."""
        return _Unpad.apply(padded.reshape(self.n_cells * self.length, -1), self.index, self.source)
