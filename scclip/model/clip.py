"""The two-tower scCLIP model and its symmetric InfoNCE (CLIP) loss."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scclip.model.config import ModelConfig
from scclip.model.encoder import ModalityEncoder
from scclip.model.patch import SparseBatch


class ScCLIP(nn.Module):
    """One encoder per modality projecting into a shared space, plus a learnable temperature.

    Parameters
    ----------
    cfg
        Architecture.
    layouts
        ``{"rna": layout, "atac": layout}`` where a layout is a mapping with ``patch``, ``offset`` (arrays over
        the modality's features), ``n_patches`` and ``patch_size`` — taken from the model's feature space.
    """

    def __init__(self, cfg: ModelConfig, layouts: dict[str, dict]) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {
                m: ModalityEncoder(
                    cfg,
                    patch=lay["patch"],
                    offset=lay["offset"],
                    n_patches=lay["n_patches"],
                    patch_size=lay["patch_size"],
                )
                for m, lay in layouts.items()
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))

    def encode(self, modality: str, batch: SparseBatch) -> torch.Tensor:
        """(B, proj_dim) unit-norm embeddings of one modality's cells."""
        return self.encoders[modality](batch)

    def forward(self, rna: SparseBatch, atac: SparseBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode("rna", rna), self.encode("atac", atac), self.scale()

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), with the logit scale clamped at ``cfg.logit_scale_max`` (open_clip's rule)."""
        return self.logit_scale.clamp(max=self.cfg.logit_scale_max).exp()


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of this rank's slice (any backend)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r) / d(all features)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over all ranks (identity when not distributed), differentiable for every slice.

    Each rank's loss scores its local cells against all ranks' features; the backward pass sends the
    gradient of every rank's loss with respect to this rank's features back here, so rank ``r``'s parameter
    gradient is ``sum_{i in r} d(sum_s L_s)/dz_i dz_i/dtheta``; DDP's mean over the ``W`` ranks is then
    ``d((1/W) sum_s L_s)/dtheta``, the gradient of the global-batch loss (open_clip's ``local_loss`` with
    ``gather_with_grad``; no loss scaling). Gathering without gradients for the other ranks' slices would
    drop the terms where this rank's cells are negatives of another rank's cells.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGather.apply(x)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the N x N cosine-similarity matrix of N paired cells.

    With several ranks, each rank scores its local cells against the features gathered from all ranks
    (open_clip's ``local_loss`` scheme), so the effective batch is the global one.

    Parameters
    ----------
    intra_negatives
        Weight ``w`` of same-modality negatives. ``0`` is plain CLIP: an RNA cell competes only with the other
        cells' ATAC profiles. With ``w > 0`` the other cells' RNA profiles are negatives too (their logits get
        ``+ log w``; ``w = 1`` is SimCLR's NT-Xent over 2N views). This forbids a cell from being closer to
        cells of its own modality than to its partner, which is what leaves a modality gap.
    """

    def __init__(self, intra_negatives: float = 0.0) -> None:
        super().__init__()
        if intra_negatives < 0:
            msg = f"intra_negatives must be >= 0, got {intra_negatives}"
            raise ValueError(msg)
        self.intra_negatives = float(intra_negatives)

    def forward(self, rna: torch.Tensor, atac: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        all_rna, all_atac = gather_features(rna), gather_features(atac)
        rank = dist.get_rank() if all_rna.shape[0] != rna.shape[0] else 0
        labels = torch.arange(rna.shape[0], device=rna.device) + rank * rna.shape[0]
        logits_rna = scale * rna @ all_atac.T  # (n_local, N)
        logits_atac = scale * atac @ all_rna.T  # (n_local, N)
        if self.intra_negatives > 0:
            logits_rna = torch.cat(
                [logits_rna, self._intra(rna, all_rna, scale, labels)], dim=1
            )  # (n_local, 2N)
            logits_atac = torch.cat([logits_atac, self._intra(atac, all_atac, scale, labels)], dim=1)
        return (F.cross_entropy(logits_rna, labels) + F.cross_entropy(logits_atac, labels)) / 2

    def _intra(
        self, x: torch.Tensor, all_x: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Same-modality logits (n_local, N) with each cell's own entry masked out."""
        logits = scale * x @ all_x.T + math.log(self.intra_negatives)
        own = F.one_hot(labels, all_x.shape[0]).bool()
        return logits.masked_fill(own, float("-inf"))
