"""Reusing freed memory on CPU (glibc, opt-in): what ``reuse_freed_memory`` asks of malloc, in which order, and when
it does nothing. A fake libc records the calls: page-fault counts themselves depend on the kernel (transparent
huge pages) and on the heap's history, so the speed effect is measured by a benchmark (docs/benchmarks.md
section 12), not asserted here."""

from __future__ import annotations

import pytest

from scclip.model import allocator, reuse_freed_memory


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(allocator, "glibc", lambda: fake)
    monkeypatch.setenv(allocator.ENV_SWITCH, "1")
    return fake


def test_opted_in_it_disables_mmap_then_restores_glibc_and_trims(libc):
    with reuse_freed_memory("cpu") as on:
        assert on is True
        assert libc.calls == [
            ("mallopt", allocator.M_MMAP_MAX, 0),
            ("mallopt", allocator.M_TRIM_THRESHOLD, 2**31 - 1),
        ]
    assert libc.calls[2:] == [
        ("mallopt", allocator.M_MMAP_MAX, allocator.GLIBC_MMAP_MAX),
        ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.GLIBC_TRIM_THRESHOLD),
        ("malloc_trim", 0),
    ]


def test_nested_use_restores_only_when_the_outermost_leaves(libc):
    with reuse_freed_memory("cpu"):
        with reuse_freed_memory("cpu"):
            pass
        assert len(libc.calls) == 2  # the inner exit changed nothing
    assert libc.calls[-1] == ("malloc_trim", 0) and len(libc.calls) == 5


def test_restored_even_when_the_block_raises(libc):
    with pytest.raises(RuntimeError), reuse_freed_memory("cpu"):
        raise RuntimeError("boom")
    assert libc.calls[-1] == ("malloc_trim", 0)


def test_off_by_default_and_on_gpu_devices(libc, monkeypatch):
    with reuse_freed_memory("cuda") as on:
        assert on is False
    monkeypatch.delenv(allocator.ENV_SWITCH)
    with reuse_freed_memory("cpu") as on:
        assert on is False
    assert libc.calls == []
