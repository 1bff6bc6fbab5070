"""The scCLIP network (torch only; it never sees AnnData): sparse patch embeddings, one Transformer per
modality, a shared projection, the CLIP loss, the structure term, and batched inference.

The modules: ``config`` (:class:`ModelConfig`, presets), ``patch`` (sparse batches, patch embeddings),
``encoder`` (pre-LN Transformer), ``clip`` (:class:`ScCLIP`, :class:`ClipLoss`), ``structure`` (within-modality
structure term), ``init`` (SVD initialisation), ``encode`` (device, precision switch and CPU bf16 check,
:func:`encode_csr`), ``jagged`` (token layout for empty-patch skipping), ``allocator`` (glibc's large blocks
reused while training or embedding on CPU).
"""

from __future__ import annotations

from scclip.model.allocator import reuse_freed_memory
from scclip.model.clip import ClipLoss, ScCLIP
from scclip.model.config import PRESETS, ModelConfig, get_preset
from scclip.model.encode import (
    autocast,
    check_cpu_bf16,
    cpu_capability,
    describe_cpu,
    encode_csr,
    resolve_device,
)

__all__ = [
    "PRESETS",
    "ClipLoss",
    "ModelConfig",
    "ScCLIP",
    "autocast",
    "check_cpu_bf16",
    "cpu_capability",
    "describe_cpu",
    "encode_csr",
    "get_preset",
    "resolve_device",
    "reuse_freed_memory",
]
