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
from scclip.io._checks import add_genome, build_mudata, finish_modality, split_by_type


def decode_strings(values) -> np.ndarray:
    values = np.asarray(values)
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)


def read_10x_h5(path: Path, modality: str | None, info: dict) -> md.MuData:
    with h5py.File(path, "r") as f:
        if "matrix" in f:
            g = f["matrix"]
            feats = g["features"]
            n_feat = len(feats["id"])
            var = pd.DataFrame({"gene_ids": decode_strings(feats["id"][()])}, index=decode_strings(feats["name"][()]))
            types = (
                decode_strings(feats["feature_type"][()])
                if "feature_type" in feats
                else ["Gene Expression"] * n_feat
            )
            var["feature_types"] = types
            for key in (
                "genome",
                "interval",
                *decode_strings(feats["_all_tag_keys"][()] if "_all_tag_keys" in feats else []),
            ):
                if key in feats and key not in var and len(feats[key]) == n_feat:
                    var[str(key)] = decode_strings(feats[key][()])
        else:  # Cell Ranger 2: one group named after the genome
            genome = next(iter(f.keys()))
            g = f[genome]
            var = pd.DataFrame({"gene_ids": decode_strings(g["genes"][()])}, index=decode_strings(g["gene_names"][()]))
            var["feature_types"], var["genome"] = "Gene Expression", genome
        barcodes = decode_strings(g["barcodes"][()])
        n_feat_shape, n_cells = (int(x) for x in g["shape"][()])
        data, indices, indptr = g["data"][()], g["indices"][()], g["indptr"][()]
    if n_feat_shape != len(var) or n_cells != len(barcodes) or len(indptr) != n_cells + 1:
        msg = f"{path} is inconsistent (shape, features and barcodes disagree): the file may be truncated."
        raise ScclipError(msg)
    # The 10x matrix is features x barcodes in CSC, i.e. barcodes x features in CSR: no conversion needed.
    X = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n_cells, len(var)))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    mods = split_by_type(adata, var["feature_types"], str(path), info["notes"], modality)
    for a in mods.values():
        add_genome(a)
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
    X = sp.csr_matrix(mmread(matrix).T, dtype=np.float32)
    feat, bc = read_tsv(features), read_tsv(barcodes)[0].to_numpy()
    if features.name.startswith("peaks.bed"):
        feat = pd.DataFrame(
            {0: feat[0] + ":" + feat[1] + "-" + feat[2], 2: "Peaks", 3: feat[0], 4: feat[1], 5: feat[2]}
        )
    names = feat[1] if feat.shape[1] > 1 else feat[0]
    var = pd.DataFrame({"gene_ids": feat[0].to_numpy()}, index=names.to_numpy())
    var["feature_types"] = feat[2].to_numpy() if 2 in feat else "Gene Expression"
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
