"""Training: settings, the CLIP loop on prepared sparse matrices, checkpoints, weight averaging, DDP.

Only :func:`scclip.train` (and the CLI's ``train``) import this package; embedding and the app never do. The
modules:

- ``_config``: :class:`TrainConfig`;
- ``_loop``: :func:`fit` (early stopping, validation, resumable), :func:`step_loss`, the optimizer;
- ``_checkpoint``: ``best`` / ``last`` checkpoints without pickle, committed atomically;
- ``_averaging``: the moving average of the weights that is validated and released;
- ``_distributed``: torchrun process groups and batch shards;
- ``_stream``: :class:`ChunkStream`, out-of-core batches from on-disk caches in a shuffled chunk order.
"""

from __future__ import annotations

from scclip.training._averaging import Ema, ema_context
from scclip.training._checkpoint import load_checkpoint, save_checkpoint
from scclip.training._config import OBJECTIVE_SETTINGS, TrainConfig, check_same_objective
from scclip.training._distributed import init_distributed, is_main_process, shard_batches, world_info
from scclip.training._loop import fit, make_optimizer, step_loss, validate, wrap_model
from scclip.training._stream import ChunkStream

__all__ = [
    "OBJECTIVE_SETTINGS",
    "ChunkStream",
    "Ema",
    "TrainConfig",
    "check_same_objective",
    "ema_context",
    "fit",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
    "shard_batches",
    "step_loss",
    "validate",
    "world_info",
    "wrap_model",
]
