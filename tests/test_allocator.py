"""Reusing freed memory on CPU (glibc, opt-in): a large block freed inside ``reuse_freed_memory`` comes back without
page faults; outside it (and again after leaving) every reuse faults page by page; off by default and on GPUs."""

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


@pytest.fixture
def opted_in(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "1")


def test_freed_blocks_are_reused_inside_and_returned_after(opted_in):
    pages = BLOCK * 4 // resource.getpagesize()
    assert faults_of_reuse() > pages // 2  # glibc default: a fresh mmap, every page faults again
    with reuse_freed_memory("cpu") as on:
        assert on is True
        assert faults_of_reuse() < pages // 20
    assert faults_of_reuse() > pages // 2  # defaults restored


def test_nested_use_keeps_reuse_until_the_outermost_leaves(opted_in):
    pages = BLOCK * 4 // resource.getpagesize()
    with reuse_freed_memory("cpu"):
        with reuse_freed_memory("cpu"):
            pass
        assert faults_of_reuse() < pages // 20


def test_off_by_default_and_on_gpu_devices(monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    pages = BLOCK * 4 // resource.getpagesize()
    with reuse_freed_memory("cpu") as on:
        assert on is False
        assert faults_of_reuse() > pages // 2
    monkeypatch.setenv(ENV_SWITCH, "1")
    with reuse_freed_memory("cuda") as on:
        assert on is False
