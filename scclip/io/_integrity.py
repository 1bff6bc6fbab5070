"""Structural checks run before a file's content is used, so that a damaged or forged file is refused with a clear
message instead of crashing a reader, exhausting memory or being read as garbage (issue 19).

- :func:`check_hdf5_file`: every dataset of an HDF5 file stores the bytes its declared shape needs (a huge
  declared shape over tiny data would otherwise be allocated in full by the first read);
- :func:`check_csr_arrays` / :func:`check_matrices`: sparse matrices whose ``indptr`` / ``indices`` disagree with
  their shape (scipy does not check indices on construction; later operations on them read out of bounds), and
  matrices that hold text instead of numbers;
- :func:`check_mtx_header`: a Matrix Market banner and size line scCLIP can read, checked against the feature and
  barcode tables before any entry is read.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from scclip.errors import ScclipError

#: datasets smaller than this are never questioned (a damaged small dataset cannot exhaust memory)
SMALL_BYTES = 64 * 1024**2
#: no compression filter in use for count data stores more than this many bytes per stored byte (gzip: ~1030)
MAX_RATIO = 1100


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PB"


def check_hdf5_file(f: h5py.File, source) -> None:
    """Refuse an HDF5 file with a dataset that declares much more data than the file stores, or an AnnData
    matrix (``X``, a layer) that holds text."""

    def visit(name, obj):
        parts = name.split("/")
        if (parts[-1] == "X" or (len(parts) > 1 and parts[-2] == "layers")) and not name.startswith("uns"):
            data = obj.get("data") if isinstance(obj, h5py.Group) else obj
            if isinstance(data, h5py.Dataset):
                check_dtype(data.dtype, f"matrix /{name}", source)
                if data is not obj and data.dtype == np.float16:
                    msg = (
                        f"The sparse matrix /{name} in {source} stores float16 values, which scipy cannot hold: "
                        "save it as float32 or integers (adata.X = adata.X.astype('float32'))."
                    )
                    raise ScclipError(msg)
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            _check_stored(name, obj, source)

    f.visititems(visit)


def _check_stored(name: str, obj: h5py.Dataset, source) -> None:
    itemsize = 16 if obj.dtype.kind == "O" else obj.dtype.itemsize
    declared = float(np.prod(obj.shape, dtype=np.float64)) * itemsize
    if declared <= SMALL_BYTES:
        return
    stored = obj.id.get_storage_size()
    n_chunks = (
        0
        if obj.chunks is None
        else np.prod([-(-s // c) for s, c in zip(obj.shape, obj.chunks, strict=True)], dtype=np.float64)
    )
    if (n_chunks and obj.id.get_num_chunks() < n_chunks) or stored * MAX_RATIO < declared:
        msg = (
            f"{source} is damaged: its dataset /{name} declares shape {obj.shape} ({_size(declared)}) but the file "
            f"stores only {_size(stored)} of it (a truncated, corrupt or hand-edited file); write the file again "
            "from the original data."
        )
        raise ScclipError(msg)


def check_dtype(dtype, what: str, source) -> None:
    """Refuse a matrix (or its stored values) holding text or Python objects instead of numbers."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        kind = "text" if dtype.kind in "SUO" else "non-numeric values"
        msg = f"The {what} in {source} holds {kind} (dtype {dtype}), not counts: store the counts as integers or floats."
        raise ScclipError(msg)


def check_csr_arrays(
    data, indices, indptr, shape: tuple[int, int], what: str, source, *, major: str = "cell"
) -> None:
    """Refuse compressed sparse arrays (CSR, or CSC with ``major='feature'``) that disagree with ``shape``."""
    n_major, n_minor = shape
    check_dtype(data.dtype, what, source)
    problem = None
    if len(indptr) != n_major + 1:
        problem = f"indptr has {len(indptr):,} entries for {n_major:,} {major}s (needs {n_major + 1:,})"
    elif indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        problem = f"indptr / indices are {indptr.dtype} / {indices.dtype}, not integers"
    elif len(indices) != len(data):
        problem = f"{len(indices):,} indices for {len(data):,} values"
    else:
        ptr = np.asarray(indptr, dtype=np.int64)
        if ptr[0] != 0 or ptr[-1] != len(indices) or (np.diff(ptr) < 0).any():
            problem = f"indptr does not run from 0 up to the {len(indices):,} stored values"
        elif len(indices) and (int(np.min(indices)) < 0 or int(np.max(indices)) >= n_minor):
            lo, hi = int(np.min(indices)), int(np.max(indices))
            problem = f"indices run from {lo:,} to {hi:,}, outside the {n_minor:,} columns of its shape"
    if problem:
        msg = f"The {what} in {source} is damaged: {problem}; write the file again from the original data."
        raise ScclipError(msg)


def check_matrix(X, what: str, source) -> None:
    """:func:`check_csr_arrays` for a scipy sparse matrix (CSR or CSC); the dtype check for a dense one."""
    if X is None:
        return
    if sp.issparse(X) and X.format in ("csr", "csc"):
        shape = X.shape if X.format == "csr" else X.shape[::-1]
        check_csr_arrays(
            X.data, X.indices, X.indptr, shape, what, source, major="cell" if X.format == "csr" else "feature"
        )
    elif not sp.issparse(X):
        check_dtype(getattr(X, "dtype", np.asarray(X).dtype), what, source)
        if np.ndim(X) != 2:
            msg = f"The {what} in {source} has {np.ndim(X)} dimensions, not cells x features: check the file."
            raise ScclipError(msg)


def check_matrices(adata, mod: str, source) -> None:
    """Check the matrices a reader may use as counts: ``X``, the count layers and ``raw.X``."""
    check_matrix(adata.X, f"{mod} matrix X", source)
    for key in ("counts", "raw_counts", "count", "raw"):
        if key in adata.layers:
            check_matrix(adata.layers[key], f"{mod} layer '{key}'", source)
    if adata.raw is not None:
        check_matrix(adata.raw.X, f"{mod} matrix raw.X", source)


def _open_text(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", errors="replace") if gz else open(path, errors="replace")


def check_mtx_header(path: Path, n_features: int, n_barcodes: int) -> None:
    """Refuse a Matrix Market file whose banner or size line scCLIP cannot read as a 10x count matrix."""
    with _open_text(path) as fh:
        banner = fh.readline().strip()
        line = fh.readline()
        while line.startswith("%"):
            line = fh.readline()
        first = fh.readline()
    words = banner.lower().split()
    name = Path(path).name
    if len(words) != 5 or words[:3] != ["%%matrixmarket", "matrix", "coordinate"] or words[4] != "general":
        msg = (
            f"{name} does not start with a Matrix Market banner scCLIP reads (found {banner[:80]!r}); a 10x matrix "
            "starts with '%%MatrixMarket matrix coordinate integer general': re-export it from Cell Ranger."
        )
        raise ScclipError(msg)
    field_ok = words[3] in ("integer", "real", "double") or (
        words[3] == "pattern" and len(first.split()) <= 2
    )
    if not field_ok:
        msg = f"{name} holds {words[3]!r} values per its banner ({banner!r}), not counts: re-export the count matrix."
        raise ScclipError(msg)
    size = line.split()
    if len(size) != 3 or not all(s.isdigit() for s in size):
        msg = f"{name} has no valid size line (found {line.strip()[:80]!r}; expected 'rows columns entries')."
        raise ScclipError(msg)
    rows, cols, nnz = (int(s) for s in size)
    if (rows, cols) != (n_features, n_barcodes):
        msg = (
            f"{name} declares {rows:,} features x {cols:,} barcodes but the feature and barcode tables list "
            f"{n_features:,} / {n_barcodes:,}: the files do not belong together (or one is truncated)."
        )
        raise ScclipError(msg)
    bound = Path(path).stat().st_size * (MAX_RATIO if str(path).endswith(".gz") else 1) // 6 + 1
    if nnz > min(rows * cols, bound):
        msg = f"{name} declares {nnz:,} entries, more than a {rows:,} x {cols:,} matrix of its file size can hold: the file is damaged."
        raise ScclipError(msg)
