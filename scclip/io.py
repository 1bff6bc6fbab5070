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
import pandas as pd

from scclip.errors import ScclipError

# the 10x readers and the input checks live in their own modules; re-exported so that
# ``from scclip.io import check_modality_data`` (and the private helpers) keep working
from scclip.io_10x import (  # noqa: F401
    _decode,
    _find_mtx_folder,
    _first,
    _read_10x_h5,
    _read_mtx_dir,
    _read_tsv,
)
from scclip.io_checks import (  # noqa: F401
    _ALIASES,
    _COUNT_LAYERS,
    _PEAK_RE,
    MODALITIES,
    _add_genome,
    _build,
    _canonical,
    _check_modality,
    _check_values,
    _finish,
    _has_negative,
    _infer_modality,
    _non_integer,
    _peak_fraction,
    _select,
    _split_by_type,
    _to_csr,
    _unique_gene_ids,
    _use_counts,
    check_modality_data,
    check_modality_meta,
    count_source,
)

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

_SUPPORTED = (
    ".h5mu, .h5ad, a Cell Ranger filtered_feature_bc_matrix.h5, a 10x Matrix Market folder "
    "(matrix.mtx(.gz) + features.tsv(.gz) + barcodes.tsv(.gz)) or a .tar.gz of such a folder"
)


# --------------------------------------------------------------------------------------------- readers
def _read_h5mu(path: Path, modality: str | None, info: dict) -> md.MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.read_h5mu(path)
    global_obs = _global_obs(mdata.obs, mdata.mod)
    mods = _h5mu_modalities(dict(mdata.mod), global_obs, path, modality, info, _use_counts)
    notes = info["notes"]
    mods = {m: _finish(a, m, str(path), notes) for m, a in mods.items()}
    return _build(mods, info, global_obs)


def _global_obs(obs: pd.DataFrame, keys) -> pd.DataFrame:
    """The MuData-level obs columns that are not copies of a modality's (``rna:cell_type``)."""
    return obs.loc[:, [c for c in obs.columns if not any(c.startswith(f"{k}:") for k in keys)]]


def _h5mu_modalities(items: dict, global_obs, path, modality, info: dict, use_counts) -> dict:
    """The rna / atac modalities of an .h5mu by their keys (aliases, else inferred from the features), with
    the MuData-level obs columns added and the raw counts chosen by ``use_counts(adata, notes)``.

    ``items`` maps the file's modality keys to AnnData (or :class:`scclip.stream.Modality`).
    """
    notes, mods = info["notes"], {}
    for key, adata in items.items():
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
        mods[mod] = use_counts(adata, notes)
        _add_genome(mods[mod])
    if not mods:
        msg = (
            f"{path} has no rna or atac modality (found: {', '.join(items)}); rename them to 'rna' / 'atac'."
        )
        raise ScclipError(msg)
    return _select(mods, modality, str(path))


def _read_h5ad(path: Path, modality: str | None, info: dict) -> md.MuData:
    adata = _use_counts(ad.read_h5ad(path), info["notes"])
    mods = _h5ad_modalities(adata, path, modality, info["notes"])
    return _build({m: _finish(a, m, str(path), info["notes"]) for m, a in mods.items()}, info)


def _h5ad_modalities(adata, path, modality: str | None, notes: list[str]) -> dict:
    """The modalities of an .h5ad: split by ``var['feature_types']`` when it mixes them, else the one named
    by ``modality`` or inferred from the features (refusing an ATAC file given as RNA)."""
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
    shared = shared_barcodes(rna.obs_names, atac.obs_names)
    info = dict(mdata.uns.get("scclip_read", {"notes": []}))
    info["notes"] = [*list(info.get("notes", [])), f"kept the {len(shared)} cells present in both modalities"]
    mods = {"rna": rna[shared].copy(), "atac": atac[shared].copy()}
    return _build(mods, info, mdata.obs if mdata.obs.shape[1] else None)


def shared_barcodes(rna_names: pd.Index, atac_names: pd.Index) -> pd.Index:
    """The barcodes in both modalities, in RNA order; an error (with a hint on ``-N`` suffixes) when none."""
    rna = pd.Index(rna_names)
    atac = pd.Index(atac_names)
    shared = rna[rna.isin(atac)]
    if len(shared) == 0:
        hint = ""
        strip = r"-\d+$"
        if rna.str.replace(strip, "", regex=True).isin(atac.str.replace(strip, "", regex=True)).any():
            hint = " The barcodes match once a '-N' suffix is removed: make the suffixes agree."
        msg = (
            f"No barcode is shared between rna ({rna[0]}, ...) and atac ({atac[0]}, ...): "
            f"these are not paired measurements of the same cells; use them unpaired.{hint}"
        )
        raise ScclipError(msg)
    return shared


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
