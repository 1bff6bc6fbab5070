"""A CSR matrix in three flat files, written chunk by chunk and read back by row ranges (out-of-core training).

Layout of a folder: ``indptr.bin`` (int64, ``n_rows + 1``), ``indices.bin`` (int32), ``data.bin`` (float32) and
``meta.json`` (shape, non-zeros, dtypes). :class:`DiskCSRWriter` appends row blocks; :class:`DiskCSR` keeps only
``indptr`` in memory (8 bytes a row) and reads rows ``lo:hi`` with ``np.fromfile`` at byte offsets: plain reads
into fresh arrays, no memory map, so the resident memory is the rows asked for and nothing grows with the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from scclip.errors import ScclipError

_FILES = {"indptr": np.int64, "indices": np.int32, "data": np.float32}


class DiskCSRWriter:
    """Append CSR row blocks to ``folder`` (created; must not hold a finished matrix); :meth:`close` finishes it.

    Parameters
    ----------
    folder
        Where the three files and ``meta.json`` go.
    n_cols
        The number of columns every block must have.
    """

    def __init__(self, folder: str | Path, *, n_cols: int):
        self.folder, self.n_cols = Path(folder), int(n_cols)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "meta.json").unlink(missing_ok=True)
        self.n_rows, self.nnz = 0, 0
        self._files = {k: open(self.folder / f"{k}.bin", "wb") for k in _FILES}
        np.zeros(1, dtype=np.int64).tofile(self._files["indptr"])

    def append(self, X: sp.csr_matrix) -> None:
        """Add the rows of ``X`` (CSR with ``n_cols`` columns; indices are sorted on the way)."""
        X = sp.csr_matrix(X)
        if X.shape[1] != self.n_cols:
            msg = f"a block of {X.shape[1]} columns cannot be appended to an on-disk CSR of {self.n_cols} columns"
            raise ScclipError(msg)
        X.sort_indices()
        (X.indptr[1:].astype(np.int64) + self.nnz).tofile(self._files["indptr"])
        X.indices.astype(np.int32, copy=False).tofile(self._files["indices"])
        X.data.astype(np.float32, copy=False).tofile(self._files["data"])
        self.n_rows += X.shape[0]
        self.nnz += int(X.nnz)

    def close(self) -> DiskCSR:
        """Flush the files, write ``meta.json`` (the mark of a finished matrix) and open it for reading."""
        for f in self._files.values():
            f.close()
        meta = {
            "shape": [self.n_rows, self.n_cols],
            "nnz": self.nnz,
            "dtypes": {k: np.dtype(v).str for k, v in _FILES.items()},
        }
        (self.folder / "meta.json").write_text(json.dumps(meta))
        return DiskCSR(self.folder)


class DiskCSR:
    """A finished :class:`DiskCSRWriter` folder: ``shape``, ``nnz`` and row ranges as float32 CSR.

    Parameters
    ----------
    folder
        A folder with ``meta.json``, ``indptr.bin``, ``indices.bin`` and ``data.bin``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            msg = f"{self.folder} holds no finished on-disk CSR matrix (no meta.json): build the cache again"
            raise ScclipError(msg)
        meta = json.loads(meta_path.read_text())
        self.shape = (int(meta["shape"][0]), int(meta["shape"][1]))
        self.nnz = int(meta["nnz"])
        self.indptr = np.fromfile(self.folder / "indptr.bin", dtype=np.int64)
        sizes = {k: (self.folder / f"{k}.bin").stat().st_size for k in ("indices", "data")}
        if (
            len(self.indptr) != self.shape[0] + 1
            or self.indptr[-1] != self.nnz
            or any(s != 4 * self.nnz for s in sizes.values())
        ):
            msg = f"the on-disk CSR matrix in {self.folder} is incomplete or damaged: build the cache again"
            raise ScclipError(msg)

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def rows(self, lo: int, hi: int) -> sp.csr_matrix:
        """Rows ``lo:hi`` (clipped to the matrix) as float32 CSR with sorted indices."""
        lo, hi = max(0, int(lo)), min(self.n_rows, int(hi))
        hi = max(hi, lo)
        start, stop = int(self.indptr[lo]), int(self.indptr[hi])
        parts = {
            k: np.fromfile(self.folder / f"{k}.bin", dtype=_FILES[k], count=stop - start, offset=4 * start)
            for k in ("indices", "data")
        }
        indptr = self.indptr[lo : hi + 1] - start
        X = sp.csr_matrix((parts["data"], parts["indices"], indptr), shape=(hi - lo, self.shape[1]))
        X.has_sorted_indices = True
        return X

    def chunks(self, chunk_size: int):
        """``(lo, hi, rows lo:hi)`` for consecutive blocks of ``chunk_size`` rows."""
        for lo in range(0, self.n_rows, chunk_size):
            yield lo, min(lo + chunk_size, self.n_rows), self.rows(lo, lo + chunk_size)

    def nbytes(self) -> int:
        """Bytes on disk (indices, values and row pointers)."""
        return 8 * self.nnz + 8 * (self.n_rows + 1)
