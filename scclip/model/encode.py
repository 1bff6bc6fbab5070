"""Inference helpers: the device to run on, the one precision switch, and encoding a CSR matrix in batches.

Shared by embedding (``scclip.embed``) and training; nothing here imports the training loop.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from scclip.errors import ScclipError
from scclip.model.clip import ScCLIP
from scclip.model.patch import SparseBatch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without a GPU is a clear error.

    Under torchrun with GPUs, ``cuda`` means this process's GPU ``cuda:LOCAL_RANK``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        msg = "--device cuda was asked for but no CUDA GPU is visible to torch; use --device auto or cpu"
        raise ScclipError(msg)
    if device not in ("cpu",) and not device.startswith("cuda"):
        msg = f"unknown device {device!r}; use auto, cpu or cuda"
        raise ScclipError(msg)
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def autocast(device: torch.device, *, bf16: bool | None = None):
    """The one precision switch: bf16 autocast on CUDA, a no-op on CPU unless ``bf16=True``."""
    enabled = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.inference_mode()
def encode_csr(
    model: ScCLIP, modality: str, X, *, batch_size: int = 1024, device=None, bf16: bool | None = None
) -> np.ndarray:
    """Embed every row of a CSR matrix in batches (eval mode); only one batch is ever dense."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((X.shape[0], model.cfg.proj_dim), dtype=np.float32)
    for lo in range(0, X.shape[0], batch_size):
        batch = SparseBatch.from_csr(X[lo : lo + batch_size], device=device)
        with autocast(device, bf16=bf16):
            out[lo : lo + batch_size] = model.encode(modality, batch).float().cpu().numpy()
    model.train(was_training)
    return out
