"""Conversion of the five upstream SNARE-seq files (scMoMaT's ``MOp_5batches``) into (rna, atac) AnnData.

Used by :func:`scclip.datasets.chen2019_snareseq` when a data folder holds the upstream files
(``GxC1.npz``, ``RxC1.npz``, ``genes.txt``, ``regions.txt``, ``meta_c1.csv``) but no converted ``.h5mu``.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip.errors import ScclipError
from scclip.genome import chrom_sort_key, parse_intervals

logger = logging.getLogger("scclip.datasets")  # the loader's logger

# Ident (fine type, Chen et al. 2019) -> coarse type, the mapping scMoMaT stores as ``cluster (remapped)``;
# used only when a meta_c1.csv lacks that column. Idents not listed keep their own name.
COARSE_TYPES = {
    "E2Rasgrf2": "L2/3",
    "E3Rmst": "L2/3",
    "E3Rorb": "L2/3",
    "E4Il1rapl2": "L4/5",
    "E4Thsd7a": "L4/5",
    "E5Galnt14": "L4/5",
    "E5Parm1": "L4/5",
    "E5Sulf1": "L4/5",
    "E5Tshz2": "L4/5",
    "E6Tle4": "L6",
    "Ast": "Astro",
    "OliM": "Oligo",
    "OliI": "Oligo",
    "InV": "CGE",
    "InS": "Sst",
    "InP": "Pvalb",
    "InN": "Npy",
    "Mic": "MGC",
}


def read_matrix(path: Path) -> sp.csr_matrix:
    """A count matrix from a scipy ``save_npz`` file (or an ``.npz`` holding one dense array)."""
    bad = (OSError, ValueError, KeyError, zipfile.BadZipFile)
    try:
        return sp.csr_matrix(sp.load_npz(path))
    except bad:
        pass
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            X = z[keys[0]] if len(keys) == 1 else None
    except bad as err:
        msg = f"{path} is not a readable .npz count matrix ({err}); re-download it with download=True."
        raise ScclipError(msg) from err
    if X is None or np.ndim(X) != 2:
        msg = f"{path} is neither a scipy.sparse.save_npz matrix nor an .npz holding one 2-D array."
        raise ScclipError(msg)
    return sp.csr_matrix(X)


def cells_by_features(X: sp.csr_matrix, n_cells: int, path: Path) -> sp.csr_matrix:
    """Orient ``X`` as cells x features (upstream stores features x cells)."""
    if X.shape[1] == n_cells:
        X = X.T
    elif X.shape[0] != n_cells:
        msg = f"{path} has shape {X.shape}, but meta_c1.csv lists {n_cells} cells: the files do not belong together."
        raise ScclipError(msg)
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sum_duplicates()
    X.sort_indices()
    return X


def read_names(path: Path, n: int, *, header=None) -> np.ndarray:
    """One name per line (blank lines and an optional header line are dropped); exactly ``n`` are expected."""
    lines = [ln.strip().strip("\"'") for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) == n + 1 and (header is None or header(lines[0])):
        lines = lines[1:]
    if len(lines) != n:
        msg = f"{path} lists {len(lines)} names but its count matrix has {n} rows: the files do not belong together."
        raise ScclipError(msg)
    return np.asarray(lines, dtype=object)


def read_meta(path: Path) -> pd.DataFrame:
    try:
        meta = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        msg = f"Could not read {path} as CSV ({err}); re-download it with download=True."
        raise ScclipError(msg) from err
    missing = [c for c in ("Batch", "Ident") if c not in meta.columns]
    if missing:
        msg = f"{path} lacks the column(s) {missing} (has {list(meta.columns)}): it is not scMoMaT's meta_c1.csv."
        raise ScclipError(msg)
    if not pd.api.types.is_string_dtype(meta.index) and "Barcode" in meta.columns:
        meta.index = meta["Batch"].astype(str) + "_" + meta["Barcode"].astype(str)
    meta.index = meta.index.astype(str)
    if not meta.index.is_unique:
        msg = f"{path} has duplicate cell barcodes (e.g. {meta.index[meta.index.duplicated()][0]!r})."
        raise ScclipError(msg)
    fine = meta["Ident"].astype(str)
    if "cluster (remapped)" in meta.columns:
        coarse = meta["cluster (remapped)"].astype(str)
    else:
        logger.info("%s has no 'cluster (remapped)' column: coarse types derived from Ident", path)
        coarse = fine.map(lambda x: COARSE_TYPES.get(x, x))
    return pd.DataFrame(
        {
            "cell_type": pd.Categorical(coarse.to_numpy()),
            "cell_type_fine": pd.Categorical(fine.to_numpy()),
            "batch": pd.Categorical(meta["Batch"].astype(str).to_numpy()),
        },
        index=pd.Index(meta.index, name=None),
    )


def convert_raw(folder: Path) -> tuple[ad.AnnData, ad.AnnData]:
    """The five upstream files in ``folder`` as (rna, atac) AnnData, cells x features."""
    obs = read_meta(folder / "meta_c1.csv")
    n = len(obs)
    rna_x = cells_by_features(read_matrix(folder / "GxC1.npz"), n, folder / "GxC1.npz")
    atac_x = cells_by_features(read_matrix(folder / "RxC1.npz"), n, folder / "RxC1.npz")
    genes = read_names(folder / "genes.txt", rna_x.shape[1])
    regions = read_names(
        folder / "regions.txt",
        atac_x.shape[1],
        header=lambda line: parse_intervals([line], errors="coerce")[0][0] == "",
    )
    chrom, start, end = parse_intervals(regions, what=f"{folder / 'regions.txt'} region")
    order = sorted(set(chrom), key=chrom_sort_key)
    avar = pd.DataFrame(
        {"chrom": pd.Categorical(chrom, categories=order), "start": start, "end": end},
        index=[f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end, strict=True)],
    )
    rna = ad.AnnData(rna_x, obs=obs.copy(), var=pd.DataFrame(index=pd.Index(genes.astype(str))))
    atac = ad.AnnData(atac_x, obs=obs.copy(), var=avar)
    for adata in (rna, atac):
        if not adata.var_names.is_unique:
            logger.info("duplicate feature names made unique (suffixes -1, -2, ...)")
            adata.var_names_make_unique()
    return rna, atac
