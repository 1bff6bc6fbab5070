"""Keys and names shared across the package, each defined once here."""

from __future__ import annotations

#: The two modalities, in the order every table, report and model uses.
MODALITIES = ("rna", "atac")
#: ``.obsm`` key of the joint (gap-closed) embedding; ``f"{EMBED_KEY}_raw"`` holds the model's own one.
EMBED_KEY = "X_scclip"
#: ``.uns`` key of what ``embed`` did (model, pairing, coverage, gap correction).
UNS_KEY = "scclip"


def raw_key(key: str = EMBED_KEY) -> str:
    """``.obsm`` key of the raw (per-modality, not gap-closed) embedding stored next to ``key``."""
    return f"{key}_raw"
