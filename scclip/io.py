"""Read the single-cell files users have into a :class:`mudata.MuData` with modalities ``rna`` / ``atac``.

Supported inputs (dispatched by suffix, then by content):

* ``.h5mu``: modalities ``rna`` and ``atac``; common aliases (``gex``, ``Gene Expression``, ``peaks``,
  ``ATAC``, ...) are accepted and reported.
* ``.h5ad`` with one modality (``modality=`` or inferred from the feature names: peaks look like
  ``chr1:100-200``, ``chr1-100-200`` or ``chr1_100_200``), or a mixed one with ``var['feature_types']``.
* Cell Ranger (ARC / ATAC) ``filtered_feature_bc_matrix.h5``, split by ``features/feature_type``.
* 10x Matrix Market folders (``matrix.mtx(.gz)``, ``features.tsv(.gz)`` / ``genes.tsv`` / ``peaks.bed``,
  ``barcodes.tsv(.gz)``) and ``.tar.gz`` archives of them (extracted safely to a temporary folder).

Every modality comes back with ``X`` as float32 CSR raw counts, all ``obs`` metadata and whatever coordinate
columns the file had in ``var``. What was recognised or inferred is logged and recorded in
``mdata.uns['scclip_read']`` (``source``, ``format``, ``notes``).
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import tempfile
import uuid
import warnings
from pathlib import Path, PurePosixPath

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.io import mmread

from scclip.errors import ScclipError

__all__ = [
    "MODALITIES",
    "check_modality_data",
    "paired_cells",
    "pairing_report",
    "read",
    "read_pair",
    "write_h5mu",
]

logger = logging.getLogger(__name__)

MODALITIES = ("rna", "atac")
_ALIASES = {
    "rna": {"rna", "gex", "gene expression", "expression", "scrna", "rna seq", "mrna", "transcriptome"},
    "atac": {
        "atac",
        "peaks",
        "peak",
        "chromatin accessibility",
        "accessibility",
        "chromatin",
        "scatac",
        "atac seq",
    },
}
_PEAK_RE = r"^(?:chr)?[A-Za-z0-9_.]+?[:_-]\d+[-_]\d+$"
_COUNT_LAYERS = ("counts", "raw_counts", "count", "raw")
_SUPPORTED = (
    ".h5mu, .h5ad, a Cell Ranger filtered_feature_bc_matrix.h5, a 10x Matrix Market folder "
    "(matrix.mtx(.gz) + features.tsv(.gz) + barcodes.tsv(.gz)) or a .tar.gz of such a folder"
)


def _canonical(name: str) -> str | None:
    """``'Gene Expression'`` -> ``'rna'``, ``'Peaks'`` -> ``'atac'``; ``None`` when unknown."""
    key = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    return next((mod for mod, names in _ALIASES.items() if key in names), None)


def _check_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    canon = _canonical(modality)
    if canon is None:
        msg = (
            f"Unknown modality {modality!r}: use 'rna' (gene expression) or 'atac' (chromatin accessibility)."
        )
        raise ScclipError(msg)
    return canon


def _peak_fraction(names) -> float:
    names = pd.Index(names).astype(str)
    return float(names.str.match(_PEAK_RE).mean()) if len(names) else 0.0


def _infer_modality(adata: ad.AnnData) -> tuple[str | None, str]:
    """Guess the modality of a one-modality AnnData from ``var['feature_types']`` or the feature names."""
    if "feature_types" in adata.var:
        kinds = {_canonical(t) for t in pd.unique(adata.var["feature_types"].astype(str))}
        if len(kinds) == 1 and None not in kinds:
            kind = kinds.pop()
            return kind, f"var['feature_types'] says {kind}"
    frac = _peak_fraction(adata.var_names)
    if frac >= 0.9:
        return "atac", f"{frac:.0%} of feature names look like peaks (chr:start-end)"
    if frac <= 0.1:
        return "rna", f"{1 - frac:.0%} of feature names look like genes, not peaks"
    return None, f"{frac:.0%} of feature names look like peaks (chr:start-end), the rest do not"


def _non_integer(X) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    data = data[:1_000_000]
    return bool(data.size) and not np.allclose(data, np.round(data), atol=1e-6)


def _to_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    X.sum_duplicates()
    return X


def _check_values(X, mod: str, source: str) -> None:
    """Refuse NaN / infinite values and negative counts (the message says what to do instead)."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    bad = ~np.isfinite(data)
    if bad.any():
        msg = (
            f"The {mod} matrix in {source} holds {int(bad.sum()):,} NaN or infinite values: scCLIP needs raw "
            "counts (or log-normalised values for RNA). Replace them (e.g. X[np.isnan(X)] = 0) or pass the "
            "raw counts (layers['counts'])."
        )
        raise ScclipError(msg)
    neg = data < 0
    if not neg.any():
        return
    sample = data[neg][:1_000_000]
    if mod == "rna" and not np.allclose(sample, np.round(sample), atol=1e-6):
        msg = (
            f"The RNA matrix in {source} has {int(neg.sum()):,} negative values: it looks scaled (z-scored, "
            "e.g. scanpy pp.scale), which cannot be turned back into expression. Pass raw counts "
            "(layers['counts']) or the log-normalised values (keep them in adata.raw before scaling)."
        )
    else:
        msg = (
            f"The {mod} matrix in {source} has {int(neg.sum()):,} negative values (e.g. {float(sample[0]):g}); "
            "counts cannot be negative. Pass the raw count matrix (layers['counts'] or the 10x .h5)."
        )
    raise ScclipError(msg)


def check_modality_data(adata: ad.AnnData, mod: str, source: str = "the data") -> None:
    """Check one modality before it is used: a matrix ``X``, cells and features, unique barcodes, unique
    feature names, finite non-negative values. Raises :class:`ScclipError` saying what is wrong and what to do.

    Parameters
    ----------
    adata
        One modality (``X`` cells x features).
    mod
        ``'rna'`` or ``'atac'``.
    source
        How to name the data in messages (a file name).
    """
    if adata.X is None:
        msg = (
            f"The {mod} AnnData in {source} has no matrix X. Store the raw counts in X "
            "(adata.X = adata.layers['counts']) and save the file again."
        )
        raise ScclipError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"The {mod} matrix in {source} is empty ({adata.n_obs} cells x {adata.n_vars} features): check the file."
        raise ScclipError(msg)
    obs_names = pd.Index(adata.obs_names).astype(str)
    if not obs_names.is_unique:
        dup = obs_names[obs_names.duplicated()].unique()[:3].tolist()
        msg = (
            f"The {mod} cell barcodes in {source} are not unique (e.g. {dup}). If the file merges several "
            "samples, prefix each barcode with its sample name so that every cell has its own id."
        )
        raise ScclipError(msg)
    var_names = pd.Index(adata.var_names).astype(str)
    if not var_names.is_unique and not _unique_gene_ids(adata, mod):
        dup = var_names[var_names.duplicated()].unique()
        what = "peak" if mod == "atac" else "gene"
        msg = (
            f"The {mod} feature names in {source} are not unique ({len(dup):,} {what} names occur more than "
            f"once, e.g. {dup[:3].tolist()}): each feature must occur once. Sum or drop the duplicated "
            "columns" + (", or add a unique var['gene_ids'] column" if mod == "rna" else "") + "."
        )
        raise ScclipError(msg)
    _check_values(adata.X, mod, source)


def _unique_gene_ids(adata: ad.AnnData, mod: str) -> bool:
    """RNA features with duplicate symbols are fine when a unique gene id tells them apart."""
    if mod != "rna":
        return False
    col = next((c for c in ("gene_ids", "gene_id", "ensembl_id") if c in adata.var), None)
    return col is not None and adata.var[col].astype(str).is_unique


def _finish(adata: ad.AnnData, mod: str, source: str, notes: list[str]) -> ad.AnnData:
    """Validate one modality and bring it to the common layout (str names, float32 CSR X)."""
    check_modality_data(adata, mod, source)
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    if not adata.var_names.is_unique:  # RNA symbols told apart by unique gene ids
        adata.var_names_make_unique()
        notes.append(
            f"{mod}: duplicate gene symbols were made unique (suffixes -1, -2, ...); they match by gene id"
        )
    adata.X = _to_csr(adata.X)
    if adata.X.nnz == 0:
        notes.append(f"{mod}: the matrix has no non-zero counts")
    return adata


def _build(mods: dict[str, ad.AnnData], info: dict, global_obs: pd.DataFrame | None = None) -> md.MuData:
    for note in info.get("notes", []):
        logger.info("%s: %s", info.get("source", ""), note)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({m: mods[m] for m in MODALITIES if m in mods})
    if global_obs is not None and global_obs.index.is_unique:
        for col in global_obs.columns:
            mdata.obs[col] = global_obs[col].reindex(mdata.obs_names).to_numpy()
    mdata.uns["scclip_read"] = info
    genomes = {str(a.uns["genome"]) for a in mods.values() if "genome" in a.uns}
    if len(genomes) == 1:
        mdata.uns["genome"] = genomes.pop()
    return mdata


def _split_by_type(
    adata: ad.AnnData, types, source: str, notes: list[str], modality: str | None = None
) -> dict[str, ad.AnnData]:
    """Split a mixed feature matrix by 10x feature types (``Gene Expression`` / ``Peaks``).

    With ``modality`` only that one is sliced out; it is an error when the file lacks it.
    """
    types = pd.Series(np.asarray(types).astype(str))
    canon = types.map(lambda t: _canonical(t) or "")
    mods, found = {}, []
    for mod in MODALITIES:
        mask = (canon == mod).to_numpy()
        if not mask.any():
            continue
        found.append(mod)
        if modality in (None, mod):
            mods[mod] = adata if mask.all() else adata[:, mask].copy()
            used = ", ".join(sorted(types[mask].unique()))
            notes.append(f"{mod}: {int(mask.sum())} features of type {used}")
    other = sorted(types[canon == ""].unique())
    if other:
        notes.append(f"ignored features of type {', '.join(other)} (only gene expression and peaks are used)")
    if not found:
        msg = f"{source} has no gene expression or peak features (feature types found: {', '.join(other)})."
        raise ScclipError(msg)
    if modality is not None and modality not in mods:
        msg = f"{source} has no {modality} data (it holds: {', '.join(found)})."
        raise ScclipError(msg)
    return mods


def _select(mods: dict[str, ad.AnnData], modality: str | None, source: str) -> dict[str, ad.AnnData]:
    if modality is None:
        return mods
    if modality not in mods:
        msg = f"{source} has no {modality} data (it holds: {', '.join(mods) or 'nothing usable'})."
        raise ScclipError(msg)
    return {modality: mods[modality]}


def _add_genome(adata: ad.AnnData) -> None:
    if "genome" in adata.var:
        genomes = pd.unique(adata.var["genome"].astype(str))
        if len(genomes) == 1:
            adata.uns["genome"] = str(genomes[0])


def _has_negative(X) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    return bool(data.size) and bool(np.nanmin(data[:1_000_000]) < 0)


def _use_counts(adata: ad.AnnData, notes: list[str]) -> ad.AnnData:
    """Use a raw-count layer when ``X`` holds normalised values and the file kept the counts.

    Without ``X`` a count layer is used; scaled ``X`` (negative values) falls back to ``.raw`` when that holds
    non-negative (log-normalised) values.
    """
    if adata.X is None:
        for layer in _COUNT_LAYERS:
            if layer in adata.layers:
                notes.append(f"the file has no X; used layers['{layer}'] as counts")
                adata.X = adata.layers[layer]
                return adata
        return adata  # check_modality_data says what to do
    if not _non_integer(adata.X):
        return adata
    for layer in _COUNT_LAYERS:
        if layer in adata.layers and not _non_integer(adata.layers[layer]):
            notes.append(f"X is not integer counts; used layers['{layer}'] as raw counts")
            adata.X = adata.layers[layer]
            return adata
    if adata.raw is not None and adata.raw.n_vars == adata.n_vars and not _non_integer(adata.raw.X):
        if (adata.raw.var_names == adata.var_names).all():
            notes.append("X is not integer counts; used .raw.X as raw counts")
            adata.X = adata.raw.X
            return adata
    if adata.raw is not None and _has_negative(adata.X) and not _has_negative(adata.raw.X):
        notes.append(
            f"X is scaled (negative values); used .raw ({adata.raw.n_vars} features, log-normalised) instead"
        )
        return ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var, uns=adata.uns)
    notes.append("X is not integer counts and no raw-count layer was found; X is used as it is")
    return adata


# --------------------------------------------------------------------------------------------- readers
def _read_h5mu(path: Path, modality: str | None, info: dict) -> md.MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.read_h5mu(path)
    notes, mods = info["notes"], {}
    global_obs = mdata.obs.loc[
        :, [c for c in mdata.obs.columns if not any(c.startswith(f"{k}:") for k in mdata.mod)]
    ]
    for key, adata in mdata.mod.items():
        mod, how = _canonical(key), f"modality '{key}'"
        if mod is None:
            mod, reason = _infer_modality(adata)
            how = f"modality '{key}' ({reason})"
            if mod is None or (mod == "rna" and "feature_types" not in adata.var):
                notes.append(f"ignored modality '{key}': not recognised as rna or atac")
                continue
        if mod in mods:
            msg = f"{path} has two {mod} modalities ({info['modalities'][mod]!r} and {key!r}): keep only one."
            raise ScclipError(msg)
        info.setdefault("modalities", {})[mod] = key
        if key != mod:
            notes.append(f"used {how} as {mod}")
        for col in global_obs.columns.difference(adata.obs.columns):
            adata.obs[col] = global_obs[col].reindex(adata.obs_names).to_numpy()
        mods[mod] = _use_counts(adata, notes)
        _add_genome(mods[mod])
    if not mods:
        msg = f"{path} has no rna or atac modality (found: {', '.join(mdata.mod)}); rename them to 'rna' / 'atac'."
        raise ScclipError(msg)
    mods = {m: _finish(a, m, str(path), notes) for m, a in _select(mods, modality, str(path)).items()}
    return _build(mods, info, global_obs)


def _read_h5ad(path: Path, modality: str | None, info: dict) -> md.MuData:
    adata = ad.read_h5ad(path)
    notes = info["notes"]
    adata = _use_counts(adata, notes)
    types = adata.var.get("feature_types")
    if types is not None and len({_canonical(t) for t in pd.unique(types.astype(str))} - {None}) > 1:
        mods = _split_by_type(adata, types, str(path), notes, modality)
    else:
        guess, reason = _infer_modality(adata)
        if modality is None:
            if guess is None:
                msg = (
                    f"Cannot tell whether {path} holds RNA or ATAC ({reason}): pass modality='rna' or 'atac'."
                )
                raise ScclipError(msg)
            notes.append(f"inferred modality {guess}: {reason}")
            modality = guess
        elif modality == "rna" and guess == "atac" and "feature_types" not in adata.var:
            msg = f"{path} was given as RNA but {reason}: is it the ATAC file (were the two files swapped)?"
            raise ScclipError(msg)
        mods = {modality: adata}
    for a in mods.values():
        _add_genome(a)
    return _build({m: _finish(a, m, str(path), notes) for m, a in mods.items()}, info)


def _decode(values) -> np.ndarray:
    values = np.asarray(values)
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)


def _read_10x_h5(path: Path, modality: str | None, info: dict) -> md.MuData:
    with h5py.File(path, "r") as f:
        if "matrix" in f:
            g = f["matrix"]
            feats = g["features"]
            n_feat = len(feats["id"])
            var = pd.DataFrame({"gene_ids": _decode(feats["id"][()])}, index=_decode(feats["name"][()]))
            types = (
                _decode(feats["feature_type"][()])
                if "feature_type" in feats
                else ["Gene Expression"] * n_feat
            )
            var["feature_types"] = types
            for key in (
                "genome",
                "interval",
                *_decode(feats["_all_tag_keys"][()] if "_all_tag_keys" in feats else []),
            ):
                if key in feats and key not in var and len(feats[key]) == n_feat:
                    var[str(key)] = _decode(feats[key][()])
        else:  # Cell Ranger 2: one group named after the genome
            genome = next(iter(f.keys()))
            g = f[genome]
            var = pd.DataFrame({"gene_ids": _decode(g["genes"][()])}, index=_decode(g["gene_names"][()]))
            var["feature_types"], var["genome"] = "Gene Expression", genome
        barcodes = _decode(g["barcodes"][()])
        n_feat_shape, n_cells = (int(x) for x in g["shape"][()])
        data, indices, indptr = g["data"][()], g["indices"][()], g["indptr"][()]
    if n_feat_shape != len(var) or n_cells != len(barcodes) or len(indptr) != n_cells + 1:
        msg = f"{path} is inconsistent (shape, features and barcodes disagree): the file may be truncated."
        raise ScclipError(msg)
    # The 10x matrix is features x barcodes in CSC, i.e. barcodes x features in CSR: no conversion needed.
    X = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n_cells, len(var)))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    mods = _split_by_type(adata, var["feature_types"], str(path), info["notes"], modality)
    for a in mods.values():
        _add_genome(a)
    return _build({m: _finish(a, m, str(path), info["notes"]) for m, a in mods.items()}, info)


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _find_mtx_folder(root: Path) -> Path:
    if _first(root, ("matrix.mtx.gz", "matrix.mtx")):
        return root
    found = sorted({p.parent for p in root.rglob("matrix.mtx*") if p.name in ("matrix.mtx", "matrix.mtx.gz")})
    if len(found) > 1:
        found = [p for p in found if "filtered" in str(p)] or found
    if len(found) != 1:
        what = "no matrix.mtx(.gz)" if not found else f"several matrix folders ({', '.join(map(str, found))})"
        msg = f"Found {what} in {root}: point to the one 10x folder to read."
        raise ScclipError(msg)
    return found[0]


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, dtype=str, comment=None)


def _read_mtx_dir(root: Path, modality: str | None, info: dict) -> md.MuData:
    folder = _find_mtx_folder(root)
    matrix = _first(folder, ("matrix.mtx.gz", "matrix.mtx"))
    features = _first(
        folder, ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv", "peaks.bed.gz", "peaks.bed")
    )
    barcodes = _first(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    if features is None or barcodes is None:
        missing = [
            n for n, p in (("features.tsv(.gz)", features), ("barcodes.tsv(.gz)", barcodes)) if p is None
        ]
        msg = f"The 10x folder {folder} has matrix.mtx but no {' or '.join(missing)}."
        raise ScclipError(msg)
    X = sp.csr_matrix(mmread(matrix).T, dtype=np.float32)
    feat, bc = _read_tsv(features), _read_tsv(barcodes)[0].to_numpy()
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
    mods = _split_by_type(adata, var["feature_types"], str(folder), info["notes"], modality)
    return _build({m: _finish(a, m, str(folder), info["notes"]) for m, a in mods.items()}, info)


def _read_tar(path: Path, modality: str | None, info: dict) -> md.MuData:
    with tarfile.open(path, "r:*") as tar, tempfile.TemporaryDirectory(prefix="scclip_") as tmp:
        members = tar.getmembers()
        for m in members:
            parts = PurePosixPath(m.name).parts
            if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name) or ".." in parts:
                msg = f"Refusing to extract {path}: member {m.name!r} points outside the archive folder."
                raise ScclipError(msg)
            if not (m.isfile() or m.isdir()):
                msg = f"Refusing to extract {path}: member {m.name!r} is a link or device, not a plain file."
                raise ScclipError(msg)
        tar.extractall(tmp, members=members, filter="data")
        root = Path(tmp)
        inner = [p for p in root.rglob("*") if p.suffix in (".h5", ".h5ad", ".h5mu")]
        if not any(root.rglob("matrix.mtx*")) and len(inner) == 1:
            info["notes"].append(f"read {inner[0].relative_to(root)} from the archive")
            return _read_hdf5(inner[0], modality, info)
        return _read_mtx_dir(root, modality, info)


def _read_hdf5(path: Path, modality: str | None, info: dict) -> md.MuData:
    if not h5py.is_hdf5(path):
        msg = f"{path} is not a valid HDF5 file (corrupt or incomplete download?); expected {_SUPPORTED}."
        raise ScclipError(msg)
    with h5py.File(path, "r") as f:
        keys = set(f.keys())
        cr2 = (
            len(keys) == 1
            and isinstance(f[next(iter(keys))], h5py.Group)
            and "gene_names" in f[next(iter(keys))]
        )
    if "mod" in keys:
        info["format"] = "h5mu"
        return _read_h5mu(path, modality, info)
    if "matrix" in keys or cr2:
        info["format"] = "10x_h5"
        return _read_10x_h5(path, modality, info)
    if "var" in keys and "obs" in keys:  # AnnData (X may be missing: a count layer or a clear error)
        info["format"] = "h5ad"
        return _read_h5ad(path, modality, info)
    msg = f"{path} is HDF5 but not a known single-cell layout (top-level keys: {sorted(keys)}); expected {_SUPPORTED}."
    raise ScclipError(msg)


def read(path, *, modality: str | None = None) -> md.MuData:
    """Read RNA and/or ATAC counts from any supported file into a MuData.

    Parameters
    ----------
    path
        ``.h5mu``, ``.h5ad``, Cell Ranger ``.h5``, a 10x Matrix Market folder (or its ``matrix.mtx(.gz)``),
        or a ``.tar.gz`` of such a folder.
    modality
        ``'rna'`` or ``'atac'`` (aliases accepted). For ``.h5ad`` it names the modality of the file
        (otherwise inferred from the features); for multi-modal files it keeps only that modality.

    Returns
    -------
    MuData with modalities ``rna`` and/or ``atac``: ``X`` float32 CSR raw counts, ``obs`` metadata kept,
    ``uns['scclip_read']`` says what was recognised (``source``, ``format``, ``notes``).
    """
    path = Path(path).expanduser()
    modality = _check_modality(modality)
    if not path.exists():
        msg = f"{path} does not exist: check the path (expected {_SUPPORTED})."
        raise ScclipError(msg)
    name = path.name.lower()
    info: dict = {"source": str(path), "format": "", "notes": []}
    with warnings.catch_warnings():  # duplicate names get scclip's own message (check_modality_data)
        warnings.filterwarnings("ignore", message=r".*names are not unique", category=UserWarning)
        return _read_path(path, name, modality, info)


def _read_path(path: Path, name: str, modality: str | None, info: dict) -> md.MuData:
    try:
        if path.is_dir() or name.endswith((".mtx", ".mtx.gz")):
            info["format"] = "10x_mtx"
            return _read_mtx_dir(path if path.is_dir() else path.parent, modality, info)
        if name.endswith((".tar.gz", ".tgz", ".tar")) or (
            not h5py.is_hdf5(path) and tarfile.is_tarfile(path)
        ):
            info["format"] = "10x_mtx_tar"
            return _read_tar(path, modality, info)
        if name.endswith((".h5mu", ".h5ad", ".h5", ".hdf5")) or h5py.is_hdf5(path):
            return _read_hdf5(path, modality, info)
    except ScclipError:
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError, EOFError, tarfile.TarError) as err:
        msg = f"Could not read {path} as {info['format'] or 'a single-cell file'} ({type(err).__name__}: {err}); the file may be corrupt or not in a supported layout ({_SUPPORTED})."
        raise ScclipError(msg) from err
    msg = f"Unknown format for {path}: expected {_SUPPORTED}."
    raise ScclipError(msg)


def pairing_report(mdata: md.MuData) -> dict:
    """How many cells each modality has and how many are shared (paired = same barcode in both).

    Returns
    -------
    dict with ``n_rna``, ``n_atac``, ``n_shared``, ``paired`` (the modalities share at least one barcode),
    ``fraction`` (shared / all distinct cells), ``fraction_rna`` and ``fraction_atac`` (shared / each modality).
    """
    names = {m: mdata.mod[m].obs_names if m in mdata.mod else pd.Index([]) for m in MODALITIES}
    n_rna, n_atac = len(names["rna"]), len(names["atac"])
    n_shared = int(names["rna"].isin(names["atac"]).sum())
    n_union = n_rna + n_atac - n_shared
    return {
        "n_rna": n_rna,
        "n_atac": n_atac,
        "n_shared": n_shared,
        "paired": n_shared > 0,
        "fraction": n_shared / n_union if n_union else 0.0,
        "fraction_rna": n_shared / n_rna if n_rna else 0.0,
        "fraction_atac": n_shared / n_atac if n_atac else 0.0,
    }


def paired_cells(mdata: md.MuData) -> md.MuData:
    """The cells measured in both modalities, with ``rna`` and ``atac`` in the same (RNA) cell order."""
    missing = [m for m in MODALITIES if m not in mdata.mod]
    if missing:
        msg = f"Paired cells need both rna and atac; this data has no {' or '.join(missing)}."
        raise ScclipError(msg)
    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    shared = rna.obs_names[rna.obs_names.isin(atac.obs_names)]
    if len(shared) == 0:
        hint = ""
        strip = r"-\d+$"
        if (
            rna.obs_names.str.replace(strip, "", regex=True)
            .isin(atac.obs_names.str.replace(strip, "", regex=True))
            .any()
        ):
            hint = " The barcodes match once a '-N' suffix is removed: make the suffixes agree."
        msg = (
            f"No barcode is shared between rna ({rna.obs_names[0]}, ...) and atac ({atac.obs_names[0]}, ...): "
            f"these are not paired measurements of the same cells; use them unpaired.{hint}"
        )
        raise ScclipError(msg)
    info = dict(mdata.uns.get("scclip_read", {"notes": []}))
    info["notes"] = [*list(info.get("notes", [])), f"kept the {len(shared)} cells present in both modalities"]
    mods = {"rna": rna[shared].copy(), "atac": atac[shared].copy()}
    return _build(mods, info, mdata.obs if mdata.obs.shape[1] else None)


def read_pair(rna_path, atac_path, *, paired: bool = False) -> tuple[md.MuData, dict]:
    """Read RNA from one file and ATAC from another.

    Parameters
    ----------
    rna_path, atac_path
        Any file :func:`read` accepts; the ``rna`` (``atac``) modality is taken from each.
    paired
        The files measure the same cells (e.g. 10x Multiome): keep the shared barcodes in the same order
        (error when none are shared). Otherwise both are kept whole (unpaired).

    Returns
    -------
    The MuData and its :func:`pairing_report`.
    """
    rna = read(rna_path, modality="rna")
    atac = read(atac_path, modality="atac")
    notes = [*rna.uns["scclip_read"]["notes"], *atac.uns["scclip_read"]["notes"]]
    mods = {"rna": rna.mod["rna"], "atac": atac.mod["atac"]}
    shared = int(mods["rna"].obs_names.isin(mods["atac"].obs_names).sum())
    if shared and not paired:
        notes.append(f"the files share {shared} barcodes; pass paired=True to use them as paired cells")
    mdata = _build(mods, {"source": f"{rna_path} + {atac_path}", "format": "pair", "notes": notes})
    report = pairing_report(mdata)
    return (paired_cells(mdata) if paired else mdata), report


def write_h5mu(mdata: md.MuData, path) -> Path:
    """Write ``mdata`` to ``path`` (``.h5mu``) atomically (a temporary file in the same folder, then a rename),
    creating the folder; a failure leaves no partial file. Returns the path."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.h5mu")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with md.set_options(pull_on_update=False):
            mdata.write_h5mu(tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the complete new one
    except OSError as err:
        msg = f"Could not write {path} ({err}): check that the folder is writable and has free space."
        raise ScclipError(msg) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
