"""The two-tower scCLIP model and its symmetric InfoNCE (CLIP) loss."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scclip.model.config import ModelConfig
from scclip.model.encoder import ModalityEncoder
from scclip.model.patch import SparseBatch

MODALITIES = ("rna", "atac")


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


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over all ranks, keeping this rank's slice differentiable (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the N x N cosine-similarity matrix of N paired cells.

    With several ranks, each rank scores its local cells against the features gathered from all ranks
    (open_clip's ``local_loss`` scheme), so the effective batch is the global one.
    """

    def forward(self, rna: torch.Tensor, atac: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        all_rna, all_atac = gather_features(rna), gather_features(atac)
        rank = dist.get_rank() if all_rna.shape[0] != rna.shape[0] else 0
        labels = torch.arange(rna.shape[0], device=rna.device) + rank * rna.shape[0]
        logits_rna = scale * rna @ all_atac.T  # (n_local, N)
        logits_atac = scale * atac @ all_rna.T  # (n_local, N)
        return (F.cross_entropy(logits_rna, labels) + F.cross_entropy(logits_atac, labels)) / 2
