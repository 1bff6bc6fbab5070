"""Jagged token layout for empty-patch skipping: only [CLS] and the non-empty patches' tokens of each cell.

Per-token work (layer norms, projections, MLP: ~90% of a block's FLOPs) runs on the flat (N, d) tokens of the
whole batch, N = the batch's non-empty tokens plus one [CLS] per cell. Attention pads each cell to the batch's
largest count K and masks the padding out of the keys, so each cell attends to its own tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Jagged:
    """Where each kept token of a batch lives.

    index : (N,) int64 slot of every flat token in the padded (B * K) layout (cell-major, original order)
    cls : (B,) int64 flat position of each cell's [CLS] (its first token)
    mask : (B, 1, 1, K) bool key mask of the padded layout (True = a real token)
    n_cells, length : B and K (1 + the most non-empty patches of any cell in the batch)
    """

    index: torch.Tensor
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
        return cls(index, counts.cumsum(0) - counts, mask[:, None, None, :], B, K)

    def pad(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, K, C), zeros in the padding."""
        out = flat.new_zeros(self.n_cells * self.length, flat.shape[1])
        return out.index_copy(0, self.index, flat).view(self.n_cells, self.length, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, K, C) -> (N, C), the real tokens only."""
        return padded.reshape(self.n_cells * self.length, -1)[self.index]
