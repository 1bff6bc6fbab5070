"""Constants of the app helpers: modality labels and colours, demo file names, limits and
the category palette."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODALITY_LABELS = {"rna": "RNA", "atac": "ATAC"}
MODALITY_COLORS = {"RNA": "#1f77b4", "ATAC": "#e4572e"}
#: Cells drawn at most per plot by default; selections still cover every cell (computed on the server).
MAX_DRAWN = 150_000
MAX_DRAWN_ENV = "SCCLIP_MAX_DRAWN"
SNARE_FILE = "chen2019_snareseq_dev.h5mu"
SNARE_TEST_LIBRARIES = ("09I", "09J")
#: the app's default model: the CV fold model that never saw SNARE_TEST_LIBRARIES (an honest zero-shot demo)
SNARE_DEMO_MODEL = "mouse-cortex-snareseq-heldout-09IJ"
MODEL_ZIP_SUFFIXES = (".json", ".safetensors", ".tsv.gz", ".md")
MODEL_ZIP_MAX_BYTES = 2 * 1024**3
# 24 distinguishable colours (Plotly's Dark24 without near-greys, then Light24) for categories.
# Tableau 10, then Kelly's colours of maximum contrast: neighbouring categories stay tellable apart
PALETTE = [
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
    "#9C755F", "#BAB0AC", "#875692", "#008856", "#BE0032", "#F3C300", "#A1CAF1", "#882D17",
    "#8DB600", "#604E97", "#E68FAC", "#2B3D26", "#C2B280", "#DCD300", "#654522", "#F99379",
    "#E25822",
]  # fmt: skip
MISSING_COLOR = "#c8c8c8"


def max_drawn() -> int:
    """Cells drawn at most per plot: ``$SCCLIP_MAX_DRAWN`` (a positive integer, e.g. ``300000``) or
    :data:`MAX_DRAWN`. Selections and matches still use every cell. A value that is not a positive integer
    is reported with a warning and the default is used (the app still opens)."""
    raw = os.environ.get(MAX_DRAWN_ENV, "").strip()
    if not raw:
        return MAX_DRAWN
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        msg = (
            f"${MAX_DRAWN_ENV}={raw!r} is not a positive integer (the most cells drawn per plot); "
            f"using the default {MAX_DRAWN:,}"
        )
        warnings.warn(msg, UserWarning, stacklevel=2)
        return MAX_DRAWN
    return value
