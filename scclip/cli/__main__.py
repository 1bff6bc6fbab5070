"""``python -m scclip.cli`` (as under ``torchrun -m scclip.cli train ...``)."""

from __future__ import annotations

import sys

from scclip.cli import main

if __name__ == "__main__":
    sys.exit(main())
