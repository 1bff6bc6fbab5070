"""Differential features of a selection: top genes (RNA) and peaks / bins (ATAC, with their nearest gene) of
group A against group B, through :func:`scanpy.tl.rank_genes_groups` (Wilcoxon), a plotly dot plot of features
across cell types, and the table as CSV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_LABELS
from scclip.explore.feature_query import nearest_genes
from scclip.explore.feature_values import FeatureStore

#: Cells per group above which :func:`differential_features` subsamples (seeded).
MAX_TEST_CELLS = 10_000
#: Features expressed in fewer than this fraction of both groups' cells are not tested.
MIN_FRACTION = 0.01


def store_obs(store: FeatureStore) -> pd.DataFrame:
    """obs over the global cell index: the joint table's, or the single modality's (with ``modality``)."""
    if store.joint is not None:
        return store.joint.obs
    parts = []
    for m in store.mods:
        o = store.data[m].obs.reset_index(drop=True).copy()
        o.insert(0, "modality", MODALITY_LABELS[m])
        parts.append(o)
    return pd.concat(parts, ignore_index=True)


def category_cells(store: FeatureStore, column: str, value) -> np.ndarray:
    """Global indices of the cells whose obs ``column`` equals ``value`` (e.g. a cell type)."""
    obs = store_obs(store)
    if column not in obs.columns:
        raise ScclipError(f"no obs column {column!r}; have {list(obs.columns)[:10]}")
    hit = np.flatnonzero(obs[column].astype(str).to_numpy() == str(value))
    if hit.size == 0:
        raise ScclipError(f"no cell has {column} = {value!r}")
    return hit


def as_cells(store: FeatureStore, group) -> np.ndarray:
    """Global cell indices of a group: an index array (a selection) or ``(obs column, value)``."""
    if isinstance(group, tuple) and len(group) == 2 and isinstance(group[0], str):
        return category_cells(store, *group)
    cells = np.unique(np.asarray(group, dtype=np.int64).ravel())
    if cells.size and (cells.min() < 0 or cells.max() >= store.n):
        raise ScclipError(f"cell indices must lie in 0..{store.n - 1}")
    return cells


def cells_in_modality(store: FeatureStore, cells: np.ndarray, modality: str) -> tuple[np.ndarray, str]:
    """Positions within ``modality``'s cells of a group; the other modality's cells count through their own
    profile (paired data) or their nearest cross-modal cell. Returns (local positions, note)."""
    off, n_m = store.offset[modality], store.data[modality].n_obs
    own = cells[(cells >= off) & (cells < off + n_m)]
    if own.size or cells.size == 0:
        return own - off, ""
    other = next(m for m in store.mods if m != modality)
    label = MODALITY_LABELS[other]
    if store.joint is not None and store.joint.paired:
        p = store.joint.partner[cells]
        return np.unique(
            p[p >= 0]
        ) - off, f"the selected {label} cells' own {MODALITY_LABELS[modality]} profiles"
    if store.joint is None:  # no joint table: the same barcode in both modalities, when there is one
        pos = pd.Index(store.data[modality].obs_names).get_indexer(
            store.data[other].obs_names[cells - store.offset[other]]
        )
        if (pos >= 0).any():
            return np.unique(
                pos[pos >= 0]
            ), f"the selected {label} cells' own {MODALITY_LABELS[modality]} profiles"
    nearest = store.partners(other)[cells - store.offset[other], 0]
    return np.unique(
        nearest
    ) - off, f"the nearest {MODALITY_LABELS[modality]} cell of each selected {label} cell"


def _subsample(cells: np.ndarray, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(cells, max_cells, replace=False)) if cells.size > max_cells else cells


def _groups(
    store, group_a, group_b, modality: str, max_cells: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list]:
    a, note_a = cells_in_modality(store, as_cells(store, group_a), modality)
    notes = [f"group A: {note_a}"] if note_a else []
    if group_b is None:
        b = np.setdiff1d(np.arange(store.data[modality].n_obs), a)
    else:
        b, note_b = cells_in_modality(store, as_cells(store, group_b), modality)
        b = np.setdiff1d(b, a)
        notes += [f"group B: {note_b}"] if note_b else []
    if a.size < 2 or b.size < 2:
        label = MODALITY_LABELS[modality]
        raise ScclipError(f"need at least 2 {label} cells in each group (A has {a.size}, B has {b.size})")
    rng = np.random.default_rng(seed)
    for name, g in (("A", a), ("B", b)):
        if g.size > max_cells:
            notes.append(f"group {name}: a random {max_cells:,} of its {g.size:,} cells (seed {seed})")
    return _subsample(a, max_cells, rng), _subsample(b, max_cells, rng), notes


def differential_features(
    store: FeatureStore,
    group_a,
    *,
    group_b=None,
    modality: str = "rna",
    n_top: int = 25,
    max_cells: int = MAX_TEST_CELLS,
    min_fraction: float = MIN_FRACTION,
    seed: int = 0,
) -> pd.DataFrame:
    """Top features of group A against group B (Wilcoxon rank-sum, :func:`scanpy.tl.rank_genes_groups`).

    Parameters
    ----------
    store
        The dataset's :class:`~scclip.explore.FeatureStore`.
    group_a, group_b
        Global cell indices (a lasso / box selection), or ``(obs column, value)`` for a category. ``group_b``
        ``None``: every other cell of ``modality``. Cells of the other modality stand for their own profile
        in ``modality`` (paired data) or their nearest cross-modal cell (noted in ``attrs['note']``).
    modality
        ``"rna"`` (log1p CP10k expression) or ``"atac"`` (log1p counts of peaks / bins).
    n_top
        Rows returned: the features most enriched in A (highest Wilcoxon score).
    max_cells
        Each group above this is subsampled (seeded) and the note says so.
    min_fraction
        Features detected in fewer than this fraction of the cells of both groups are not tested.

    Returns
    -------
    DataFrame with ``feature``, ``score``, ``log2 fold change``, ``adjusted p`` (Benjamini-Hochberg),
    ``fraction A``, ``fraction B``, ``mean A``, ``mean B`` and, for ATAC, ``nearest gene`` and
    ``distance (bp)``. ``attrs``: ``note`` (one line, may be empty), ``n_a``, ``n_b``, ``modality``.
    """
    import anndata as ad
    import scanpy as sc

    if modality not in ("rna", "atac"):
        raise ScclipError(f"modality must be 'rna' or 'atac', not {modality!r}")
    store.require(modality, what=f"{MODALITY_LABELS[modality]} markers")
    a, b, notes = _groups(store, group_a, group_b, modality, int(max_cells), seed)
    X = store.matrix(modality)
    Xa, Xb = X[a], X[b]
    frac_a, frac_b = Xa.getnnz(axis=0) / a.size, Xb.getnnz(axis=0) / b.size
    keep = np.flatnonzero(np.maximum(frac_a, frac_b) >= min_fraction)
    if keep.size == 0:
        raise ScclipError(f"no feature is detected in {min_fraction:.0%} of either group's cells")
    sub = sp.vstack([Xa[:, keep], Xb[:, keep]]).tocsr()
    if modality == "atac":
        sub.data = np.log1p(sub.data)
    obs = pd.DataFrame({"group": pd.Categorical(["A"] * a.size + ["B"] * b.size)})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(sub, obs=obs, var=pd.DataFrame(index=pd.Index(np.arange(keep.size).astype(str))))
    sc.tl.rank_genes_groups(
        adata, "group", groups=["A"], reference="B", method="wilcoxon", n_genes=int(n_top)
    )
    res = sc.get.rank_genes_groups_df(adata, group="A").head(int(n_top))
    cols = keep[res["names"].astype(int).to_numpy()]
    names = store.genes["symbol"] if modality == "rna" else store.peaks["name"]
    df = pd.DataFrame(
        {
            "feature": names.to_numpy()[cols],
            "score": res["scores"].to_numpy(float),
            "log2 fold change": res["logfoldchanges"].to_numpy(float),
            "adjusted p": res["pvals_adj"].to_numpy(float),
            "fraction A": frac_a[cols],
            "fraction B": frac_b[cols],
            "mean A": np.asarray(Xa[:, cols].mean(axis=0)).ravel(),
            "mean B": np.asarray(Xb[:, cols].mean(axis=0)).ravel(),
        }
    )
    if modality == "atac":
        _add_nearest_gene(store, df, cols)
    df.attrs.update(note="; ".join(notes), n_a=int(a.size), n_b=int(b.size), modality=modality)
    return df


def _add_nearest_gene(store: FeatureStore, df: pd.DataFrame, cols: np.ndarray) -> None:
    table = store.gene_table
    if table is None:
        df["nearest gene"], df["distance (bp)"] = "", -1
        return
    p = store.peaks.iloc[cols]
    df["nearest gene"], df["distance (bp)"] = nearest_genes(p["chrom"], p["start"], p["end"], table)


def differential_csv(table: pd.DataFrame) -> bytes:
    """A :func:`differential_features` table as CSV bytes (its note, when any, as a leading ``#`` line)."""
    note = table.attrs.get("note", "")
    head = f"# {note}\n" if note else ""
    return (head + table.to_csv(index=False)).encode()
