"""Reusing freed memory on CPU (glibc): a large block freed inside ``reuse_freed_memory`` comes back without page
faults; outside it (and again after leaving) every reuse faults page by page; the switch and GPUs turn it off."""

from __future__ import annotations

import resource

import pytest
import torch

from scclip.model import reuse_freed_memory
from scclip.model.allocator import ENV_SWITCH, glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="needs Linux with glibc (mallopt)")
BLOCK = 64 * 2**20 // 4  # float32 elements of a 64 MB block: above glibc's largest mmap threshold (32 MB)


def faults_of_reuse() -> int:
    """Minor page faults of allocating, filling and freeing a 64 MB tensor a second time."""
    torch.empty(BLOCK).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(BLOCK).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_blocks_are_reused_inside_and_returned_after():
    pages = BLOCK * 4 // resource.getpagesize()
    assert faults_of_reuse() > pages // 2  # glibc default: a fresh mmap, every page faults again
    with reuse_freed_memory("cpu") as on:
        assert on is True
        assert faults_of_reuse() < pages // 20
    assert faults_of_reuse() > pages // 2  # defaults restored


def test_nested_use_keeps_reuse_until_the_outermost_leaves():
    pages = BLOCK * 4 // resource.getpagesize()
    with reuse_freed_memory("cpu"):
        with reuse_freed_memory("cpu"):
            pass
        assert faults_of_reuse() < pages // 20


def test_switch_and_gpu_devices_turn_it_off(monkeypatch):
    with reuse_freed_memory("cuda") as on:
        assert on is False
    monkeypatch.setenv(ENV_SWITCH, "0")
    with reuse_freed_memory("cpu") as on:
        assert on is False
