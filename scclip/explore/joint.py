"""The joint cell table: RNA cells, then ATAC cells, one global index per cell in one embedding space."""

from __future__ import annotations

from dataclasses import dataclass, field

import mudata as md
import numpy as np
import pandas as pd

from scclip._constants import EMBED_KEY
from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_LABELS


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


def default_color_column(columns: list[str]) -> str:
    """The colouring offered first: a cell-type-like column (``cell_type``, ``celltype``, ``cell type``,
    ``leiden``, ``louvain``), else the first column other than ``modality``, else ``modality``."""
    col = next((c for c in ("cell_type", "celltype", "cell type", "leiden", "louvain") if c in columns), None)
    return col or next((c for c in columns if c != "modality"), "modality")


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


#: QC columns added by :func:`add_qc`, per modality: (total counts, features detected).
QC_COLUMNS = {"rna": ("RNA counts", "RNA genes detected"), "atac": ("ATAC counts", "ATAC peaks detected")}


def add_qc(joint: Joint, mdata: md.MuData) -> Joint:
    """Per-cell QC of the input counts as colourable obs columns: each modality's total counts and detected
    features (:data:`QC_COLUMNS`). A cell's RNA values also label its ATAC profile when the data are paired
    (same barcode); other cells stay empty (drawn grey)."""
    import scipy.sparse as sp

    barcodes = joint.obs["barcode"].astype(str).to_numpy()
    for m, (counts_col, detected_col) in QC_COLUMNS.items():
        if m not in mdata.mod:
            continue
        X = mdata[m].X
        X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
        totals = pd.Series(np.asarray(X.sum(axis=1)).ravel(), index=mdata[m].obs_names.astype(str))
        detected = pd.Series(np.diff(X.indptr), index=totals.index)
        own = joint.modality == MODALITY_LABELS[m]
        rows = np.ones(joint.n, dtype=bool) if joint.paired else own
        for col, values in ((counts_col, totals), (detected_col, detected)):
            out = np.full(joint.n, np.nan)
            if values.index.is_unique:
                out[rows] = values.reindex(barcodes[rows]).to_numpy(dtype=float)
            else:  # duplicated barcodes: only each modality's own rows, in order
                out[own] = values.to_numpy(dtype=float)[: own.sum()]
            joint.obs[col] = out
    return joint
