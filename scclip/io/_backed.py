"""Files larger than memory: read ``.h5ad`` / ``.h5mu`` in row chunks, and check, map, preprocess and embed
them chunk by chunk.

:func:`read_backed` opens a file without loading its matrices: ``obs``, ``var`` and ``uns`` are read, ``X``
stays on disk and :meth:`Modality.chunks` yields ``chunk_size`` cells at a time as float32 CSR (the same
recognition rules as :func:`scclip.io.read`: modality aliases, count layers, ``.raw``, mixed 10x feature
types). :class:`MappedChunks` runs the input checks on each chunk, maps it onto a model's features and adds
up the column sums for the coverage report; :func:`embed_modality` preprocesses and encodes each chunk, and
:func:`map_all` stacks the mapped chunks into the compact training matrix. Peak memory follows the chunk size
and the outputs (embeddings, or the matrix on the model's features), not the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip._constants import MODALITIES
from scclip.errors import ScclipError
from scclip.io._checks import (
    COUNT_LAYERS,
    check_modality_meta,
    check_modality_name,
    count_source,
    modality_of_anndata,
    to_csr,
    unsupported_input,
)
from scclip.io._integrity import check_hdf5_file, check_matrix
from scclip.io._read import h5ad_modalities, h5mu_modalities, shared_obs

logger = logging.getLogger(__name__)

#: Cells per chunk when none is given: 10,000 cells of 30,000 features at 5% density are ~120 MB as CSR.
DEFAULT_CHUNK_SIZE = 10_000
_SAMPLE = 1_000_000  # values looked at to tell counts from normalised data (as scclip.io does)


def check_chunk_size(chunk_size) -> int:
    """``chunk_size`` as a positive int (``None``: :data:`DEFAULT_CHUNK_SIZE`), else a clear error."""
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size <= 0:
        msg = f"chunk_size must be a positive number of cells (e.g. {DEFAULT_CHUNK_SIZE}), got {chunk_size!r}"
        raise ScclipError(msg)
    return int(chunk_size)


@dataclass
class Modality:
    """One modality whose matrix is read in row chunks: ``obs`` / ``var`` / ``uns`` in memory, ``X`` anywhere
    rows can be sliced from (an on-disk sparse or dense dataset, a backed AnnData's ``X``, an array).

    ``rows`` (row indices into ``X``, in order) and ``columns`` (a feature mask) select a part of ``X``.
    """

    obs: pd.DataFrame
    var: pd.DataFrame
    X: object
    uns: dict = field(default_factory=dict)
    source: str = "the data"
    rows: np.ndarray | None = None
    columns: np.ndarray | None = None
    #: the count layers / ``.raw`` of a file group until :func:`read_backed` has chosen the counts
    candidates: dict = field(default_factory=dict, repr=False)

    @property
    def obs_names(self) -> pd.Index:
        return self.obs.index

    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        return len(self.var)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    def select_columns(self, mask) -> Modality:
        """The features ``mask`` (applied to every chunk)."""
        mask = np.asarray(mask, dtype=bool)
        cols = np.flatnonzero(mask) if self.columns is None else np.asarray(self.columns)[mask]
        return replace(self, var=self.var.loc[mask].copy(), columns=cols)

    def take(self, idx) -> Modality:
        """The cells at positions ``idx`` (in that order); ``X`` is not read."""
        idx = np.asarray(idx, dtype=np.int64)
        if np.array_equal(idx, np.arange(self.n_obs)):
            return self
        rows = idx if self.rows is None else self.rows[idx]
        return replace(self, obs=self.obs.iloc[idx].copy(), rows=rows)

    def read(self, lo: int, hi: int) -> sp.csr_matrix:
        """Cells ``lo:hi`` as float32 CSR (only these rows are read)."""
        if self.rows is None:
            part = self.X[lo:hi]
            check_matrix(part, f"matrix of cells {lo} to {hi}", self.source)  # before any use of its indices
        else:
            r = self.rows[lo:hi]
            if r.size and r[-1] - r[0] == r.size - 1 and bool(np.all(np.diff(r) == 1)):
                part = self.X[int(r[0]) : int(r[-1]) + 1]
            else:
                order = np.argsort(r, kind="stable")
                part = to_csr(self.X[r[order]])[np.argsort(order)]
        if self.columns is not None:
            part = to_csr(part)[:, self.columns]
        return to_csr(part)

    def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """``(lo, hi, cells lo:hi as float32 CSR)`` for consecutive chunks of ``chunk_size`` cells."""
        chunk_size = check_chunk_size(chunk_size)
        for lo in range(0, self.n_obs, chunk_size):
            hi = min(lo + chunk_size, self.n_obs)
            yield lo, hi, self.read(lo, hi)


class BackedData:
    """Modalities (``rna`` / ``atac``) read in row chunks, e.g. from :func:`read_backed`; the file stays open
    until :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self, mod: dict[str, Modality], *, info: dict | None = None, file=None):
        self.mod = dict(mod)
        self.uns = {"scclip_read": info} if info else {}
        self._file = file

    def __getitem__(self, key: str) -> Modality:
        return self.mod[key]

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}: {a.n_obs} x {a.n_vars}" for m, a in self.mod.items())
        return f"BackedData({mods}; source {self.uns.get('scclip_read', {}).get('source', 'in memory')})"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> BackedData:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ViewRows:
    """Rows of a backed AnnData view (its ``X`` would load the whole view)."""

    def __init__(self, adata: ad.AnnData):
        self.adata, self.shape = adata, adata.shape

    def __getitem__(self, key):
        return self.adata[key].X


def from_anndata(adata: ad.AnnData, source: str = "the data") -> Modality:
    """A :class:`Modality` over an AnnData (backed or in memory); nothing is loaded or copied."""
    X = _ViewRows(adata) if adata.isbacked and adata.is_view else adata.X
    return Modality(obs=adata.obs, var=adata.var, X=X, uns=adata.uns, source=source)


def is_backed(data) -> bool:
    """Whether ``data`` keeps its matrices on disk: :class:`BackedData`, or a backed AnnData / MuData."""
    if isinstance(data, BackedData):
        return True
    if isinstance(data, ad.AnnData):
        return bool(data.isbacked)
    mods = getattr(data, "mod", data if isinstance(data, dict) else None)
    return bool(getattr(data, "isbacked", False)) or (
        isinstance(mods, dict) and any(getattr(a, "isbacked", False) for a in mods.values())
    )


def as_backed(data) -> BackedData:
    """Any input of :func:`scclip.embed` / :func:`scclip.train` as :class:`BackedData` (nothing is loaded)."""
    if isinstance(data, BackedData):
        return data
    if isinstance(data, ad.AnnData):
        data = {modality_of_anndata(data): data}
    mods = getattr(data, "mod", data)
    if not isinstance(mods, dict):
        raise unsupported_input(data)
    return BackedData(
        {m: a if isinstance(a, Modality) else from_anndata(a) for m, a in mods.items() if m in MODALITIES}
    )


# ------------------------------------------------------------------------------------------- reading files
def read_backed(path, *, modality: str | None = None) -> BackedData:
    """Open an ``.h5ad`` or ``.h5mu`` for chunked reading (``obs`` / ``var`` / ``uns`` in memory, ``X`` on disk).

    The same recognition rules as :func:`scclip.io.read` (modality aliases or inference, raw counts from a
    count layer or ``.raw`` when ``X`` is normalised, 10x feature types); values are checked chunk by chunk
    when the data are used. Close the result (or use it in a ``with`` block) to close the file.
    """
    path = Path(path).expanduser()
    modality = check_modality_name(modality)
    what = "chunked reading (chunk_size / --chunk-size) needs an .h5ad or .h5mu file"
    if not path.exists():
        msg = f"{path} does not exist: check the path ({what})."
        raise ScclipError(msg)
    if path.is_dir() or not h5py.is_hdf5(path):
        msg = f"{what}; {path} is not one: read it without chunking, or convert it (scclip.io.read + write_h5mu)."
        raise ScclipError(msg)
    f = h5py.File(path, "r")
    info: dict = {"source": str(path), "format": "", "notes": [], "backed": True}
    try:
        check_hdf5_file(f, path)
        if "mod" in f:
            info["format"] = "h5mu"
            items = {key: _open_group(f["mod"][key], str(path)) for key in f["mod"]}
            glob = ad.io.read_elem(f["obs"]) if "obs" in f else pd.DataFrame(index=pd.Index([]))
            mods = h5mu_modalities(items, shared_obs(glob, items), path, modality, info, _use_counts)
        elif "obs" in f and "var" in f:
            info["format"] = "h5ad"
            adata = _use_counts(_open_group(f, str(path)), info["notes"])
            mods = h5ad_modalities(adata, path, modality, info["notes"])
        else:
            msg = (
                f"{what}; {path} is HDF5 but neither (top-level keys: {sorted(f)}): read it without chunking."
            )
            raise ScclipError(msg)
        mods = {m: _finish(a, m, str(path), info["notes"]) for m, a in mods.items()}
    except ScclipError:
        f.close()
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as err:
        f.close()
        msg = f"Could not read {path} for chunked reading ({type(err).__name__}: {err}); the file may be corrupt."
        raise ScclipError(msg) from err
    for note in info["notes"]:
        logger.info("%s: %s", path, note)
    return BackedData(mods, info=info, file=f)


def _matrix(elem):
    """An on-disk matrix: a sparse dataset (CSR / CSC group) or the h5py dataset of a dense one."""
    if elem is None or isinstance(elem, h5py.Dataset):
        return elem
    return ad.io.sparse_dataset(elem)


def _sample(elem) -> np.ndarray | None:
    """The first stored values of an on-disk matrix (what ``io._checks.non_integer`` looks at)."""
    if elem is None:
        return None
    if isinstance(elem, h5py.Group):
        return elem["data"][:_SAMPLE]
    n_rows = max(1, -(-_SAMPLE // max(int(elem.shape[1]), 1)))
    return np.asarray(elem[:n_rows]).ravel()[:_SAMPLE]


def _open_group(g: h5py.Group, source: str) -> Modality:
    """One AnnData group as a :class:`Modality` whose count source is not chosen yet (``X`` is the group)."""
    read = ad.io.read_elem
    layers = g["layers"] if "layers" in g else {}
    raw = g["raw"] if "raw" in g and "X" in g["raw"] else None
    candidates = {
        "layers": {k: layers[k] for k in COUNT_LAYERS if k in layers},
        "raw": raw,
        "raw_var": read(raw["var"]) if raw is not None else None,
    }
    uns = read(g["uns"]) if "uns" in g else {}
    return Modality(read(g["obs"]), read(g["var"]), g.get("X"), uns, source, candidates=candidates)


def _use_counts(m: Modality, notes: list[str]) -> Modality:
    """``io._checks.use_counts`` for a file group: choose X, a count layer or ``.raw``."""
    c = m.candidates
    raw_var = c.get("raw_var")
    same = raw_var is not None and len(raw_var) == m.n_vars and bool((raw_var.index == m.var.index).all())
    raw_X = c["raw"]["X"] if c.get("raw") is not None else None
    samples = {k: _sample(v) for k, v in c.get("layers", {}).items()}
    choice, note = count_source(_sample(m.X), samples, _sample(raw_X), same)
    if note:
        notes.append(note if choice != "raw_var" else note.format(n=len(raw_var)))
    X, var = m.X, m.var
    if choice.startswith("layer:"):
        X = c["layers"][choice[len("layer:") :]]
    elif choice in ("raw", "raw_var"):
        X, var = raw_X, (raw_var if choice == "raw_var" else var)
    return replace(m, X=_matrix(X), var=var, candidates={})


def _finish(m: Modality, mod: str, source: str, notes: list[str]) -> Modality:
    """``io._checks.finish_modality`` without reading ``X``: checks, str names, unique gene symbols."""
    check_chunkable(m, mod)
    obs, var = m.obs.copy(), m.var.copy()
    obs.index, var.index = obs.index.astype(str), var.index.astype(str)
    if not var.index.is_unique:  # RNA symbols told apart by unique gene ids
        var.index = ad.utils.make_index_unique(var.index)
        notes.append(
            f"{mod}: duplicate gene symbols were made unique (suffixes -1, -2, ...); they match by gene id"
        )
    return replace(m, obs=obs, var=var, source=source)


def check_chunkable(m: Modality, mod: str) -> None:
    """:func:`scclip.io.check_modality_meta`, and refuse a column-major (CSC) matrix on disk."""
    check_modality_meta(m, mod, m.source)
    if getattr(m.X, "format", None) == "csc" and not sp.issparse(m.X):
        msg = (
            f"The {mod} matrix in {m.source} is stored column by column (CSC): reading it in row chunks would "
            "read the whole file for each chunk. Save it once with X as CSR (adata.X = adata.X.tocsr()) or "
            "read it without chunking."
        )
        raise ScclipError(msg)
