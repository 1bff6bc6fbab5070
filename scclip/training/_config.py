"""Training settings (:class:`TrainConfig`) and the check that a resumed run keeps its objective."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from scclip.errors import ScclipError


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``lr`` peaks after ``warmup_frac`` of the steps and decays by cosine to ``lr * min_lr_frac``.
    Early stopping watches validation FOSCTTM with ``patience`` epochs. ``batch_size`` is the global batch: with
    several ranks each takes ``batch_size // world_size`` cells. ``compile`` wraps each Transformer block in
    ``torch.compile`` (parameter names, hence checkpoints, are unchanged). ``activation_checkpointing``
    recomputes each block in the backward pass (less memory, more compute, same numbers). ``precision``:
    ``auto`` = bf16 autocast on CUDA and fp32 on CPU; ``bf16`` or ``fp32`` force it (CPU bf16 autocast pays
    off on CPUs with native bf16 instructions, AVX512_BF16 or AMX, and is refused with an error on others,
    where it is emulated and ~17x slower: :func:`~scclip.model.encode.check_cpu_bf16`). ``intra_negatives``: weight of same-modality negatives in the
    CLIP loss (see :class:`~scclip.model.clip.ClipLoss`). ``ema_decay`` > 0 keeps an exponential moving average
    of the weights (per step) that is validated, checkpointed as ``best`` and released. ``structure_weight``
    > 0 adds the within-modality structure term of :mod:`scclip.model.structure` (similarities kept close to
    the cells' PCA / LSI coordinates, softmax temperature ``structure_temperature``; needs the SVD-initialised
    per-feature embedding); ``None`` (default) = 1.0 for such a model (the default preset) and 0 otherwise.
    ``max_steps`` stops after that many gradient steps in all (the schedule is fitted to them; benchmarks);
    ``None`` = all epochs.
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
    max_steps: int | None = None

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
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not self.max_steps >= 1):
            msg = f"max_steps must be a positive number of steps (None = all epochs), got {self.max_steps!r}"
            raise ScclipError(msg)
        if not self.structure_temperature > 0:
            msg = f"structure_temperature must be > 0, got {self.structure_temperature!r}"
            raise ScclipError(msg)

    @property
    def bf16(self) -> bool | None:
        """The ``bf16`` argument of :func:`scclip.model.encode.autocast` (None = the device's default)."""
        return None if self.precision == "auto" else self.precision == "bf16"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


#: Training settings that define the objective, with the value a checkpoint that predates the setting ran with.
OBJECTIVE_SETTINGS = {"intra_negatives": 0.0, "structure_weight": 0.0, "structure_temperature": 0.1}


def check_same_objective(saved: dict, cfg: TrainConfig) -> None:
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
