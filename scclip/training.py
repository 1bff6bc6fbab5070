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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from scclip.averaging import Ema, ema_context
from scclip.checkpoint import load_checkpoint, save_checkpoint
from scclip.distributed import (
    _barrier,
    _broadcast_floats,
    _mean_over_ranks,
    init_distributed,
    shard_batches,
    world_info,
)
from scclip.errors import ScclipError
from scclip.model import ClipLoss, ScCLIP
from scclip.model.patch import SparseBatch
from scclip.model.structure import resolve_structure_weight, structure_term


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``lr`` peaks after ``warmup_frac`` of the steps and decays by cosine to ``lr * min_lr_frac``.
    Early stopping watches validation FOSCTTM with ``patience`` epochs. ``batch_size`` is the global batch: with
    several ranks each takes ``batch_size // world_size`` cells. ``compile`` wraps each Transformer block in
    ``torch.compile`` (parameter names, hence checkpoints, are unchanged). ``activation_checkpointing``
    recomputes each block in the backward pass (less memory, more compute, same numbers). ``precision``:
    ``auto`` = bf16 autocast on CUDA and fp32 on CPU; ``bf16`` or ``fp32`` force it (CPU bf16 autocast pays
    off on CPUs with native bf16 instructions). ``intra_negatives``: weight of same-modality negatives in the
    CLIP loss (see :class:`~scclip.model.clip.ClipLoss`). ``ema_decay`` > 0 keeps an exponential moving average
    of the weights (per step) that is validated, checkpointed as ``best`` and released. ``structure_weight``
    > 0 adds the within-modality structure term of :mod:`scclip.model.structure` (similarities kept close to
    the cells' PCA / LSI coordinates, softmax temperature ``structure_temperature``; needs the SVD-initialised
    per-feature embedding); ``None`` (default) = 1.0 for such a model (the default preset) and 0 otherwise.
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int = 8
    intra_negatives: float = 0.0
    structure_weight: float | None = None
    structure_temperature: float = 0.1
    ema_decay: float = 0.98
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            msg = f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}"
            raise ScclipError(msg)
        if self.structure_weight is not None and not self.structure_weight >= 0:
            msg = f"structure_weight must be >= 0 (0 = off; None = automatic), got {self.structure_weight!r}"
            raise ScclipError(msg)
        if not self.intra_negatives >= 0:
            msg = f"intra_negatives must be >= 0 (0 = plain CLIP), got {self.intra_negatives!r}"
            raise ScclipError(msg)
        if not self.structure_temperature > 0:
            msg = f"structure_temperature must be > 0, got {self.structure_temperature!r}"
            raise ScclipError(msg)

    @property
    def bf16(self) -> bool | None:
        """The ``bf16`` argument of :func:`autocast` (None = the device's default)."""
        return None if self.precision == "auto" else self.precision == "bf16"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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


#: Training settings that define the objective, with the value a checkpoint that predates the setting ran with.
OBJECTIVE_SETTINGS = {"intra_negatives": 0.0, "structure_weight": 0.0, "structure_temperature": 0.1}


def _check_same_objective(saved: dict, cfg: TrainConfig) -> None:
    """A resumed run must optimise the loss it started with (a changed default must not switch it mid-run)."""
    for name, before in OBJECTIVE_SETTINGS.items():
        was, now = float(saved.get(name, before)), float(getattr(cfg, name))
        if was != now:
            cli = (
                f" (scclip train --{name.replace('_', '-')} {was:g})"
                if name != "structure_temperature"
                else ""
            )
            msg = (
                f"this run was trained with {name}={was:g} but the resumed run asks for {now:g}; resume with "
                f"{name}={was:g}{cli} or start a new run folder"
            )
            raise ScclipError(msg)


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
) -> dict:
    """Train with early stopping; returns the history and the best validation metrics.

    Parameters
    ----------
    X_rna, X_atac
        CSR matrices (cells x model features), preprocessed; row i of both is the same cell.
    train_idx, val_idx
        Rows used for gradient steps and for validation / early stopping.
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
    rank, world = init_distributed()
    main = rank == 0
    progress = progress if main else None
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    device = next(model.parameters()).device
    if world > 1 and device.type == "cuda" and device.index != torch.cuda.current_device():
        device = torch.device("cuda", torch.cuda.current_device())
        model.to(device)
    torch.manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, len(train_idx))
    batch_size -= batch_size % world  # the global batch: world_size equal shards
    steps_per_epoch = len(
        shard_batches(train_idx, epoch=0, seed=cfg.seed, batch_size=batch_size, rank=rank, world_size=world)
    )
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, cfg.epochs * steps_per_epoch))
    loss_fn = ClipLoss(intra_negatives=cfg.intra_negatives)
    cfg = replace(cfg, structure_weight=resolve_structure_weight(cfg.structure_weight, model.cfg))
    state = {
        "epoch": 0,
        "step": 0,
        "best_foscttm": float("inf"),
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
        "elapsed": 0.0,
    }
    if not 0.0 <= cfg.ema_decay < 1.0:
        msg = f"ema_decay must be in [0, 1), got {cfg.ema_decay}"
        raise ScclipError(msg)
    ema = Ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if resume:
        if ema is not None and (ckpt_dir / "last_ema.safetensors").is_file():
            load_checkpoint(ckpt_dir / "last_ema", model=model)
            ema.copy_from(model)
        meta = load_checkpoint(ckpt_dir / "last", model=model, optimizer=optimizer)
        _check_same_objective(meta.get("train_config", {}), cfg)
        state.update(meta["state"])
        scheduler.last_epoch = state["step"]
    if world > 1:  # different feature-dropout draws per rank (a resume restored rank 0's RNG everywhere)
        torch.manual_seed(cfg.seed + 1_000_003 * rank + state["step"])
    step_model = wrap_model(model, cfg)
    t0 = time.perf_counter() - state["elapsed"]
    meta_common = {"train_config": cfg.to_dict(), "model_config": model.cfg.to_dict(), **(extra_meta or {})}
    val_idx = np.asarray(val_idx)
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        batches = shard_batches(
            train_idx, epoch=epoch, seed=cfg.seed, batch_size=batch_size, rank=rank, world_size=world
        )
        losses = []
        for b, rows in enumerate(batches):
            rna = SparseBatch.from_csr(X_rna[rows], device=device)
            atac = SparseBatch.from_csr(X_atac[rows], device=device)
            loss = step_loss(model, step_model, loss_fn, rna, atac, cfg, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            if ema is not None:
                ema.update(model, state["step"])
            losses.append(loss.item())
            if progress and b % 20 == 0:
                progress(
                    {
                        "event": "step",
                        "epoch": epoch,
                        "step": state["step"],
                        "loss": losses[-1],
                        "steps_per_epoch": steps_per_epoch,
                        "epochs": cfg.epochs,
                    }
                )
        val = {"foscttm": float("nan"), "top1": float("nan")}
        if main and len(val_idx) > 1:
            with ema_context(ema, model):
                val = validate(model, X_rna[val_idx], X_atac[val_idx], bf16=cfg.bf16)
        val["foscttm"], val["top1"] = _broadcast_floats([val["foscttm"], val["top1"]])
        state["epoch"] = epoch + 1
        state["elapsed"] = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "loss": _mean_over_ranks(float(np.mean(losses))),
            "val_foscttm": val["foscttm"],
            "val_top1": val["top1"],
            "temperature": float(1 / model.scale().detach()),
            "elapsed": state["elapsed"],
        }
        state["history"].append(record)
        improved = len(val_idx) <= 1 or val["foscttm"] < state["best_foscttm"] - 1e-4
        if improved:
            state["best_foscttm"], state["best_epoch"], state["bad_epochs"] = val["foscttm"], epoch + 1, 0
        else:
            state["bad_epochs"] += 1
        if main:
            meta = {"state": state, **meta_common}
            with ema_context(ema, model):
                if improved:
                    save_checkpoint(ckpt_dir / "best", model=model, optimizer=optimizer, meta=meta)
                if ema is not None:
                    save_checkpoint(ckpt_dir / "last_ema", model=model, optimizer=optimizer, meta=meta)
            save_checkpoint(ckpt_dir / "last", model=model, optimizer=optimizer, meta=meta)
        if progress:
            progress({"event": "epoch", **record, "best_epoch": state["best_epoch"], "epochs": cfg.epochs})
    _barrier()  # rank 0's checkpoints are on disk before anyone reads them
    load_checkpoint(ckpt_dir / "best", model=model)
    model.eval()
    result = {
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "best_val_foscttm": state["best_foscttm"],
        "epochs_run": state["epoch"],
        "stopped_early": state["bad_epochs"] >= cfg.patience,
        "train_seconds": state["elapsed"],
        "steps": state["step"],
        "device": str(device),
        "world_size": world,
    }
    if progress:
        progress({"event": "done", **result})
    return result
