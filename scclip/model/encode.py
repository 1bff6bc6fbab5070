"""Inference helpers: the device to run on, the one precision switch, and encoding a CSR matrix in batches.

Shared by embedding (``scclip.embed``) and training; nothing here imports the training loop.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from scclip.errors import ScclipError
from scclip.model.allocator import reuse_freed_memory
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


def cpu_capability() -> dict:
    """The CPU's vector capability as torch dispatches it, and whether it computes bf16 natively.

    ``capability`` is :func:`torch.backends.cpu.get_cpu_capability` (``DEFAULT``, ``AVX2``, ``AVX512``, ...).
    bf16 is native with AVX512_BF16 or AMX instructions, which need torch's AVX-512 kernels; elsewhere
    (AVX2-only CPUs) bf16 arithmetic is emulated: ~17x slower than fp32 on an AVX2 EPYC (issue 18).
    """
    capability = str(torch.backends.cpu.get_cpu_capability())
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}
    flags = {name: bool(getattr(torch.cpu, fn, lambda: False)()) for name, fn in probes.items()}
    avx512 = capability.upper().startswith(("AVX512", "AMX"))
    return {"capability": capability, **flags, "native_bf16": avx512 and any(flags.values())}


def describe_cpu() -> str:
    """One line for benchmark output, e.g. ``AVX512 (avx512_bf16: yes, amx: no)``."""
    c = cpu_capability()
    return f"{c['capability']} (avx512_bf16: {'yes' if c['avx512_bf16'] else 'no'}, amx: {'yes' if c['amx'] else 'no'})"


def check_cpu_bf16(device: torch.device) -> None:
    """Refuse bf16 on a CPU without native bf16: a one-line :class:`ScclipError` instead of a run ~17x slower
    than fp32 (chosen over a silent fp32 fallback: a run is then always what its config says)."""
    if device.type != "cpu":
        return
    c = cpu_capability()
    if not c["native_bf16"]:
        msg = (
            f"bf16 was asked for on a CPU without native bf16 (torch capability {c['capability']}, no "
            "AVX512_BF16/AMX), where it is emulated and ~17x slower than fp32; use --precision fp32 (or auto)"
        )
        raise ScclipError(msg)


def autocast(device: torch.device, *, bf16: bool | None = None):
    """The one precision switch: bf16 autocast on CUDA, a no-op on CPU unless ``bf16=True``. It does what it
    is told; training (``TrainConfig(precision="bf16")``) refuses bf16 on a CPU without native bf16 first
    (:func:`check_cpu_bf16`)."""
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
    with reuse_freed_memory(device):  # opt-in (SCCLIP_REUSE_FREED_MEMORY=1)
        for lo in range(0, X.shape[0], batch_size):
            batch = SparseBatch.from_csr(X[lo : lo + batch_size], device=device)
            with autocast(device, bf16=bf16):
                out[lo : lo + batch_size] = model.encode(modality, batch).float().cpu().numpy()
    model.train(was_training)
    return out
