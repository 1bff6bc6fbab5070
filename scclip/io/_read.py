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
import re
import tarfile
import tempfile
import warnings
import zlib
from pathlib import Path, PurePosixPath

import anndata as ad
import h5py
import mudata as md
import pandas as pd

try:  # what anndata raises for an element it has no reader for (a damaged or unknown encoding)
    from anndata._io.specs.registry import IORegistryError
except ImportError:  # pragma: no cover - other anndata versions
    IORegistryError = RuntimeError

from scclip.errors import ScclipError
from scclip.io._checks import (
    add_genome,
    build_mudata,
    canonical_modality,
    check_modality_name,
    finish_modality,
    infer_modality,
    select_modalities,
    split_by_type,
    use_counts,
)
from scclip.io._integrity import check_hdf5_file, check_matrices
from scclip.io._tenx import read_10x_h5, read_mtx_dir

logger = logging.getLogger(__name__)

#: what h5py, anndata, mudata, scipy, gzip and tarfile raise on damaged or unexpected content
_READ_ERRORS = (
    OSError,
    KeyError,
    ValueError,
    IndexError,
    TypeError,
    EOFError,
    tarfile.TarError,
    zlib.error,
    IORegistryError,
    RuntimeError,
    OverflowError,
)
_SUPPORTED = (
    ".h5mu, .h5ad, a Cell Ranger filtered_feature_bc_matrix.h5, a 10x Matrix Market folder "
    "(matrix.mtx(.gz) + features.tsv(.gz) + barcodes.tsv(.gz)) or a .tar.gz of such a folder"
)


# --------------------------------------------------------------------------------------------- readers
def _read_h5mu(path: Path, modality: str | None, info: dict) -> md.MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.read_h5mu(path)
    for key, adata in mdata.mod.items():
        check_matrices(adata, f"'{key}'", path)
    global_obs = shared_obs(mdata.obs, mdata.mod)
    mods = h5mu_modalities(dict(mdata.mod), global_obs, path, modality, info, use_counts)
    notes = info["notes"]
    mods = {m: finish_modality(a, m, str(path), notes) for m, a in mods.items()}
    return build_mudata(mods, info, global_obs)


def shared_obs(obs: pd.DataFrame, keys) -> pd.DataFrame:
    """The MuData-level obs columns that are not copies of a modality's (``rna:cell_type``)."""
    return obs.loc[:, [c for c in obs.columns if not any(c.startswith(f"{k}:") for k in keys)]]


def h5mu_modalities(items: dict, global_obs, path, modality, info: dict, use_counts) -> dict:
    """The rna / atac modalities of an .h5mu by their keys (aliases, else inferred from the features), with
    the MuData-level obs columns added and the raw counts chosen by ``use_counts(adata, notes)``.

    ``items`` maps the file's modality keys to AnnData (or :class:`scclip.io.Modality`).
    """
    notes, mods = info["notes"], {}
    for key, adata in items.items():
        mod, how = canonical_modality(key), f"modality '{key}'"
        if mod is None:
            mod, reason = infer_modality(adata)
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
        mods[mod] = use_counts(adata, notes)
        add_genome(mods[mod], f"{path} ({key})")
    if not mods:
        msg = (
            f"{path} has no rna or atac modality (found: {', '.join(items)}); rename them to 'rna' / 'atac'."
        )
        raise ScclipError(msg)
    return select_modalities(mods, modality, str(path))


def _read_h5ad(path: Path, modality: str | None, info: dict) -> md.MuData:
    adata = ad.read_h5ad(path)
    check_matrices(adata, "AnnData", path)
    adata = use_counts(adata, info["notes"])
    mods = h5ad_modalities(adata, path, modality, info["notes"])
    return build_mudata({m: finish_modality(a, m, str(path), info["notes"]) for m, a in mods.items()}, info)


def h5ad_modalities(adata, path, modality: str | None, notes: list[str]) -> dict:
    """The modalities of an .h5ad: split by ``var['feature_types']`` when it mixes them, else the one named
    by ``modality`` or inferred from the features (refusing an ATAC file given as RNA)."""
    types = adata.var.get("feature_types")
    if types is not None and len({canonical_modality(t) for t in pd.unique(types.astype(str))} - {None}) > 1:
        mods = split_by_type(adata, types, str(path), notes, modality)
    else:
        guess, reason = infer_modality(adata)
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
        add_genome(a, str(path))
    return mods


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
        return read_mtx_dir(root, modality, info)


def _read_hdf5(path: Path, modality: str | None, info: dict) -> md.MuData:
    if not h5py.is_hdf5(path):
        msg = f"{path} is not a valid HDF5 file (corrupt or incomplete download?); expected {_SUPPORTED}."
        raise ScclipError(msg)
    with h5py.File(path, "r") as f:
        check_hdf5_file(f, path)
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
        return read_10x_h5(path, modality, info)
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
    modality = check_modality_name(modality)
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
            return read_mtx_dir(path if path.is_dir() else path.parent, modality, info)
        if name.endswith((".tar.gz", ".tgz", ".tar")) or (
            not h5py.is_hdf5(path) and tarfile.is_tarfile(path)
        ):
            info["format"] = "10x_mtx_tar"
            return _read_tar(path, modality, info)
        if name.endswith((".h5mu", ".h5ad", ".h5", ".hdf5")) or h5py.is_hdf5(path):
            return _read_hdf5(path, modality, info)
    except ScclipError:
        raise
    except _READ_ERRORS as err:  # a damaged or unexpected layout, as the libraries underneath report it
        why = " ".join(str(err).split())  # one line
        why = why if len(why) <= 300 else why[:300] + "..."
        msg = f"Could not read {path} as {info['format'] or 'a single-cell file'} ({type(err).__name__}: {why}); the file may be corrupt or not in a supported layout ({_SUPPORTED})."
        raise ScclipError(msg) from err
    msg = f"Unknown format for {path}: expected {_SUPPORTED}."
    raise ScclipError(msg)
