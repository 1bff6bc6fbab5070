"""Helpers behind the Streamlit app (``app.py``): pure Python, no Streamlit import.

* demo datasets and the app's default (model, dataset);
* fingerprints and an on-disk cache of embeddings and UMAP coordinates per (model, dataset);
* the joint cell table (RNA cells, then ATAC cells: one global index per cell) and its UMAP;
* plotly figures with one ``Scattergl`` trace whose ``customdata`` is the global cell index, and the mapping
  from a plotly selection event (click, box, lasso) back to cells, computed for all cells on the server;
* cross-modal partners of a cell or a group, one-to-one matching and label transfer tables;
* reading uploads (and a safety check for zipped model folders);
* a background training runner (a subprocess running :func:`scclip.train` that writes ``progress.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from scclip.errors import ScclipError

REPO = Path(__file__).resolve().parents[1]
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


# --------------------------------------------------------------------------- locations
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


# --------------------------------------------------------------------------- demo datasets
@dataclass
class Demo:
    key: str
    label: str
    description: str
    available: bool = True
    reason: str = ""


def list_demos() -> list[Demo]:
    snare = data_dir() / SNARE_FILE
    have = snare.is_file()
    why = "" if have else f"{snare} is absent (set SCCLIP_DATA_DIR to the folder holding {SNARE_FILE})"
    return [
        Demo(
            "snare-test",
            "SNARE-seq mouse cortex, held-out libraries 09I/09J (real, paired)",
            "Chen et al. 2019 (GSE126074): 1,717 adult mouse cortex cells from sequencing libraries 09I and "
            "09J, which the mouse-cortex model never saw. Paired RNA + ATAC, 15 cell types.",
            have,
            why,
        ),
        Demo(
            "snare-all",
            "SNARE-seq mouse cortex, all 10 libraries (real, paired)",
            "All 8,685 cells (libraries 09A-09J); 09I/09J are held out, the rest were used for training.",
            have,
            why,
        ),
        Demo(
            "snare-unpaired",
            "SNARE-seq 09I RNA vs 09J ATAC (real, unpaired)",
            "RNA of library 09I and ATAC of library 09J: different cells, so matching and label transfer "
            "work without pairing information.",
            have,
            why,
        ),
        Demo(
            "synthetic",
            "Synthetic multiome (simulated, paired)",
            "Simulated paired RNA + ATAC cells (scclip.datasets.synthetic_multiome, seed 0, 5 cell types, "
            "mm10 genes): not biology, only a quick offline demo.",
        ),
        Demo(
            "synthetic-unpaired",
            "Synthetic multiome, RNA and ATAC of different cells (simulated, unpaired)",
            "The simulator's RNA for one half of the cells and ATAC for the other half.",
        ),
    ]


def synthetic_cells(model_summary: dict | None = None) -> int:
    """Cells of the synthetic demo: as many as the model's synthetic training data had (600 otherwise), so
    that the simulator (seeded) produces the same features."""
    s = model_summary or {}
    n = (s.get("pairing") or {}).get("n_rna")
    return int(n) if n and "synthetic" in str(s.get("data") or "synthetic") else 600


def load_demo(key: str, *, model_summary: dict | None = None) -> md.MuData:
    """A demo dataset as MuData (``rna``/``atac``), with ``uns['demo']`` naming it."""
    from scclip.datasets import synthetic_multiome

    demos = {d.key: d for d in list_demos()}
    if key not in demos:
        raise ScclipError(f"unknown demo dataset {key!r}; choose one of {sorted(demos)}")
    if not demos[key].available:
        raise ScclipError(f"demo {demos[key].label!r} is not available: {demos[key].reason}")
    if key.startswith("snare"):
        from scclip.io import read

        full = read(data_dir() / SNARE_FILE)
        batch = full["rna"].obs["batch"].astype(str)
        if key == "snare-test":
            keep = batch.isin(SNARE_TEST_LIBRARIES).to_numpy()
            mdata = md.MuData({m: full[m][keep].copy() for m in ("rna", "atac")})
        elif key == "snare-unpaired":
            mdata = md.MuData(
                {
                    "rna": full["rna"][(batch == "09I").to_numpy()].copy(),
                    "atac": full["atac"][(full["atac"].obs["batch"].astype(str) == "09J").to_numpy()].copy(),
                }
            )
        else:
            mdata = md.MuData({m: full[m].copy() for m in ("rna", "atac")})
    else:
        full = synthetic_multiome(synthetic_cells(model_summary), seed=0)
        if key == "synthetic":
            mdata = full
        else:
            n = full.n_obs // 2
            rna, atac = full["rna"][:n].copy(), full["atac"][n:].copy()
            mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.uns["demo"] = {"key": key, "label": demos[key].label}
    mdata.uns["genome"] = "mm10"
    return mdata


def default_choice(models: list[str] | None = None) -> tuple[str | None, str]:
    """The app's start-up (model, demo dataset).

    ``$SCCLIP_DEFAULT_MODEL`` wins; else ``mouse-cortex-snareseq`` with the held-out SNARE-seq cells when both
    exist, else ``demo-synthetic`` (or the first installed model) with the synthetic demo.
    """
    from scclip.pretrained import list_pretrained

    models = list_pretrained() if models is None else models
    snare_ok = (data_dir() / SNARE_FILE).is_file()
    env = os.environ.get("SCCLIP_DEFAULT_MODEL")
    if env:
        return env, os.environ.get("SCCLIP_DEFAULT_DEMO", "snare-test" if snare_ok else "synthetic")
    if snare_ok and "mouse-cortex-snareseq" in models:
        return "mouse-cortex-snareseq", "snare-test"
    if "demo-synthetic" in models:
        return "demo-synthetic", "synthetic"
    return (models[0] if models else None), "synthetic"


# --------------------------------------------------------------------------- fingerprints and cache
_MODEL_FP: dict[tuple, str] = {}


def model_fingerprint(model_dir: str | Path) -> str:
    """Content hash of a release folder's config and weights (memoised by path, size and mtime)."""
    d = Path(model_dir)
    files = [d / "config.json", d / "model.safetensors"]
    stat = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    if stat not in _MODEL_FP:
        h = hashlib.blake2b(digest_size=12)
        for f in files:
            if f.is_file():
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(chunk)
        _MODEL_FP[stat] = h.hexdigest()
    return _MODEL_FP[stat]


def dataset_fingerprint(mdata: md.MuData) -> str:
    """Content hash of a MuData's modalities (cell and feature names, counts)."""
    import scipy.sparse as sp

    h = hashlib.blake2b(digest_size=12)
    for m in sorted(mdata.mod):
        a = mdata.mod[m]
        h.update(m.encode())
        h.update("\n".join(map(str, a.obs_names)).encode())
        h.update("\n".join(map(str, a.var_names)).encode())
        X = a.X
        if sp.issparse(X):
            X = X.tocsr()
            for arr in (X.indptr, X.indices, X.data):
                h.update(np.ascontiguousarray(arr).tobytes())
        elif X is not None:
            h.update(np.ascontiguousarray(np.asarray(X)).tobytes())
    return h.hexdigest()


def _cache_file(*parts: str) -> Path:
    return cache_dir() / ("-".join(parts) + ".npz")


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def embed_cached(
    model, mdata: md.MuData, *, model_fp: str, data_fp: str | None = None
) -> tuple[md.MuData, bool]:
    """``scclip.embed(model, mdata)``, cached on disk per (model, dataset): (embedded MuData, from_cache)."""
    import scclip

    data_fp = data_fp or dataset_fingerprint(mdata)
    path = _cache_file("emb", model_fp, data_fp)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            uns = json.loads(str(arrays.pop("uns")))
            mods = {}
            for m in uns["modalities"]:
                a = ad.AnnData(obs=mdata[m].obs.copy())
                for k, v in arrays.items():
                    if k.startswith(f"{m}/"):
                        a.obsm[k.split("/", 1)[1]] = v
                a.uns["scclip"] = uns["per_modality"][m]
                mods[m] = a
            out = md.MuData(mods)
            out.uns["scclip"] = uns["info"]
            return out, True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    out = scclip.embed(model, mdata)
    arrays = {f"{m}/{k}": np.asarray(v) for m in out.mod for k, v in out[m].obsm.items()}
    uns = {
        "modalities": list(out.mod),
        "per_modality": {m: _jsonable(out[m].uns.get("scclip", {})) for m in out.mod},
        "info": _jsonable(dict(out.uns.get("scclip", {}))),
    }
    _save_npz(path, uns=np.array(json.dumps(uns)), **arrays)
    return out, False


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def compute_umap(
    Z: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.3, seed: int | None = 0
) -> np.ndarray:
    """2-D UMAP (umap-learn, cosine metric) of an embedding; float32 (n, 2)."""
    import warnings

    Z = np.asarray(Z, dtype=np.float32)
    n = Z.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(
            n_neighbors=min(n_neighbors, n - 1),
            min_dist=min_dist,
            metric="cosine",
            random_state=seed if n <= 20_000 else None,
            low_memory=n > 50_000,
        )
        return reducer.fit_transform(Z).astype(np.float32)


def umap_cached(Z: np.ndarray, *, key: str, **kw) -> tuple[np.ndarray, bool]:
    """:func:`compute_umap`, cached on disk under ``key`` (e.g. model and dataset fingerprints)."""
    path = _cache_file(
        "umap", key, hashlib.blake2b(np.ascontiguousarray(Z).tobytes(), digest_size=8).hexdigest()
    )
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["umap"], True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    coords = compute_umap(Z, **kw)
    _save_npz(path, umap=coords)
    return coords, False


# --------------------------------------------------------------------------- the joint cell table
@dataclass
class Joint:
    """RNA cells (global index ``0..n_rna-1``) then ATAC cells, in one embedding space.

    ``obs`` has ``barcode``, ``modality`` ('RNA'/'ATAC') and every obs column of either modality;
    ``partner[i]`` is the global index of the same cell in the other modality (-1: none / unpaired).
    """

    Z: np.ndarray
    obs: pd.DataFrame
    n_rna: int
    paired: bool
    partner: np.ndarray
    umap: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.Z.shape[0]

    @property
    def modality(self) -> np.ndarray:
        return self.obs["modality"].to_numpy()

    def other(self, i: int) -> np.ndarray:
        """Global indices of the cells of the other modality than cell ``i``."""
        return np.arange(self.n_rna, self.n) if i < self.n_rna else np.arange(self.n_rna)

    def color_columns(self) -> list[str]:
        """obs columns to colour by: 'modality' first, then categorical / numeric columns."""
        cols = ["modality"]
        for c in self.obs.columns:
            if c in ("barcode", "modality"):
                continue
            s = self.obs[c]
            n_cat = s.nunique(dropna=True)
            if pd.api.types.is_numeric_dtype(s) or 1 <= n_cat <= 200:
                cols.append(c)
        return cols

    def find(self, barcode: str, modality: str | None = None) -> np.ndarray:
        """Global indices of cells whose barcode equals ``barcode`` (case-insensitive, trimmed)."""
        b = str(barcode).strip().lower()
        hit = self.obs["barcode"].str.lower().to_numpy() == b
        if modality is not None:
            hit &= self.modality == modality
        return np.flatnonzero(hit)


def joint_from_embedded(emb: md.MuData, *, key: str = EMBED_KEY) -> Joint:
    """The :class:`Joint` table of an embedded MuData (both modalities needed)."""
    missing = [m for m in ("rna", "atac") if m not in emb.mod]
    if missing:
        raise ScclipError(f"the joint view needs RNA and ATAC cells; the data lack {missing}")
    parts, Zs = [], []
    for m in ("rna", "atac"):
        a = emb[m]
        if key not in a.obsm:
            raise ScclipError(f"{m} cells carry no {key!r} embedding; embed them first")
        obs = a.obs.copy()
        for c in obs.columns:
            if isinstance(obs[c].dtype, pd.CategoricalDtype) or obs[c].dtype == object:
                obs[c] = obs[c].astype(str).replace({"nan": np.nan, "None": np.nan})
        obs.insert(0, "modality", MODALITY_LABELS[m])
        obs.insert(0, "barcode", a.obs_names.astype(str))
        parts.append(obs.reset_index(drop=True))
        Zs.append(np.asarray(a.obsm[key], dtype=np.float32))
    n_rna = Zs[0].shape[0]
    obs = pd.concat(parts, ignore_index=True)
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = obs[c].astype("category")
    rna_names, atac_names = pd.Index(emb["rna"].obs_names), pd.Index(emb["atac"].obs_names)
    pos = atac_names.get_indexer(rna_names) if atac_names.is_unique else -np.ones(n_rna, dtype=int)
    partner = np.full(obs.shape[0], -1, dtype=np.int64)
    paired = bool(emb.uns.get("scclip", {}).get("paired", (pos >= 0).any()))
    if paired:
        ok = np.flatnonzero(pos >= 0)
        partner[ok] = n_rna + pos[ok]
        partner[n_rna + pos[ok]] = ok
    info = dict(emb.uns.get("scclip", {}))
    return Joint(np.concatenate(Zs), obs, n_rna, paired, partner, info=info)


# --------------------------------------------------------------------------- drawing
def draw_indices(
    n: int, max_points: int = MAX_DRAWN, *, seed: int = 0, mask: np.ndarray | None = None
) -> np.ndarray:
    """Global indices to draw: all (visible) cells, or a fixed random subset of ``max_points`` of them.

    The subset is the same for every colouring (a fixed permutation), so recolouring never reshuffles cells.
    """
    order = np.random.default_rng(seed).permutation(n)
    if mask is not None:
        order = order[mask[order]]
    return np.sort(order[:max_points]) if order.size > max_points else np.sort(order)


def category_colors(values: pd.Series) -> dict[str, str]:
    """A stable colour per category (modality gets its own two colours)."""
    cats = (
        values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else pd.unique(values.dropna())
    )
    cats = [str(c) for c in cats]
    if set(cats) <= set(MODALITY_COLORS):
        return {c: MODALITY_COLORS[c] for c in cats}
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(cats, key=_natural_key))}


def _natural_key(s: str):
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)


def umap_figure(
    coords: np.ndarray,
    values: pd.Series,
    drawn: np.ndarray,
    *,
    hover: np.ndarray | None = None,
    title: str = "",
    point_size: float = 4.0,
    opacity: float = 0.8,
    highlight: dict | None = None,
    colors: dict[str, str] | None = None,
    height: int = 560,
    colorbar_title: str = "",
):
    """A UMAP scatter: one ``Scattergl`` trace of the ``drawn`` cells, ``customdata`` = global cell index.

    Categorical ``values`` become per-point colours with a legend of empty marker-only entries (the legend is
    informative only; show/hide categories by filtering ``drawn``); numeric values use a colour scale.
    ``highlight`` may hold ``query`` (a global index), ``partners`` (global indices) and ``group`` (global
    indices) drawn on top, each also carrying ``customdata``.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    xy = coords[drawn]
    v = values.iloc[drawn] if isinstance(values, pd.Series) else pd.Series(np.asarray(values)[drawn])
    marker: dict = {"size": point_size, "opacity": opacity, "line": {"width": 0}}
    legend_items: list[tuple[str, str]] = []
    if is_categorical(values):
        colors = colors or category_colors(values)
        # numeric codes + a stepwise colour scale: fast to build and to send (no per-point colour strings)
        names = list(colors)
        lut = {c: i for i, c in enumerate(names)}
        codes = pd.Series(v.astype(object).where(v.notna(), None)).map(
            lambda x: lut.get(str(x), len(names)) if x is not None else len(names)
        )
        palette = [*colors.values(), MISSING_COLOR]
        k = len(palette)
        scale = []
        for i, col in enumerate(palette):
            scale += [[i / k, col], [(i + 1) / k, col]]
        marker.update(
            color=codes.to_numpy(dtype=np.float32), colorscale=scale, cmin=-0.5, cmax=k - 0.5, showscale=False
        )
        present = set(map(str, v.dropna().unique()))
        legend_items = [(c, col) for c, col in colors.items() if c in present]
        if v.isna().any():
            legend_items.append(("(missing)", MISSING_COLOR))
    else:
        marker.update(
            color=v.to_numpy(dtype=float),
            colorscale="Viridis",
            showscale=True,
            colorbar={"title": {"text": colorbar_title, "side": "right"}, "thickness": 12, "len": 0.7},
        )
    text = hover[drawn] if hover is not None else None
    fig.add_trace(
        go.Scattergl(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            marker=marker,
            customdata=drawn,
            text=text,
            hovertemplate="%{text}<extra></extra>"
            if text is not None
            else "cell %{customdata}<extra></extra>",
            showlegend=False,
            name="cells",
        )
    )
    for name, col in legend_items:
        fig.add_trace(
            go.Scattergl(
                x=[None],
                y=[None],
                mode="markers",
                marker={"size": 10, "color": col},
                name=name,
                showlegend=True,
            )
        )
    hl = highlight or {}
    group = np.asarray(hl.get("group", []), dtype=np.int64)
    if group.size:
        g = group if group.size <= MAX_DRAWN else group[draw_indices(group.size, MAX_DRAWN)]
        fig.add_trace(
            go.Scattergl(
                x=coords[g, 0], y=coords[g, 1], mode="markers", customdata=g, name="selected",
                marker={"size": point_size + 3, "color": "rgba(0,0,0,0)", "line": {"width": 1, "color": "#111"}},
                hoverinfo="skip", showlegend=True,
            )
        )  # fmt: skip
    partners = np.asarray(hl.get("partners", []), dtype=np.int64)
    q = hl.get("query")
    if q is not None and partners.size:
        lx, ly = [], []
        for p in partners:
            lx += [coords[q, 0], coords[p, 0], None]
            ly += [coords[q, 1], coords[p, 1], None]
        fig.add_trace(
            go.Scattergl(x=lx, y=ly, mode="lines", line={"width": 1, "color": "rgba(20,20,20,0.45)"},
                         hoverinfo="skip", showlegend=False)
        )  # fmt: skip
    if partners.size:
        ptext = hover[partners] if hover is not None else None
        fig.add_trace(
            go.Scattergl(
                x=coords[partners, 0], y=coords[partners, 1], mode="markers", customdata=partners, name="top partners",
                marker={"size": 11, "color": "#FFD400", "symbol": "circle", "line": {"width": 1.5, "color": "#111"}},
                text=ptext, hovertemplate="partner: %{text}<extra></extra>", showlegend=True,
            )
        )  # fmt: skip
    if q is not None:
        fig.add_trace(
            go.Scattergl(
                x=[coords[q, 0]], y=[coords[q, 1]], mode="markers", customdata=[q], name="selected cell",
                marker={"size": 18, "color": "#111", "symbol": "star", "line": {"width": 1.5, "color": "white"}},
                text=None if hover is None else [hover[q]], hovertemplate="%{text}<extra></extra>", showlegend=True,
            )
        )  # fmt: skip
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="white",
        paper_bgcolor="white",
        dragmode="pan",
        legend={"itemsizing": "constant", "itemclick": False, "itemdoubleclick": False, "font": {"size": 11},
                "bgcolor": "rgba(255,255,255,0.7)"},
        xaxis={"title": "UMAP 1", "showgrid": False, "zeroline": False, "showticklabels": False},
        yaxis={"title": "UMAP 2", "showgrid": False, "zeroline": False, "showticklabels": False},
        hoverlabel={"font_size": 12},
        uirevision="umap",
    )  # fmt: skip
    return fig


# --------------------------------------------------------------------------- selections
def _as_index(cd) -> int | None:
    if isinstance(cd, list | tuple):
        cd = cd[0] if cd else None
    if cd is None:
        return None
    try:
        return int(cd)
    except (TypeError, ValueError):
        return None


def points_in_polygon(xy: np.ndarray, poly_x, poly_y) -> np.ndarray:
    """Boolean mask of points inside a polygon (even-odd ray casting, vectorised over points)."""
    px, py = np.asarray(poly_x, dtype=float), np.asarray(poly_y, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        xi, yi, xj, yj = px[i], py[i], px[j], py[j]
        if yi != yj:
            crosses = ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
            inside ^= crosses
        j = i
    return inside


def selection_to_cells(
    selection, coords: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Global cell indices of a ``st.plotly_chart`` selection.

    Box and lasso selections are recomputed on the server from their geometry over *all* cells in ``coords``
    (including cells not drawn because of subsampling), restricted to ``mask`` (e.g. visible categories).
    Clicked points map through ``customdata`` (the global index), never through per-trace point indices.
    """
    if not selection:
        return np.array([], dtype=np.int64)
    sel = selection.get("selection", selection) if isinstance(selection, dict) else selection
    boxes, lassos = list(sel.get("box") or []), list(sel.get("lasso") or [])
    if coords is not None and (boxes or lassos):
        hit = np.zeros(len(coords), dtype=bool)
        for b in boxes:
            x0, x1 = sorted(map(float, b["x"][:2]))
            y0, y1 = sorted(map(float, b["y"][:2]))
            hit |= (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
        for lasso in lassos:
            hit |= points_in_polygon(coords, lasso["x"], lasso["y"])
        if mask is not None:
            hit &= mask
        return np.flatnonzero(hit)
    idx = [_as_index(p.get("customdata")) for p in sel.get("points") or []]
    return np.unique(np.array([i for i in idx if i is not None], dtype=np.int64))


# --------------------------------------------------------------------------- matches
def label_columns(joint: Joint, max_cats: int = 200) -> list[str]:
    """Categorical obs columns (cell type, batch, ...) suitable as labels."""
    out = []
    for c in joint.obs.columns:
        if c in ("barcode", "modality"):
            continue
        s = joint.obs[c]
        if is_categorical(s) and 1 <= s.nunique(dropna=True) <= max_cats:
            out.append(c)
    return out


def partners_table(joint: Joint, i: int, *, k: int = 10, labels: list[str] | None = None) -> pd.DataFrame:
    """Top-``k`` partners of cell ``i`` in the other modality (:func:`scclip.match.topk_partners`)."""
    from scclip.match import topk_partners

    other = joint.other(i)
    idx, sim = topk_partners(joint.Z[i : i + 1], joint.Z[other], k=k)
    g = other[idx[0]]
    df = pd.DataFrame(
        {
            "rank": np.arange(1, len(g) + 1),
            "barcode": joint.obs["barcode"].to_numpy()[g],
            "modality": joint.modality[g],
            "similarity": sim[0].astype(float),
        }
    )
    for c in labels if labels is not None else label_columns(joint):
        df[c] = joint.obs[c].to_numpy()[g]
    if joint.paired:
        df["true partner"] = g == joint.partner[i]
    df["cell_index"] = g
    return df


def similarities(joint: Joint, i: int) -> np.ndarray:
    """Cosine similarity of cell ``i`` to every cell of the other modality (embeddings are unit norm)."""
    Z = joint.Z
    other = joint.other(i)
    q = Z[i] / max(np.linalg.norm(Z[i]), 1e-12)
    R = Z[other]
    return (R @ q) / np.maximum(np.linalg.norm(R, axis=1), 1e-12)


def true_partner_rank(joint: Joint, i: int, sims: np.ndarray | None = None) -> int | None:
    """1 + the number of other-modality cells more similar to cell ``i`` than its own partner (paired data)."""
    p = int(joint.partner[i])
    if p < 0:
        return None
    sims = similarities(joint, i) if sims is None else sims
    other = joint.other(i)
    pos = p - other[0]
    return int((sims > sims[pos]).sum()) + 1


def group_partners(joint: Joint, cells: np.ndarray, *, k: int = 1) -> np.ndarray:
    """Global indices of the top-``k`` other-modality partners of every cell in ``cells`` (flattened)."""
    from scclip.match import topk_partners

    cells = np.asarray(cells, dtype=np.int64)
    out = []
    for mask in (cells < joint.n_rna, cells >= joint.n_rna):
        sel = cells[mask]
        if sel.size == 0:
            continue
        other = joint.other(int(sel[0]))
        idx, _ = topk_partners(joint.Z[sel], joint.Z[other], k=k)
        out.append(other[idx.ravel()])
    return np.concatenate(out) if out else np.array([], dtype=np.int64)


def composition(joint: Joint, cells: np.ndarray, partners: np.ndarray, label: str) -> pd.DataFrame:
    """Label composition of a selected group and of where its partners land (fractions)."""
    lab = joint.obs[label].astype(object).where(joint.obs[label].notna(), "(missing)").to_numpy()
    a = pd.Series(lab[cells]).value_counts(normalize=True)
    b = pd.Series(lab[partners]).value_counts(normalize=True)
    df = pd.DataFrame({"selected cells": a, "their partners": b}).fillna(0.0)
    df.index.name = label
    return df.sort_values("their partners", ascending=False)


def transfer(joint: Joint, label: str, *, source: str, k: int = 15) -> pd.DataFrame:
    """Label transfer from the ``source`` modality's cells ('RNA'/'ATAC') to the other modality's cells.

    Returns a frame over the query cells: ``cell_index``, ``barcode``, ``transferred``, ``confidence`` and,
    when the query cells carry ``label`` too, ``true`` and ``correct``.
    """
    from scclip.match import transfer_labels

    src = np.flatnonzero(joint.modality == source)
    qry = np.flatnonzero(joint.modality != source)
    ref_lab = joint.obs[label].to_numpy(dtype=object)[src]
    ok = pd.notna(ref_lab)
    if not ok.any():
        raise ScclipError(f"the {source} cells have no {label!r} labels to transfer")
    pred, conf = transfer_labels(joint.Z[src][ok], ref_lab[ok], joint.Z[qry], k=k)
    df = pd.DataFrame(
        {
            "cell_index": qry,
            "barcode": joint.obs["barcode"].to_numpy()[qry],
            "modality": joint.modality[qry],
            "transferred": pred,
            "confidence": conf.astype(float),
        }
    )
    true = joint.obs[label].to_numpy(dtype=object)[qry]
    if pd.notna(true).any():
        df["true"] = true
        df["correct"] = np.where(pd.notna(true), df["transferred"].to_numpy() == true, np.nan)
    return df


def one_to_one_table(joint: Joint, *, method: str = "auto") -> pd.DataFrame:
    """One-to-one RNA-ATAC pairing (:func:`scclip.match.one_to_one`) with barcodes; ``attrs['method']``."""
    from scclip.match import one_to_one

    b = joint.obs["barcode"].to_numpy()
    df = one_to_one(
        joint.Z[: joint.n_rna],
        joint.Z[joint.n_rna :],
        method=method,
        rna_names=b[: joint.n_rna],
        atac_names=b[joint.n_rna :],
    )
    if joint.paired:
        df["true pair"] = (
            joint.partner[df["rna_index"].to_numpy()] == joint.n_rna + df["atac_index"].to_numpy()
        )
    return df


def umap_csv(joint: Joint) -> bytes:
    """UMAP coordinates with barcode, modality and obs columns as CSV."""
    df = joint.obs.copy()
    if joint.umap is not None:
        df.insert(2, "umap_1", joint.umap[:, 0])
        df.insert(3, "umap_2", joint.umap[:, 1])
    return df.to_csv(index=False).encode()


def h5mu_bytes(emb: md.MuData, joint: Joint | None = None) -> bytes:
    """The embedded MuData (with ``obsm['X_umap']`` per modality when known) as ``.h5mu`` bytes."""
    import tempfile

    out = emb.copy()
    if joint is not None and joint.umap is not None:
        out["rna"].obsm["X_umap"] = joint.umap[: joint.n_rna]
        out["atac"].obsm["X_umap"] = joint.umap[joint.n_rna :]
    for m in out.mod:
        out[m].uns = {"scclip": _jsonable(out[m].uns.get("scclip", {}))}
    out.uns = {"scclip": _jsonable(dict(out.uns.get("scclip", {})))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embedding.h5mu"
        with md.set_options(pull_on_update=False):
            out.write_h5mu(path)
        return path.read_bytes()


# --------------------------------------------------------------------------- uploads
UPLOAD_SUFFIXES = (".h5mu", ".h5ad", ".h5", ".tsv.gz", ".tar.gz", ".tgz")


def _is_fragments(name: str) -> bool:
    n = name.lower()
    return "fragments" in n and n.endswith((".tsv.gz", ".tsv", ".bed.gz"))


def read_files(paths: list[Path], *, model=None, paired: bool | None = None) -> tuple[md.MuData, list[str]]:
    """Read uploaded or server-side files into one MuData: (mdata, notes).

    One multi-modal file (``.h5mu``, 10x ARC ``.h5``), or one RNA and one ATAC file, or RNA + a 10x
    ``fragments.tsv.gz`` (counted onto the ``model``'s ATAC features for the RNA barcodes). ``paired=None``
    decides from the barcodes: paired when most cells of the smaller modality occur in both.
    """
    from scclip.io import paired_cells, pairing_report, read

    notes: list[str] = []
    paths = [Path(p) for p in paths]
    if not paths:
        raise ScclipError("no file given: upload a file or type a server path")
    for p in paths:
        if not p.exists():
            raise ScclipError(f"{p} does not exist on the server: check the path")
    frags = [p for p in paths if _is_fragments(p.name)]
    others = [p for p in paths if p not in frags]
    bad = [p.name for p in others if not p.is_dir() and not p.name.lower().endswith(UPLOAD_SUFFIXES)]
    if bad:
        raise ScclipError(
            f"unsupported file {bad[0]!r}: upload .h5mu, .h5ad, a 10x .h5, a 10x .tar.gz or a fragments.tsv.gz"
        )
    mods: dict[str, ad.AnnData] = {}
    for p in others:
        mdata = read(p)
        notes += [f"{p.name}: {n}" for n in mdata.uns.get("scclip_read", {}).get("notes", [])]
        for m in mdata.mod:
            if m in mods:
                raise ScclipError(
                    f"two files hold {MODALITY_LABELS.get(m, m)} data ({p.name} and an earlier one); give at "
                    "most one RNA and one ATAC source"
                )
            mods[m] = mdata.mod[m]
    if frags:
        if len(frags) > 1 or "atac" in mods:
            raise ScclipError("give one fragments file and no other ATAC file")
        if model is None:
            raise ScclipError("counting a fragments file needs a model (its ATAC features are the intervals)")
        from scclip.fragments import count_fragments

        f = model.feature_space["atac"]
        keep = f.chrom != ""
        bc = mods["rna"].obs_names if "rna" in mods else None
        atac = count_fragments(
            frags[0], f.chrom[keep], f.start[keep], f.end[keep], barcodes=bc, feature_names=f.names[keep]
        )
        atac.var["chrom"], atac.var["start"], atac.var["end"] = f.chrom[keep], f.start[keep], f.end[keep]
        mods["atac"] = atac
        notes.append(
            f"{frags[0].name}: counted cut sites of {atac.n_obs} cells onto the model's {int(keep.sum())} ATAC features"
        )
    if not mods:
        raise ScclipError("the files hold no RNA or ATAC data")
    mdata = md.MuData(mods)
    if len(mods) == 2:
        rep = pairing_report(mdata)
        auto = rep["n_shared"] >= 0.5 * min(rep["n_rna"], rep["n_atac"])
        use_paired = auto if paired is None else paired
        if use_paired:
            mdata = paired_cells(mdata)
            notes.append(f"paired: {rep['n_shared']:,} barcodes occur in both modalities; kept those cells")
        else:
            notes.append(
                f"unpaired: RNA and ATAC share {rep['n_shared']:,} barcodes; treated as different cells"
            )
    return mdata, notes


def validation_summary(mdata: md.MuData, model=None) -> dict:
    """What the app shows before embedding: cells, features, pairing, genome and coverage against ``model``.

    Returns ``{"modalities": {m: {...}}, "pairing": {...}, "genome": ..., "warnings": [...], "errors": [...]}``;
    coverage problems (no overlap, wrong genome) are collected as readable errors, never raised.
    """
    from scclip.io import pairing_report

    out: dict = {"modalities": {}, "warnings": [], "errors": []}
    out["pairing"] = pairing_report(mdata) if len(mdata.mod) == 2 else None
    out["genome"] = mdata.uns.get("genome") if hasattr(mdata, "uns") else None
    for m in ("rna", "atac"):
        if m not in mdata.mod:
            continue
        a = mdata[m]
        X = a.X
        nnz = X.nnz if hasattr(X, "nnz") else int(np.count_nonzero(X))
        row = {
            "cells": int(a.n_obs),
            "features": int(a.n_vars),
            "non-zeros per cell": float(nnz / max(a.n_obs, 1)),
            "obs columns": [str(c) for c in a.obs.columns],
        }
        if model is not None:
            try:
                from scclip.api import map_modality

                _, rep = map_modality(a, model.feature_space[m])
                row["coverage"] = rep
                out["warnings"] += [f"{MODALITY_LABELS[m]}: {w}" for w in rep.get("warnings", [])]
            except ScclipError as err:
                out["errors"].append(f"{MODALITY_LABELS[m]}: {err}")
        out["modalities"][m] = row
    if len(mdata.mod) < 2:
        out["warnings"].append(
            "only one modality: cells can be embedded, but the joint RNA + ATAC views need both"
        )
    return out


# --------------------------------------------------------------------------- model zips
def safe_extract_model_zip(
    zip_path: str | Path, dest: str | Path, *, max_bytes: int = MODEL_ZIP_MAX_BYTES
) -> Path:
    """Extract a zipped release folder after checking every member; returns the folder with ``config.json``.

    Refused (``ScclipError`` naming the member): absolute paths or ``..`` (path escape), symbolic links,
    files other than ``.json``, ``.safetensors``, ``.tsv.gz``, ``.md``, more than ``max_bytes`` uncompressed,
    no or several ``config.json``.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ScclipError(f"not a readable .zip file ({err})") from None
    with zf:
        infos = zf.infolist()
        total = 0
        configs = []
        for info in infos:
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or ".." in pure.parts or (pure.parts and pure.parts[0].endswith(":")):
                raise ScclipError(f"refused: {name!r} would be written outside the model folder")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ScclipError(f"refused: {name!r} is a symbolic link")
            if info.is_dir():
                continue
            if pure.name.startswith("._") or "__MACOSX" in pure.parts or pure.name == ".DS_Store":
                continue
            if not pure.name.lower().endswith(MODEL_ZIP_SUFFIXES):
                raise ScclipError(
                    f"refused: {name!r} is not part of a release folder (allowed: "
                    f"{', '.join(MODEL_ZIP_SUFFIXES)})"
                )
            total += info.file_size
            if total > max_bytes:
                raise ScclipError(f"refused: the zip unpacks to more than {max_bytes / 1e9:.1f} GB")
            if pure.name == "config.json":
                configs.append(pure.parent)
        if len(configs) != 1:
            raise ScclipError(
                "the zip must hold exactly one release folder (one config.json with model.safetensors); "
                f"found {len(configs)} config.json files"
            )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for info in infos:
            pure = PurePosixPath(info.filename.replace("\\", "/"))
            if (
                info.is_dir()
                or not pure.name.lower().endswith(MODEL_ZIP_SUFFIXES)
                or pure.name.startswith("._")
            ):
                continue
            target = (root / pure).resolve()
            if root not in target.parents:
                raise ScclipError(f"refused: {info.filename!r} escapes the model folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    return root / configs[0]


# --------------------------------------------------------------------------- runs and background training
#: Rough CPU training throughput (cells per second, 2 busy cores) per preset, for the time estimate.
CPU_CELLS_PER_SECOND = {"tiny": 3000.0, "default": 320.0, "paper-per-patch": 40.0, "paper": 60.0}
GPU_SPEEDUP = 15.0


def estimate_train_seconds(n_train_cells: int, epochs: int, preset: str, *, cuda: bool) -> float:
    rate = CPU_CELLS_PER_SECOND.get(preset, 320.0) * (GPU_SPEEDUP if cuda else 1.0)
    return n_train_cells * epochs / rate + 10.0


def list_runs(root: Path | None = None) -> list[dict]:
    """Training runs under ``runs/``: name, path, status (from ``progress.json``) and whether a model exists."""
    root = runs_dir() if root is None else root
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        prog = read_progress(d)
        has_model = (d / "model" / "config.json").is_file()
        if has_model or prog:
            out.append(
                {"name": d.name, "path": d, "model": has_model, "status": prog.get("status", "finished")}
            )
    return out


def read_progress(run_dir: Path) -> dict:
    path = Path(run_dir) / "progress.json"
    try:
        prog = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if prog.get("status") in ("starting", "running") and not _alive(prog.get("pid")):
        prog["status"] = "failed"
        prog.setdefault("error", "the training process ended unexpectedly (out of memory or killed?)")
    return prog


def _alive(pid) -> bool:
    if not pid:
        return True
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # a finished child that nobody waited for is a zombie: not alive
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def start_training(run_dir: str | Path, spec: dict) -> int:
    """Start a background training process for ``spec`` in ``run_dir``; returns its pid.

    ``spec``: ``data`` (``{"demo": key}`` or ``{"path": file}``), ``preset``, ``train_config`` (dict),
    ``holdout_key``, ``holdout`` (list), ``val_size``. Progress goes to ``run_dir/progress.json``.
    """
    run_dir = Path(run_dir)
    prog = read_progress(run_dir)
    if prog.get("status") in ("starting", "running"):
        raise ScclipError(f"a training run is already going on in {run_dir}")
    if (run_dir / "model" / "config.json").is_file():
        raise ScclipError(f"{run_dir} already holds a trained model: choose another run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "STOP").unlink(missing_ok=True)
    _write_json(run_dir / "job.json", spec)
    _write_json(
        run_dir / "progress.json", {"status": "starting", "started": time.time(), "history": [], "pid": None}
    )
    log = open(run_dir / "train.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scclip.explore", "train", str(run_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=os.getcwd(),
    )
    log.close()
    prog = json.loads((run_dir / "progress.json").read_text())
    if prog.get("pid") is None:
        prog["pid"] = proc.pid
        _write_json(run_dir / "progress.json", prog)
    return proc.pid


def stop_training(run_dir: str | Path, *, kill_after: float = 0.0) -> None:
    """Ask a run to stop (it finishes the current steps, keeps its checkpoints and writes the best model)."""
    run_dir = Path(run_dir)
    (run_dir / "STOP").write_text(str(time.time()))
    if kill_after:
        time.sleep(kill_after)
        pid = read_progress(run_dir).get("pid")
        if pid and _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGTERM)


class _Stopped(Exception):
    pass


def _train_main(run_dir: Path) -> int:
    """Entry point of the training subprocess (``python -m scclip.explore train RUN_DIR``)."""
    import scclip
    from scclip.io import read

    spec = json.loads((run_dir / "job.json").read_text())
    prog: dict = {
        "status": "running",
        "started": time.time(),
        "pid": os.getpid(),
        "history": [],
        "spec": spec,
    }
    _write_json(run_dir / "progress.json", prog)
    last = [0.0]

    def progress(ev: dict) -> None:
        if (run_dir / "STOP").exists():
            raise _Stopped
        now = time.time()
        prog["elapsed"] = now - prog["started"]
        prog["epochs"] = ev.get("epochs", prog.get("epochs"))
        if ev.get("event") == "step":
            prog.update(
                epoch=ev["epoch"], step=ev["step"], steps_per_epoch=ev["steps_per_epoch"], loss=ev["loss"]
            )
            prog.setdefault("steps", []).append(
                {"step": ev["step"], "loss": ev["loss"], "elapsed": prog["elapsed"]}
            )
        elif ev.get("event") == "epoch":
            prog["history"].append(
                {k: ev.get(k) for k in ("epoch", "loss", "val_foscttm", "val_top1", "elapsed", "temperature")}
            )
            prog["epoch"] = ev["epoch"]
            prog["best_epoch"] = ev.get("best_epoch")
        if ev.get("event") != "step" or now - last[0] > 1.0:
            last[0] = now
            _write_json(run_dir / "progress.json", prog)

    try:
        data = spec["data"]
        if "demo" in data:
            mdata = load_demo(data["demo"])
        else:
            mdata = read(data["path"])
        prog["n_cells"] = int(mdata["rna"].n_obs) if "rna" in mdata.mod else 0
        scclip.train(
            mdata,
            out_dir=run_dir,
            model_config=spec.get("preset", "default"),
            train_config=spec.get("train_config", {}),
            holdout_key=spec.get("holdout_key") or None,
            holdout=spec.get("holdout") or (),
            val_size=spec.get("val_size", 0.1),
            progress=progress,
            data_name=data.get("label") or data.get("path") or data.get("demo"),
            command="scCLIP Explorer app",
        )
        prog["status"] = "done"
    except _Stopped:
        prog["status"] = "stopped"
        _finish_stopped(run_dir, prog)
    except Exception as err:
        prog["status"] = "failed"
        prog["error"] = f"{type(err).__name__}: {err}" if not isinstance(err, ScclipError) else str(err)
    prog["finished"] = time.time()
    prog["elapsed"] = prog["finished"] - prog["started"]
    _write_json(run_dir / "progress.json", prog)
    return 0 if prog["status"] != "failed" else 1


def _finish_stopped(run_dir: Path, prog: dict) -> None:
    """A stopped run keeps its checkpoints; its best checkpoint is not a release folder (say so)."""
    prog["note"] = (
        "stopped by the user; checkpoints are in checkpoints/ (resume with `scclip train --resume`)"
        if (run_dir / "checkpoints").is_dir()
        else "stopped by the user before the first epoch ended"
    )


if __name__ == "__main__":  # pragma: no cover - the training subprocess
    if len(sys.argv) == 3 and sys.argv[1] == "train":
        sys.exit(_train_main(Path(sys.argv[2])))
    print("usage: python -m scclip.explore train RUN_DIR", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- zero-shot reference
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
