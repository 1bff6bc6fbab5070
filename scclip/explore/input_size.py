"""How much memory a file will need once read, from its declared shape and non-zeros, without reading it.

HDF5 files (``.h5ad``, ``.h5mu``, 10x ``.h5``) are measured from their metadata (h5py dataset shapes and
attributes, no data read); Matrix Market files (``.mtx``, ``.mtx.gz``, or a 10x folder holding one) from their
header line. The app refuses files whose estimate is above ``$SCCLIP_APP_MAX_GB`` (default 4 GB) and points to
``scclip embed --chunk-size``, which reads a file from disk a chunk of cells at a time.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from scclip.errors import ScclipError

#: Environment variable: the largest estimated working memory (GB) of the files one app session reads.
MAX_GB_ENV = "SCCLIP_APP_MAX_GB"
DEFAULT_MAX_GB = 4.0
#: Working memory per byte of the in-memory matrix: the matrix as read, its float32 CSR copy (checks,
#: feature mapping) and the normalised copy the model encodes.
WORKING_FACTOR = 3.0


def max_app_bytes() -> int:
    """The app's memory bound for one dataset: ``$SCCLIP_APP_MAX_GB`` (default 4) in bytes."""
    try:
        gb = float(os.environ.get(MAX_GB_ENV, DEFAULT_MAX_GB))
    except ValueError:
        gb = DEFAULT_MAX_GB
    return int(gb * 1024**3)


def _matrix_bytes(rows: int, cols: int, nnz: int | None, itemsize: int, index_size: int) -> int:
    """In-memory bytes of one matrix: dense ``rows x cols`` when ``nnz`` is None, else CSR."""
    if nnz is None:
        return rows * cols * max(itemsize, 4)
    return nnz * (max(itemsize, 4) + max(index_size, 4)) + (rows + 1) * 8


def _h5_matrix(node) -> dict | None:
    """Shape, non-zeros and bytes of an AnnData matrix node (sparse group or dense dataset), or None."""
    import h5py

    if isinstance(node, h5py.Dataset):
        if len(node.shape) != 2:
            return None
        rows, cols = (int(s) for s in node.shape)
        return {
            "shape": (rows, cols),
            "nnz": None,
            "bytes": _matrix_bytes(rows, cols, None, node.dtype.itemsize, 0),
        }
    shape = node.attrs.get("shape", node.attrs.get("h5sparse_shape"))
    if shape is None or "data" not in node or "indices" not in node:
        return None
    rows, cols = (int(s) for s in shape)
    data, idx = node["data"], node["indices"]
    nnz = int(data.shape[0]) if data.shape else 0
    return {
        "shape": (rows, cols),
        "nnz": nnz,
        "bytes": _matrix_bytes(rows, cols, nnz, data.dtype.itemsize, idx.dtype.itemsize),
    }


def _anndata_group(group, name: str) -> list[dict]:
    """The matrix an AnnData group will be read from (X, else a counts layer, else raw/X)."""
    for key in ("X", "layers/counts", "layers/raw_counts", "raw/X"):
        if key in group:
            m = _h5_matrix(group[key])
            if m is not None:
                return [{"name": f"{name}{key}", **m}]
    return []


def _hdf5_matrices(path: Path) -> list[dict] | None:
    import h5py

    with h5py.File(path, "r") as f:
        if "matrix" in f and "shape" in f["matrix"]:  # 10x Cell Ranger .h5 (features x barcodes, CSC)
            g = f["matrix"]
            cols, rows = (int(s) for s in g["shape"][()])
            nnz = int(g["data"].shape[0])
            b = _matrix_bytes(rows, cols, nnz, g["data"].dtype.itemsize, g["indices"].dtype.itemsize)
            return [{"name": "matrix", "shape": (rows, cols), "nnz": nnz, "bytes": b}]
        if "mod" in f:  # .h5mu
            return [m for mod in f["mod"] for m in _anndata_group(f["mod"][mod], f"mod/{mod}/")]
        return _anndata_group(f, "")


def _mtx_header(path: Path) -> list[dict] | None:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as fh:
        return _mtx_header_lines(fh, path.name)


def _tar_mtx_header(path: Path) -> list[dict] | None:
    """The header of the ``matrix.mtx(.gz)`` inside a 10x ``.tar(.gz)`` archive, streamed: the archive is read
    only up to that member's first lines, never unpacked."""
    import io

    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in ("matrix.mtx", "matrix.mtx.gz"):
                raw = tar.extractfile(member)
                fh = gzip.open(raw, "rt", errors="replace") if base.endswith(".gz") else io.TextIOWrapper(raw)
                return _mtx_header_lines(fh, path.name)
    return None


def _mtx_header_lines(fh, name: str) -> list[dict] | None:
    """The matrix of a Matrix Market text stream's size line (after comments), as cells x features."""
    for _ in range(10_000):  # comment lines, then "rows cols nnz"
        line = fh.readline()
        if not line:
            return None
        if line.startswith("%") or not line.strip():
            continue
        rows, cols, nnz = (int(x) for x in line.split()[:3])
        rows, cols = cols, rows  # 10x writes features x barcodes; cells are the columns
        return [{"name": name, "shape": (rows, cols), "nnz": nnz,
                 "bytes": _matrix_bytes(rows, cols, nnz, 4, 4)}]  # fmt: skip
    return None


def estimate_memory(path: str | Path) -> dict | None:
    """The working memory reading ``path`` into the app needs, from metadata only; None when unknown.

    Parameters
    ----------
    path
        An ``.h5ad``, ``.h5mu``, 10x ``.h5``, ``.mtx`` / ``.mtx.gz`` file, a 10x matrix folder or its ``.tar.gz``.

    Returns
    -------
    dict or None
        ``{"bytes": int, "matrices": [{"name", "shape", "nnz", "bytes"}]}`` (``nnz`` None for a dense matrix);
        None for other formats (fragments files) or files whose metadata cannot be read (the reader
        then says what is wrong).
    """
    p = Path(path)
    try:
        if p.is_dir():
            mtx = [q for q in (p / "matrix.mtx.gz", p / "matrix.mtx") if q.is_file()]
            mats = _mtx_header(mtx[0]) if mtx else None
        elif p.name.lower().endswith((".mtx", ".mtx.gz")):
            mats = _mtx_header(p)
        elif p.name.lower().endswith((".h5ad", ".h5mu", ".h5")):
            mats = _hdf5_matrices(p)
        elif p.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
            mats = _tar_mtx_header(p)
        else:
            return None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, EOFError, tarfile.TarError):
        return None
    if not mats:
        return None
    return {"bytes": int(sum(m["bytes"] for m in mats) * WORKING_FACTOR), "matrices": mats}


def check_memory(paths, *, max_bytes: int | None = None, names=None) -> int:
    """Refuse ``paths`` whose estimated working memory together is above ``max_bytes``; returns the estimate.

    Parameters
    ----------
    paths
        Files about to be read (see :func:`estimate_memory`; unknown formats count 0).
    max_bytes
        The bound; default :func:`max_app_bytes` (``$SCCLIP_APP_MAX_GB``).
    names
        Names shown in the message (default the file names).
    """
    limit = max_app_bytes() if max_bytes is None else max_bytes
    paths = [Path(p) for p in paths]
    names = [p.name for p in paths] if names is None else list(names)
    total, biggest = 0, None
    for p, name in zip(paths, names, strict=True):
        est = estimate_memory(p)
        if est is None:
            continue
        total += est["bytes"]
        if biggest is None or est["bytes"] > biggest[1]["bytes"]:
            biggest = (name, est)
    if total <= limit or biggest is None:
        return total
    name, est = biggest
    m = max(est["matrices"], key=lambda x: x["bytes"])
    nnz = "dense" if m["nnz"] is None else f"{m['nnz']:,} non-zeros"
    msg = (
        f"{name} declares {m['shape'][0]:,} cells x {m['shape'][1]:,} features ({nnz}): reading it here needs "
        f"about {total / 1024**3:,.1f} GB of memory, above this app's limit of {limit / 1024**3:,.1f} GB "
        f"(${MAX_GB_ENV}). Embed it on the command line, which reads .h5mu/.h5ad files a chunk of cells at a "
        f"time: scclip embed --model MODEL --data {name} --chunk-size 10000 --out embedded.h5mu"
    )
    raise ScclipError(msg)
