"""Opt-in: reuse freed memory while training or embedding on CPU, instead of a page fault for every page of
every step.

glibc's ``malloc`` serves each allocation above 32 MB (its largest mmap threshold) with a fresh ``mmap`` and
unmaps it on ``free``, so every large activation of every step is new memory that the kernel zeroes page by page.
For the paper preset at batch 256 that was 3.6 million page faults and ~17 CPU-s of kernel time per step, a
quarter of the step (docs/benchmarks.md section 12). With ``SCCLIP_REUSE_FREED_MEMORY=1``, inside
:func:`reuse_freed_memory` large blocks come from the heap and freed memory stays mapped for the next step
(1.5x faster training at that size), but the heap fragments: the same run's peak RSS rose from 6.1 to 11.3 GB.
Memory bounds matter more here (the atlas's 12 GB, the target of half the original's memory), so it is **off by
default**. On leaving, glibc's defaults are restored and the freed memory is returned to the system
(``malloc_trim``), so a long-lived process (the app) does not keep its peak. Elsewhere (not Linux/glibc, a GPU
device) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

ENV_SWITCH = "SCCLIP_REUSE_FREED_MEMORY"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # glibc's defaults, restored on leaving
_lock = threading.Lock()
_depth = [0]  # nested / concurrent users (app sessions share one process)


def glibc() -> ctypes.CDLL | None:
    """The process's glibc when it has ``mallopt`` and ``malloc_trim``, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def reuse_freed_memory(device: torch.device | str = "cpu") -> Iterator[bool]:
    """With ``SCCLIP_REUSE_FREED_MEMORY=1``, glibc serves large blocks from the heap and keeps freed memory
    within the block; yields whether it did."""
    wanted = os.environ.get(ENV_SWITCH, "0") == "1"
    libc = glibc() if wanted and torch.device(device).type == "cpu" else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth[0] += 1
        if _depth[0] == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        with _lock:
            _depth[0] -= 1
            if _depth[0] == 0:
                libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
