"""Process-group helpers for DistributedDataParallel training under ``torchrun`` (identities without one)."""

from __future__ import annotations

import atexit
import os

import numpy as np
import torch
import torch.distributed as dist

from scclip.errors import ScclipError


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the one process that writes files."""
    return world_info()[0] == 0


def init_distributed() -> tuple[int, int]:
    """Initialise ``torch.distributed`` from torchrun's environment when ``WORLD_SIZE > 1``.

    Backend NCCL when CUDA is available (the CUDA device is set from ``LOCAL_RANK``), gloo otherwise. A no-op
    when already initialised or when not launched by torchrun.

    Returns
    -------
    tuple
        ``(rank, world_size)``.
    """
    if dist.is_available() and dist.is_initialized():
        return world_info()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_destroy)
    return world_info()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(
    train_idx: np.ndarray, *, epoch: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """This rank's sorted rows of every step of one epoch.

    One seed-derived permutation per epoch (the same on every rank); rank ``r`` takes every ``world_size``-th
    cell from position ``r`` (``DistributedSampler`` with ``drop_last``) in chunks of ``batch_size //
    world_size``. The ranks' rows of step ``b`` together are exactly the single-process global batch ``b``;
    the last partial global batch is dropped, so every rank does the same number of steps.
    """
    local = batch_size // world_size
    if local < 1:
        msg = f"batch size {batch_size} is smaller than the number of processes ({world_size})"
        raise ScclipError(msg)
    order = np.random.default_rng(seed + epoch).permutation(np.asarray(train_idx))
    steps = max(1, len(order) // (local * world_size))
    mine = order[rank::world_size]
    return [np.sort(mine[b * local : (b + 1) * local]) for b in range(steps)]


def _collective_device() -> torch.device:
    """Where small collective tensors live: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_floats(values: list[float]) -> list[float]:
    """Rank 0's values on every rank (identity without a process group)."""
    if world_info()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over all ranks (identity without a process group)."""
    if world_info()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def barrier() -> None:
    if world_info()[1] > 1:
        dist.barrier()
