"""Weight averaging for training: a zero-debiased exponential moving average of a model's weights."""

from __future__ import annotations

import contextlib

import torch


class Ema:
    """Exponential moving average of a model's floating-point state (``decay`` per optimizer step).

    Zero-debiased (Adam's correction): after ``t`` steps the average weighs step ``i``'s weights by
    ``decay^(t-i)`` normalised to sum to one, so the initial weights carry no extra weight and short runs
    are not pulled back to their starting point (the per-step rate is ``1 - (1 - decay) / (1 - decay^t)``).
    Validation, the ``best`` checkpoint and hence the released model use the averaged weights; the ``last``
    checkpoint keeps the live weights and ``last_ema`` the average, so ``--resume`` continues both.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (1-based; restored from checkpoints on resume)."""
        decay = 1.0 - (1.0 - self.decay) / (1.0 - self.decay ** max(1, step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(live, strict=False)

    def copy_from(self, model: torch.nn.Module) -> None:
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}


def ema_context(ema: Ema | None, model: torch.nn.Module):
    return ema.applied(model) if ema is not None else contextlib.nullcontext(model)
