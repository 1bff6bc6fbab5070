"""The CLIP training loop on prepared sparse matrices (no AnnData here).

``fit`` trains a :class:`~scclip.model.ScCLIP` on paired rows of two CSR matrices (already in the model's
feature space and preprocessed), validates every epoch (top-1 and FOSCTTM on held-out training-library
cells), stops early, and writes ``best`` and ``last`` checkpoints atomically; ``resume=True`` continues from
``last``.

Distributed data parallel: under ``torchrun`` (``WORLD_SIZE > 1``) ``fit`` initialises the process group
(:func:`init_distributed`; NCCL on GPUs, gloo on CPU), wraps the model in ``DistributedDataParallel`` and gives
every rank ``batch_size // world_size`` cells of each global batch (:func:`shard_batches`, the slices of
``DistributedSampler`` with ``drop_last``). The CLIP loss gathers the features of all ranks with gradients, so
a step equals one process's step on the global batch. Validation runs on rank 0 and its result is broadcast;
only rank 0 writes checkpoints and calls ``progress``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from scclip.errors import ScclipError
from scclip.model import ClipLoss, ScCLIP
from scclip.model.allocator import reuse_freed_memory
from scclip.model.encode import autocast, check_cpu_bf16, encode_csr
from scclip.model.patch import SparseBatch
from scclip.model.structure import resolve_structure_weight, structure_term
from scclip.training._averaging import Ema, ema_context
from scclip.training._checkpoint import load_checkpoint, save_checkpoint
from scclip.training._config import TrainConfig, check_same_objective
from scclip.training._distributed import (
    barrier,
    broadcast_floats,
    init_distributed,
    mean_over_ranks,
    shard_batches,
    world_info,
)
from scclip.training._stream import ChunkStream


def step_loss(
    model: ScCLIP, step_model, loss_fn: ClipLoss, rna, atac, cfg: TrainConfig, device
) -> torch.Tensor:
    """One training step's loss: CLIP under the precision switch, plus the structure term in fp32 (small (B, B)
    matrices) when ``cfg.structure_weight`` (resolved, see :func:`~scclip.model.structure.resolve_structure_weight`)
    is above 0. ``step_model`` is ``model`` as wrapped for the step (DDP, compile)."""
    with autocast(device, bf16=cfg.bf16):
        zr, za, scale = step_model(rna, atac)
        loss = loss_fn(zr, za, scale)
    if cfg.structure_weight:
        parts = {"rna": (rna, zr), "atac": (atac, za)}
        loss = loss + cfg.structure_weight * structure_term(
            model, parts, temperature=cfg.structure_temperature
        )
    return loss


def validate(model: ScCLIP, X_rna, X_atac, *, batch_size: int = 1024, bf16: bool | None = None) -> dict:
    """Top-1 and FOSCTTM (means of both directions) on paired cells, from one similarity pass."""
    from scclip.metrics import paired_metrics

    zr = encode_csr(model, "rna", X_rna, batch_size=batch_size, bf16=bf16)
    za = encode_csr(model, "atac", X_atac, batch_size=batch_size, bf16=bf16)
    m = paired_metrics(zr, za, ks=(1,), temperatures=())
    return {"foscttm": float(m["foscttm"]["mean"]), "top1": float(m["top1"]["mean"])}


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = max(1, int(cfg.warmup_frac * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def make_optimizer(model: ScCLIP, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, positions, [CLS] and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(("pos", "cls", "bias")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def wrap_model(model: ScCLIP, cfg: TrainConfig) -> torch.nn.Module:
    """The module that training steps call: ``DistributedDataParallel`` when distributed, and with
    ``cfg.compile`` each Transformer block compiled in place (state-dict keys unchanged)."""
    for enc in model.encoders.values():
        enc.checkpoint_blocks = cfg.activation_checkpointing
    if cfg.compile:
        for enc in model.encoders.values():
            for block in enc.blocks:
                block.compile()
    if world_info()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (patch layout) are constants: no per-step broadcast.
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


@dataclass
class _Run:
    """What the steps of one :func:`fit` call share."""

    model: ScCLIP
    step_model: torch.nn.Module  # ``model`` as wrapped for the step (DDP, compile)
    loss_fn: ClipLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: Ema | None
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    batch_size: int  # global batch: ``world`` equal shards
    steps_per_epoch: int
    ckpt_dir: Path
    progress: Callable[[dict], None] | None
    state: dict = field(default_factory=dict)

    stream: ChunkStream | None = None

    def batches(self, X_rna, X_atac, train_idx: np.ndarray, epoch: int) -> Iterator[tuple]:
        """This rank's ``(RNA, ATAC)`` rows of every global batch of ``epoch``: from ``X_rna`` / ``X_atac``, or
        streamed from disk by :attr:`stream`."""
        if self.stream is not None:
            for _, rna, atac in self.stream.batches(
                epoch, batch_size=self.batch_size, rank=self.rank, world_size=self.world
            ):
                yield rna, atac
            return
        for rows in shard_batches(
            train_idx, epoch=epoch, seed=self.cfg.seed, batch_size=self.batch_size, rank=self.rank,
            world_size=self.world,
        ):  # fmt: skip
            yield X_rna[rows], X_atac[rows]


def _start_run(model: ScCLIP, train_idx, cfg: TrainConfig, ckpt_dir: Path, progress, stream=None) -> _Run:
    """Process group, device, seeded optimizer / schedule / loss / weight average, in the order that makes a
    seeded run reproducible."""
    rank, world = init_distributed()
    device = next(model.parameters()).device
    if world > 1 and device.type == "cuda" and device.index != torch.cuda.current_device():
        device = torch.device("cuda", torch.cuda.current_device())
        model.to(device)
    if cfg.bf16:  # fails before the first step on a CPU without native bf16
        check_cpu_bf16(device)
    torch.manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, len(train_idx))
    batch_size -= batch_size % world  # the global batch: world_size equal shards
    if stream is not None:
        steps_per_epoch = stream.n_steps(batch_size=batch_size, world_size=world)
    else:
        shards = shard_batches(
            train_idx, epoch=0, seed=cfg.seed, batch_size=batch_size, rank=rank, world_size=world
        )
        steps_per_epoch = len(shards)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg, min(total_steps, cfg.max_steps or total_steps))
    )
    loss_fn = ClipLoss(intra_negatives=cfg.intra_negatives)
    cfg = replace(cfg, structure_weight=resolve_structure_weight(cfg.structure_weight, model.cfg))
    if not 0.0 <= cfg.ema_decay < 1.0:
        msg = f"ema_decay must be in [0, 1), got {cfg.ema_decay}"
        raise ScclipError(msg)
    ema = Ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    state = {
        "epoch": 0,
        "step": 0,
        "best_foscttm": float("inf"),
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
        "elapsed": 0.0,
    }
    return _Run(
        model, model, loss_fn, optimizer, scheduler, ema, cfg, device, rank, world, batch_size,
        steps_per_epoch, ckpt_dir, progress if rank == 0 else None, state, stream,
    )  # fmt: skip


def _resume(run: _Run) -> None:
    """Continue from the ``last`` checkpoint (and its weight average): weights, optimizer, schedule, state."""
    if run.ema is not None and (run.ckpt_dir / "last_ema.safetensors").is_file():
        load_checkpoint(run.ckpt_dir / "last_ema", model=run.model)
        run.ema.copy_from(run.model)
    meta = load_checkpoint(run.ckpt_dir / "last", model=run.model, optimizer=run.optimizer)
    check_same_objective(meta.get("train_config", {}), run.cfg)
    run.state.update(meta["state"])
    run.scheduler.last_epoch = run.state["step"]


def _train_epoch(run: _Run, X_rna, X_atac, train_idx: np.ndarray, epoch: int) -> list[float]:
    """One pass over this rank's batches: gradient steps, weight average, step progress; the step losses."""
    run.model.train()
    losses = []
    for b, (rna_rows, atac_rows) in enumerate(run.batches(X_rna, X_atac, train_idx, epoch)):
        if run.cfg.max_steps and run.state["step"] >= run.cfg.max_steps:
            break
        rna = SparseBatch.from_csr(rna_rows, device=run.device)
        atac = SparseBatch.from_csr(atac_rows, device=run.device)
        loss = step_loss(run.model, run.step_model, run.loss_fn, rna, atac, run.cfg, run.device)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        run.state["step"] += 1
        if run.ema is not None:
            run.ema.update(run.model, run.state["step"])
        losses.append(loss.item())
        if run.progress and b % 20 == 0:
            run.progress(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": run.state["step"],
                    "loss": losses[-1],
                    "steps_per_epoch": run.steps_per_epoch,
                    "epochs": run.cfg.epochs,
                }
            )
    return losses


def _end_epoch(
    run: _Run, X_rna, X_atac, val_idx: np.ndarray, losses: list[float], t0: float
) -> tuple[dict, bool]:
    """Validate (rank 0, on the weight average; broadcast), record the epoch, update early stopping:
    (history record, whether validation improved)."""
    state, epoch = run.state, run.state["epoch"]
    val = {"foscttm": float("nan"), "top1": float("nan")}
    if run.rank == 0 and len(val_idx) > 1:
        with ema_context(run.ema, run.model):
            val = validate(run.model, X_rna[val_idx], X_atac[val_idx], bf16=run.cfg.bf16)
    val["foscttm"], val["top1"] = broadcast_floats([val["foscttm"], val["top1"]])
    state["epoch"] = epoch + 1
    state["elapsed"] = time.perf_counter() - t0
    record = {
        "epoch": epoch + 1,
        "loss": mean_over_ranks(float(np.mean(losses))),
        "val_foscttm": val["foscttm"],
        "val_top1": val["top1"],
        "temperature": float(1 / run.model.scale().detach()),
        "elapsed": state["elapsed"],
    }
    state["history"].append(record)
    improved = len(val_idx) <= 1 or val["foscttm"] < state["best_foscttm"] - 1e-4
    if improved:
        state["best_foscttm"], state["best_epoch"], state["bad_epochs"] = val["foscttm"], epoch + 1, 0
    else:
        state["bad_epochs"] += 1
    return record, improved


def _save_checkpoints(run: _Run, improved: bool, meta: dict) -> None:
    """Rank 0: ``best`` (when improved) and ``last_ema`` hold the weight average, ``last`` the raw weights."""
    if run.rank != 0:
        return
    kw = {"model": run.model, "optimizer": run.optimizer, "meta": meta}
    with ema_context(run.ema, run.model):
        if improved:
            save_checkpoint(run.ckpt_dir / "best", **kw)
        if run.ema is not None:
            save_checkpoint(run.ckpt_dir / "last_ema", **kw)
    save_checkpoint(run.ckpt_dir / "last", **kw)


def _steps_done(cfg: TrainConfig, state: dict) -> bool:
    """Whether ``cfg.max_steps`` (when set) gradient steps have run."""
    return bool(cfg.max_steps) and state["step"] >= cfg.max_steps


def fit(
    model: ScCLIP,
    X_rna,
    X_atac,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    extra_meta: dict | None = None,
    stream: ChunkStream | None = None,
) -> dict:
    """Train with early stopping; returns the history and the best validation metrics.

    Parameters
    ----------
    X_rna, X_atac
        CSR matrices (cells x model features), preprocessed; row i of both is the same cell.
    train_idx, val_idx
        Rows used for gradient steps and for validation / early stopping.
    stream
        Out of core: draw the training batches from this :class:`~scclip.training.ChunkStream` (its rows are
        ``train_idx``) instead of ``X_rna[train_idx]``; ``X_rna`` / ``X_atac`` then need only the ``val_idx``
        rows (e.g. the validation cells in memory, ``val_idx = arange``).
    progress
        Called after every epoch (and every ~20 steps) with a dict: ``event`` ("step"/"epoch"/"done"),
        ``epoch``, ``step``, ``loss``, validation metrics, ``elapsed``. Rank 0 only.

    Notes
    -----
    Launched by torchrun, every rank calls ``fit`` with the same arguments (see the module docstring).
    """
    if len(train_idx) < 2:
        msg = f"need at least 2 training cells, got {len(train_idx)}"
        raise ScclipError(msg)
    run = _start_run(model, train_idx, cfg, Path(out_dir) / "checkpoints", progress, stream)
    cfg, state = run.cfg, run.state
    if resume:
        _resume(run)
    if run.world > 1:  # different feature-dropout draws per rank (a resume restored rank 0's RNG everywhere)
        torch.manual_seed(cfg.seed + 1_000_003 * run.rank + state["step"])
    run.step_model = wrap_model(model, cfg)
    t0 = time.perf_counter() - state["elapsed"]
    meta_common = {"train_config": cfg.to_dict(), "model_config": model.cfg.to_dict(), **(extra_meta or {})}
    val_idx = np.asarray(val_idx)
    with reuse_freed_memory(run.device):  # opt-in (SCCLIP_REUSE_FREED_MEMORY=1): glibc reuses freed blocks
        while (
            state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience and not _steps_done(cfg, state)
        ):
            losses = _train_epoch(run, X_rna, X_atac, train_idx, state["epoch"])
            record, improved = _end_epoch(run, X_rna, X_atac, val_idx, losses, t0)
            _save_checkpoints(run, improved, {"state": state, **meta_common})
            if run.progress:
                run.progress(
                    {"event": "epoch", **record, "best_epoch": state["best_epoch"], "epochs": cfg.epochs}
                )
    barrier()  # rank 0's checkpoints are on disk before anyone reads them
    load_checkpoint(run.ckpt_dir / "best", model=model)
    model.eval()
    result = {
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "best_val_foscttm": state["best_foscttm"],
        "epochs_run": state["epoch"],
        "stopped_early": state["bad_epochs"] >= cfg.patience,
        "train_seconds": state["elapsed"],
        "steps": state["step"],
        "device": str(run.device),
        "world_size": run.world,
    }
    if run.progress:
        run.progress({"event": "done", **result})
    return result
