"""Entry point of the training subprocess: ``python -m scclip.explore train RUN_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

from scclip.explore.training_runner import train_main

if __name__ == "__main__":  # pragma: no cover - the training subprocess
    if len(sys.argv) == 3 and sys.argv[1] == "train":
        sys.exit(train_main(Path(sys.argv[2])))
    print("usage: python -m scclip.explore train RUN_DIR", file=sys.stderr)
    sys.exit(2)
