"""The scCLIP network: sparse patch embeddings, one Transformer per modality, CLIP loss."""

from __future__ import annotations

from scclip.model.clip import ClipLoss, ScCLIP
from scclip.model.config import PRESETS, ModelConfig, get_preset

__all__ = ["PRESETS", "ClipLoss", "ModelConfig", "ScCLIP", "get_preset"]
