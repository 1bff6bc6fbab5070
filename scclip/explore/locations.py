"""Where the app keeps things (cache, demo data, training runs) and which device it computes on."""

from __future__ import annotations

import os
from pathlib import Path

from scclip.explore.constants import REPO


def cache_dir() -> Path:
    """``$SCCLIP_CACHE_DIR``, else ``~/.cache/scclip``."""
    env = os.environ.get("SCCLIP_CACHE_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "scclip"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Where the real demo data live: ``$SCCLIP_DATA_DIR``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("SCCLIP_DATA_DIR")
    return Path(env).expanduser() if env else REPO.parent / "shared" / "data"


def runs_dir() -> Path:
    """Training runs: ``$SCCLIP_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("SCCLIP_RUNS_DIR", "runs")).expanduser()


def device_description() -> str:
    """``'CUDA GPU: <name>'`` or ``'CPU (n cores)'``."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, no CUDA GPU visible)"
