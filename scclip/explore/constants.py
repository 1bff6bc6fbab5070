"""Constants of the app helpers: the embedding key, modality labels and colours, demo file names, limits and
the category palette."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMBED_KEY = "X_scclip"
MODALITY_LABELS = {"rna": "RNA", "atac": "ATAC"}
MODALITY_COLORS = {"RNA": "#1f77b4", "ATAC": "#e4572e"}
#: Cells drawn at most per plot; selections still cover every cell (computed on the server).
MAX_DRAWN = 60_000
SNARE_FILE = "chen2019_snareseq_dev.h5mu"
SNARE_TEST_LIBRARIES = ("09I", "09J")
MODEL_ZIP_SUFFIXES = (".json", ".safetensors", ".tsv.gz", ".md")
MODEL_ZIP_MAX_BYTES = 2 * 1024**3
# 24 distinguishable colours (Plotly's Dark24 without near-greys, then Light24) for categories.
PALETTE = [
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#B68100", "#750D86", "#EB663B",
    "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16",
    "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038", "#22FFA7",
    "#FD3216", "#00FE35", "#6A76FC", "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616",
]  # fmt: skip
MISSING_COLOR = "#c8c8c8"
