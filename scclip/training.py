"""The CLIP training loop on prepared sparse matrices (no AnnData here).

``fit`` trains a :class:`~scclip.model.ScCLIP` on paired rows of two CSR matrices (already in the model's
feature space and preprocessed), validates every epoch (top-1 and FOSCTTM on held-out training-library
cells), stops early, and writes ``best`` and ``last`` checkpoints atomically; ``resume=True`` continues from
``last``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from scclip.checkpoint import load_checkpoint, save_checkpoint
from scclip.errors import ScclipError
from scclip.model import ClipLoss, ScCLIP
from scclip.model.patch import SparseBatch


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``lr`` peaks after ``warmup_frac`` of the steps and decays by cosine to ``lr * min_lr_frac``.
    Early stopping watches validation FOSCTTM with ``patience`` epochs.
    """

    epochs: int = 40
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.05
    grad_clip: float = 1.0
    patience: int = 8
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        msg = "--device cuda was asked for but no CUDA GPU is visible to torch; use --device auto or cpu"
        raise ScclipError(msg)
    if device not in ("cpu",) and not device.startswith("cuda"):
        msg = f"unknown device {device!r}; use auto, cpu or cuda"
        raise ScclipError(msg)
    return torch.device(device)


def autocast(device: torch.device):
    """The one precision switch: bf16 autocast on CUDA, a no-op on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def encode_csr(model: ScCLIP, modality: str, X, *, batch_size: int = 1024, device=None) -> np.ndarray:
    """Embed every row of a CSR matrix in batches (eval mode); only one batch is ever dense."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((X.shape[0], model.cfg.proj_dim), dtype=np.float32)
    for lo in range(0, X.shape[0], batch_size):
        batch = SparseBatch.from_csr(X[lo : lo + batch_size], device=device)
        with autocast(device):
            out[lo : lo + batch_size] = model.encode(modality, batch).float().cpu().numpy()
    model.train(was_training)
    return out


def validate(model: ScCLIP, X_rna, X_atac, *, batch_size: int = 1024) -> dict:
    """Top-1 and FOSCTTM (means of both directions) on paired cells, from one similarity pass."""
    from scclip.metrics import paired_metrics

    zr = encode_csr(model, "rna", X_rna, batch_size=batch_size)
    za = encode_csr(model, "atac", X_atac, batch_size=batch_size)
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
        ``epoch``, ``step``, ``loss``, validation metrics, ``elapsed``.
    """
    if len(train_idx) < 2:
        msg = f"need at least 2 training cells, got {len(train_idx)}"
        raise ScclipError(msg)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, len(train_idx))
    steps_per_epoch = max(1, len(train_idx) // batch_size)  # drop the last partial batch: InfoNCE wants N > 1
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, cfg.epochs * steps_per_epoch))
    loss_fn = ClipLoss()
    state = {
        "epoch": 0,
        "step": 0,
        "best_foscttm": float("inf"),
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
        "elapsed": 0.0,
    }
    if resume:
        meta = load_checkpoint(ckpt_dir / "last", model=model, optimizer=optimizer)
        state.update(meta["state"])
        scheduler.last_epoch = state["step"]
    t0 = time.perf_counter() - state["elapsed"]
    meta_common = {"train_config": cfg.to_dict(), "model_config": model.cfg.to_dict(), **(extra_meta or {})}
    val_idx = np.asarray(val_idx)
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        order = np.random.default_rng(cfg.seed + epoch).permutation(np.asarray(train_idx))
        losses = []
        for b in range(steps_per_epoch):
            rows = np.sort(order[b * batch_size : (b + 1) * batch_size])
            rna = SparseBatch.from_csr(X_rna[rows], device=device)
            atac = SparseBatch.from_csr(X_atac[rows], device=device)
            with autocast(device):
                zr, za, scale = model(rna, atac)
                loss = loss_fn(zr, za, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
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
        val = (
            validate(model, X_rna[val_idx], X_atac[val_idx])
            if len(val_idx) > 1
            else {"foscttm": float("nan"), "top1": float("nan")}
        )
        state["epoch"] = epoch + 1
        state["elapsed"] = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
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
        meta = {"state": state, **meta_common}
        if improved:
            save_checkpoint(ckpt_dir / "best", model=model, optimizer=optimizer, meta=meta)
        save_checkpoint(ckpt_dir / "last", model=model, optimizer=optimizer, meta=meta)
        if progress:
            progress({"event": "epoch", **record, "best_epoch": state["best_epoch"], "epochs": cfg.epochs})
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
    }
    if progress:
        progress({"event": "done", **result})
    return result
