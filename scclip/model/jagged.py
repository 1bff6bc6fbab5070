"""Packed token layout for empty-patch skipping: only [CLS] and the non-empty patches' tokens of each cell.

The cells of a batch are sorted by their token count and cut into attention groups of similar counts; each
group's cells are padded to the group's own largest count K. The tokens live in one flat buffer of *slots*,
(S, d): group after group, cell after cell, K slots per cell, S = sum of b * K over the groups. Every block runs
on that buffer as it is: the per-token work (layer norms, projections, MLP) on all S rows at once, attention on
each group's (b, K, .) view with the padding masked out of the keys. Padding slots are computed but never
read by a real token (their keys are masked, and only [CLS] leaves the last block), so the real tokens'
outputs and gradients are those of the masked dense computation. Because the groups pad to their own counts,
S stays a few percent above the real tokens, and no gather or scatter runs between the blocks: one gather
builds the buffer from the dense tokens, one takes the [CLS] rows.

Gathers run as ``index_select`` forward and backward: a scatter (``index_add``, ``index_put``) runs on one
thread on CPU (docs/benchmarks.md section 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` of a (n, C) tensor as a gather, where ``rows == n`` selects a row of zeros."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, rows)


class _Gather(torch.autograd.Function):
    """Rows ``source`` of x (``n`` = a zero row); the backward gathers each row's gradient back through
    ``inverse`` (``len(source)`` = no slot: a zero gradient), a gather rather than a single-threaded scatter.
    Valid when every row of x is taken at most once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, source: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return take_rows(x, source)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return take_rows(grad, inverse), None, None


@dataclass(frozen=True)
class Group:
    """Cells of similar token counts that attend together, padded to their own largest count.

    n_cells, length : b cells of K slots each (K = the group's largest count)
    mask : (b, 1, 1, K) bool key mask (True = a real token)
    """

    n_cells: int
    length: int
    mask: torch.Tensor

    @property
    def n_slots(self) -> int:
        """The group's rows in the slot buffer, b * K."""
        return self.n_cells * self.length


MIN_GROUP_CELLS = 16  # cells per attention group, at least (fewer, larger calls below that)
MAX_GROUPS = 8  # attention work ~0.4x of one group at the real data's counts; more groups gain little


@dataclass
class Jagged:
    """Where each kept token of a batch lives in the slot buffer.

    index : (B * T,) int64 slot of every dense token, S for a dropped (empty) patch
    source : (S,) int64 dense token of every slot, B * T for a padding slot (the inverse of ``index``)
    cls_slots : (B,) int64 slot of each cell's [CLS] (its first slot), in group order
    order : (B,) int64 cells in group order (the buffer's cells are ``order[0], order[1], ...``)
    rank : (B,) int64 place of each cell in group order (the inverse of ``order``)
    groups : the attention groups, in buffer order
    n_cells, length : B and the largest K (1 + the most non-empty patches of any cell in the batch)
    n_tokens : N, the real tokens (one [CLS] per cell + the non-empty patches)
    """

    index: torch.Tensor
    source: torch.Tensor
    cls_slots: torch.Tensor
    order: torch.Tensor
    rank: torch.Tensor
    groups: tuple[Group, ...]
    n_cells: int
    length: int
    n_tokens: int

    @classmethod
    def from_keep(cls, keep: torch.Tensor, *, max_groups: int | None = None) -> Jagged:
        """From a (B, T) bool mask of the tokens to keep (column 0, [CLS], kept for every cell); at most
        ``max_groups`` attention groups (default ``MAX_GROUPS``) of equal size, the larger first."""
        B, dev = keep.shape[0], keep.device
        counts = keep.sum(1)  # (B,)
        order = torch.argsort(counts, stable=True)  # cells by token count
        n_groups = max(1, min(max_groups or MAX_GROUPS, B // MIN_GROUP_CELLS))
        q, r = divmod(B, n_groups)
        sizes = [q + (i < r) for i in range(n_groups)] if B else []
        sorted_counts = counts[order].tolist()
        groups, slot_of_cell, start, first = [], torch.empty(B, dtype=torch.int64, device=dev), 0, 0
        for b in sizes:  # each group: b cells of its largest count K
            K = int(sorted_counts[first + b - 1])
            cells = order[first : first + b]
            slot_of_cell[cells] = start + torch.arange(b, device=dev) * K
            mask = torch.arange(K, device=dev) < counts[cells][:, None]  # (b, K)
            groups.append(Group(b, K, mask[:, None, None, :]))
            start, first = start + b * K, first + b
        place = keep.cumsum(1) - 1  # (B, T) place of each kept token within its cell
        index = torch.where(keep, slot_of_cell[:, None] + place, start).flatten()  # (B * T,)
        kept = keep.flatten().nonzero().squeeze(1)
        source = torch.full((start,), keep.numel(), dtype=torch.int64, device=dev)
        source[index[kept]] = kept
        rank = torch.empty_like(order)
        rank[order] = torch.arange(B, device=dev)
        length = int(counts.max()) if B else 0
        n_tokens = int(kept.numel())
        return cls(index, source, slot_of_cell[order], order, rank, tuple(groups), B, length, n_tokens)

    @property
    def n_slots(self) -> int:
        """S, the rows of the slot buffer (the real tokens plus each group's padding)."""
        return int(self.source.numel())

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """Dense tokens (B, T, C) -> the slot buffer (S, C), zeros in the padding."""
        return _Gather.apply(dense.reshape(-1, dense.shape[-1]), self.source, self.index)

    def split(self, slots: torch.Tensor) -> list[torch.Tensor]:
        """(S, C) -> each group's (b, K, C) view (no copy)."""
        parts = slots.split([g.n_slots for g in self.groups])
        return [p.view(g.n_cells, g.length, -1) for p, g in zip(parts, self.groups, strict=True)]

    def cls_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """(S, C) -> the [CLS] rows (B, C), in group order."""
        return slots.index_select(0, self.cls_slots)

    def to_batch_order(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, C) rows in group order -> batch order."""
        return rows.index_select(0, self.rank)
