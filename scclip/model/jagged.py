"""Jagged token layout for empty-patch skipping: only [CLS] and the non-empty patches' tokens of each cell.

Per-token work (layer norms, projections, MLP: ~90% of a block's FLOPs) runs on the flat (N, d) tokens of the
whole batch, N = the batch's non-empty tokens plus one [CLS] per cell. Attention runs per group of cells with
similar counts, each group padded to its own largest count K and its padding masked out of the keys, so each
cell attends to its own tokens only and the padded work stays close to the real tokens'.

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


@dataclass(frozen=True)
class Group:
    """Cells of similar token counts that attend together, padded to their own largest count.

    n_cells, length : b cells of K slots each (K = the group's largest count)
    mask : (b, 1, 1, K) bool key mask (True = a real token)
    """

    n_cells: int
    length: int
    mask: torch.Tensor


MIN_GROUP_CELLS = 16  # cells per attention group, at least (fewer, larger calls below that)
MAX_GROUPS = 8  # attention work ~0.4x of one group at the real data's counts; more groups gain little


@dataclass
class Jagged:
    """Where each kept token of a batch lives.

    The cells are sorted by their token count and cut into up to ``MAX_GROUPS`` groups of equal size; each
    group is padded to its own largest count, so attention (quadratic in the padded length) does about 0.4-0.5x
    the work of one padding to the batch's largest count at the real data's counts (docs/benchmarks.md).

    index : (N,) int64 slot of every flat token in the padded buffer (groups one after another, cell-major)
    source : (S,) int64 flat token of every slot, N for a padding slot (the inverse of ``index``)
    cls : (B,) int64 flat position of each cell's [CLS] (its first token), in batch order
    order : (B,) int64 cells in group order (the padded buffer's cells are ``order[0], order[1], ...``)
    rank : (B,) int64 place of each cell in group order (the inverse of ``order``)
    groups : the attention groups, in buffer order
    n_cells, length : B and the largest K (1 + the most non-empty patches of any cell in the batch)
    """

    index: torch.Tensor
    source: torch.Tensor
    cls: torch.Tensor
    order: torch.Tensor
    rank: torch.Tensor
    groups: tuple[Group, ...]
    n_cells: int
    length: int

    @classmethod
    def from_keep(cls, keep: torch.Tensor, *, max_groups: int | None = None) -> Jagged:
        """From a (B, T) bool mask of the tokens to keep (column 0, [CLS], kept for every cell); at most
        ``max_groups`` attention groups (default ``MAX_GROUPS``)."""
        B, dev = keep.shape[0], keep.device
        counts = keep.sum(1)  # (B,)
        order = torch.argsort(counts, stable=True)  # cells by token count
        n_groups = max(1, min(max_groups or MAX_GROUPS, B // MIN_GROUP_CELLS))
        q, r = divmod(B, n_groups)
        sizes = [q + (i < r) for i in range(n_groups)] if B else []  # equal groups, the larger first
        sorted_counts = counts[order].tolist()
        groups, slot_of_cell, start, first = [], torch.empty(B, dtype=torch.int64, device=dev), 0, 0
        for b in sizes:  # each group: b cells of its largest count K
            K = int(sorted_counts[first + b - 1])
            cells = order[first : first + b]
            slot_of_cell[cells] = start + torch.arange(b, device=dev) * K
            mask = torch.arange(K, device=dev) < counts[cells][:, None]  # (b, K)
            groups.append(Group(b, K, mask[:, None, None, :]))
            start, first = start + b * K, first + b
        rank = keep.cumsum(1) - 1  # (B, T) place of each kept token within its cell
        index = (slot_of_cell[:, None] + rank)[keep]  # (N,)
        source = torch.full((start,), index.numel(), dtype=torch.int64, device=dev)
        source[index] = torch.arange(index.numel(), device=dev)
        rank_of_cell = torch.empty_like(order)
        rank_of_cell[order] = torch.arange(B, device=dev)
        length = int(counts.max()) if B else 0
        return cls(index, source, counts.cumsum(0) - counts, order, rank_of_cell, tuple(groups), B, length)

    def pad(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(N, C) -> one (b, K, C) tensor per group, zeros in the padding."""
        padded = _Pad.apply(flat, self.source, self.index)  # (S, C)
        parts = padded.split([g.n_cells * g.length for g in self.groups])  # backward: one cat, not a sum of slices
        return [p.view(g.n_cells, g.length, -1) for p, g in zip(parts, self.groups, strict=True)]

    def unpad(self, padded: list[torch.Tensor]) -> torch.Tensor:
        """One (b, K, C) tensor per group -> (N, C), the real tokens only."""
        flat = torch.cat([p.reshape(-1, p.shape[-1]) for p in padded]) if len(padded) > 1 else padded[0]
        return _Unpad.apply(flat.reshape(-1, flat.shape[-1]), self.index, self.source)

    def cls_groups(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, C) flat tokens -> each group's [CLS] rows (b, C), in group order (one gather)."""
        rows = self.cls.index_select(0, self.order)  # (B,) [CLS] of the cells in group order
        return x.index_select(0, rows).split([g.n_cells for g in self.groups])

    def to_batch_order(self, per_group: list[torch.Tensor]) -> torch.Tensor:
        """Per-group rows (b, C), in group order -> (B, C) in batch order."""
        return torch.cat(per_group).index_select(0, self.rank)
