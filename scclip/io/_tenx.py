"""10x readers for :mod:`scclip.io`: Cell Ranger ``filtered_feature_bc_matrix.h5`` and Matrix Market folders.

A Cell Ranger ``.h5`` (v3+ ``matrix`` group or the v2 one-group-per-genome layout) and a folder with
``matrix.mtx(.gz)``, ``features.tsv(.gz)`` / ``genes.tsv`` / ``peaks.bed`` and ``barcodes.tsv(.gz)`` are split
by feature type into ``rna`` / ``atac``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.io import mmread

from scclip.errors import ScclipError
from scclip.io._checks import PEAK_RE, add_genome, build_mudata, finish_modality, split_by_type
from scclip.io._integrity import check_csr_arrays, check_mtx_header


def decode_strings(values) -> np.ndarray:
    values = np.asarray(values)
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)


_TENX_REQUIRED = ("barcodes", "data", "indices", "indptr", "shape")


def feature_types_from_names(names) -> np.ndarray:
    """10x feature types for a file that does not store them: ``Peaks`` for names like ``chr1:100-200``, else
    ``Gene Expression`` (a Cell Ranger ATAC file read as genes would be silently meaningless)."""
    names = pd.Index(np.asarray(names).astype(str))
    return np.where(names.str.match(PEAK_RE), "Peaks", "Gene Expression")


def _tenx_var(g, path: Path) -> pd.DataFrame:
    if "features" in g:  # Cell Ranger 3+
        feats = g["features"]
        missing = [k for k in ("id", "name") if k not in feats]
        if missing:
            msg = f"{path} is a Cell Ranger .h5 without matrix/features/{missing[0]}: the file is incomplete; re-export it from Cell Ranger."
            raise ScclipError(msg)
        n_feat = len(feats["id"])
        var = pd.DataFrame(
            {"gene_ids": decode_strings(feats["id"][()])}, index=decode_strings(feats["name"][()])
        )
        if len(var.index) != n_feat:
            msg = f"{path} is inconsistent: {n_feat} feature ids but {len(var.index)} feature names."
            raise ScclipError(msg)
        has_types = "feature_type" in feats and len(feats["feature_type"]) == n_feat
        var["feature_types"] = (
            decode_strings(feats["feature_type"][()]) if has_types else feature_types_from_names(var.index)
        )
        tags = decode_strings(feats["_all_tag_keys"][()]) if "_all_tag_keys" in feats else []
        for key in ("genome", "interval", *tags):
            if key in feats and key not in var and len(feats[key]) == n_feat:
                var[str(key)] = decode_strings(feats[key][()])
        return var
    if "genes" not in g or "gene_names" not in g:  # Cell Ranger 2: one group named after the genome
        msg = f"{path} is a Cell Ranger .h5 without its feature table (matrix/features): the file is incomplete; re-export it from Cell Ranger."
        raise ScclipError(msg)
    var = pd.DataFrame(
        {"gene_ids": decode_strings(g["genes"][()])}, index=decode_strings(g["gene_names"][()])
    )
    var["feature_types"], var["genome"] = "Gene Expression", g.name.strip("/")
    return var


def read_10x_h5(path: Path, modality: str | None, info: dict) -> md.MuData:
    with h5py.File(path, "r") as f:
        g = f["matrix"] if "matrix" in f else f[next(iter(f.keys()))]
        missing = [k for k in _TENX_REQUIRED if k not in g]
        if missing:
            msg = f"{path} is a Cell Ranger .h5 without {g.name.strip('/')}/{missing[0]}: the file is incomplete; re-export it from Cell Ranger."
            raise ScclipError(msg)
        var = _tenx_var(g, path)
        barcodes = decode_strings(g["barcodes"][()])
        shape = np.asarray(g["shape"][()]).ravel()
        if shape.size != 2 or shape.dtype.kind not in "iu" or (shape < 0).any():
            msg = f"{path} is damaged: matrix/shape is {shape.tolist()}, not (features, barcodes)."
            raise ScclipError(msg)
        n_feat_shape, n_cells = (int(x) for x in shape)
        if n_feat_shape != len(var) or n_cells != len(barcodes) or len(g["indptr"]) != n_cells + 1:
            msg = (
                f"{path} is inconsistent (shape, features and barcodes disagree): the file may be truncated."
            )
            raise ScclipError(msg)
        data, indices, indptr = g["data"][()], g["indices"][()], g["indptr"][()]
    # The 10x matrix is features x barcodes in CSC, i.e. barcodes x features in CSR: no conversion needed.
    check_csr_arrays(data, indices, indptr, (n_cells, len(var)), "count matrix", path)
    X = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n_cells, len(var)))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    mods = split_by_type(adata, var["feature_types"], str(path), info["notes"], modality)
    for a in mods.values():
        add_genome(a, str(path))
    return build_mudata({m: finish_modality(a, m, str(path), info["notes"]) for m, a in mods.items()}, info)


def first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_mtx_folder(root: Path) -> Path:
    if first_existing(root, ("matrix.mtx.gz", "matrix.mtx")):
        return root
    found = sorted({p.parent for p in root.rglob("matrix.mtx*") if p.name in ("matrix.mtx", "matrix.mtx.gz")})
    if len(found) > 1:
        found = [p for p in found if "filtered" in str(p)] or found
    if len(found) != 1:
        what = "no matrix.mtx(.gz)" if not found else f"several matrix folders ({', '.join(map(str, found))})"
        msg = f"Found {what} in {root}: point to the one 10x folder to read."
        raise ScclipError(msg)
    return found[0]


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, dtype=str, comment=None)


def read_mtx_dir(root: Path, modality: str | None, info: dict) -> md.MuData:
    folder = find_mtx_folder(root)
    matrix = first_existing(folder, ("matrix.mtx.gz", "matrix.mtx"))
    features = first_existing(
        folder, ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv", "peaks.bed.gz", "peaks.bed")
    )
    barcodes = first_existing(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    if features is None or barcodes is None:
        missing = [
            n for n, p in (("features.tsv(.gz)", features), ("barcodes.tsv(.gz)", barcodes)) if p is None
        ]
        msg = f"The 10x folder {folder} has matrix.mtx but no {' or '.join(missing)}."
        raise ScclipError(msg)
    feat, bc = read_tsv(features), read_tsv(barcodes)[0].to_numpy()
    check_mtx_header(matrix, len(feat), len(bc))
    X = sp.csr_matrix(mmread(matrix).T, dtype=np.float32)
    if features.name.startswith("peaks.bed"):
        feat = pd.DataFrame(
            {0: feat[0] + ":" + feat[1] + "-" + feat[2], 2: "Peaks", 3: feat[0], 4: feat[1], 5: feat[2]}
        )
    names = feat[1] if feat.shape[1] > 1 else feat[0]
    var = pd.DataFrame({"gene_ids": feat[0].to_numpy()}, index=names.to_numpy())
    var["feature_types"] = feat[2].to_numpy() if 2 in feat else feature_types_from_names(var.index)
    if feat.shape[1] >= 6:
        var["chrom"], var["start"], var["end"] = feat[3].to_numpy(), feat[4].to_numpy(), feat[5].to_numpy()
        var["interval"] = var["chrom"] + ":" + var["start"] + "-" + var["end"]
        for col in ("start", "end"):
            pos = pd.to_numeric(var[col], errors="coerce")
            if pos.notna().all():
                var[col] = pos.astype(np.int64)
    if X.shape != (len(bc), len(var)):
        msg = f"{matrix} is {X.shape[1]} x {X.shape[0]} but {features.name} / {barcodes.name} list {len(var)} / {len(bc)}."
        raise ScclipError(msg)
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=bc), var=var)
    mods = split_by_type(adata, var["feature_types"], str(folder), info["notes"], modality)
    return build_mudata({m: finish_modality(a, m, str(folder), info["notes"]) for m, a in mods.items()}, info)
