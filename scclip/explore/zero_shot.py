"""Zero-shot cell typing: the model's reference cells and per-label centroids."""

from __future__ import annotations

from pathlib import Path

import mudata as md
import numpy as np

from scclip.explore.constants import REPO
from scclip.explore.locations import data_dir


def reference_file(model_summary: dict | None) -> Path | None:
    """The model's training data file when it is available locally (as recorded in its summary)."""
    s = model_summary or {}
    data = s.get("data")
    if not data or "synthetic" in str(data):
        return None
    p = Path(str(data)).expanduser()
    for c in (p, Path.cwd() / p, REPO / p, data_dir() / p.name):
        if c.is_file():
            return c
    return None


def load_reference(path: Path, model_summary: dict | None) -> md.MuData:
    """The model's training cells: ``path`` without the held-out cells recorded in the summary."""
    from scclip.io import paired_cells, read

    mdata = read(path)
    if set(mdata.mod) >= {"rna", "atac"}:
        mdata = paired_cells(mdata)
    hold = (model_summary or {}).get("holdout") or {}
    key, values = hold.get("key"), [str(v) for v in hold.get("values") or []]
    if key and values:
        mods = {}
        for m in mdata.mod:
            a = mdata[m]
            if key in a.obs:
                a = a[~a.obs[key].astype(str).isin(values).to_numpy()].copy()
            mods[m] = a
        mdata = md.MuData(mods)
    return mdata


def parse_centroids(centroids) -> tuple[list[str], np.ndarray] | None:
    """Per-label centroids of a model (``centroids.json``) as (labels, unit-norm matrix), or None."""
    if not centroids:
        return None
    c = centroids
    if isinstance(c, dict) and "centroids" in c:
        inner = c["centroids"]
        if isinstance(inner, dict):
            c = inner
        elif "labels" in c:
            c = dict(zip(map(str, c["labels"]), inner, strict=False))
    if not isinstance(c, dict):
        return None
    try:
        labels = [str(k) for k, v in c.items() if isinstance(v, list) and v and isinstance(v[0], int | float)]
        M = np.asarray([c[k] for k in labels], dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if M.ndim != 2 or not len(labels):
        return None
    return labels, M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)


def nearest_centroid(Z: np.ndarray, labels: list[str], M: np.ndarray, temperature: float = 0.05):
    """Label = most similar centroid; confidence = softmax over centroids at ``temperature``."""
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    S = Zn @ M.T / temperature
    S -= S.max(1, keepdims=True)
    P = np.exp(S)
    P /= P.sum(1, keepdims=True)
    best = P.argmax(1)
    return np.asarray(labels, dtype=object)[best], P[np.arange(len(best)), best]


def cell_count_text(emb) -> str:
    """How many cells an embedded MuData holds, counting a paired cell once: ``"6,968 cells (RNA + ATAC)"``
    when paired, ``"1,000 RNA + 900 ATAC cells"`` when not, ``"500 RNA cells"`` for one modality."""
    mods = [m for m in ("rna", "atac") if m in emb.mod]
    labels = {"rna": "RNA", "atac": "ATAC"}
    if len(mods) == 2:
        rna, atac = emb["rna"].obs_names, emb["atac"].obs_names
        shared = int(rna.isin(atac).sum())
        if shared == len(rna) == len(atac):
            return f"{shared:,} cells (RNA + ATAC)"
        return f"{len(rna):,} RNA + {len(atac):,} ATAC cells" + (f" ({shared:,} paired)" if shared else "")
    return f"{emb[mods[0]].n_obs:,} {labels[mods[0]]} cells" if mods else "0 cells"
