"""Out-of-core training batches: paired cells streamed from on-disk CSR caches, a shuffled chunk order per epoch.

:class:`ChunkStream` cuts the cache rows into chunks of ``chunk_size`` rows. Every epoch it draws a permutation of
the chunks (seeded by ``seed`` and the epoch), loads ``chunks_per_load`` of them at a time (both modalities, only
the training rows), applies ``transform`` (the model's preprocessing), shuffles those cells and cuts global
batches of ``batch_size`` from them; cells left over after a load start the next one's first batch. So every
training cell is in exactly one batch per epoch (a last batch of fewer than two cells per rank is dropped), the
order depends only on the seed, and memory holds ``chunks_per_load`` chunks, not the matrix. Under DDP every
rank walks the same order and takes every ``world_size``-th cell of each global batch (as
:func:`~scclip.training.shard_batches` does in memory).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from scclip.errors import ScclipError

Transform = Callable[[str, sp.csr_matrix], sp.csr_matrix]


class ChunkStream:
    """Training batches of paired rows from two on-disk matrices (:class:`scclip.io.DiskCSR` or anything with
    ``n_rows`` and ``rows(lo, hi)``).

    Parameters
    ----------
    rna, atac
        The mapped matrices, row ``i`` of both the same cell.
    train_idx
        The rows to train on (other rows, e.g. validation cells, are never yielded).
    chunk_size
        Rows per chunk (the unit of the shuffled order and of disk reads).
    chunks_per_load
        Chunks loaded and mixed at a time (more mixes more cells per batch, and holds more in memory).
    seed
        Seeds the chunk order and the cell order of every epoch.
    transform
        ``transform(modality, counts) -> model input`` applied to every load (``None``: the rows as stored).
    """

    def __init__(
        self, rna, atac, train_idx, *, chunk_size: int, chunks_per_load: int = 2, seed: int = 0,
        transform: Transform | None = None,
    ):  # fmt: skip
        if rna.n_rows != atac.n_rows:
            msg = f"the RNA and ATAC caches differ in cells ({rna.n_rows} vs {atac.n_rows}): build them again"
            raise ScclipError(msg)
        if chunk_size < 1 or chunks_per_load < 1:
            msg = f"chunk_size and chunks_per_load must be >= 1, got {chunk_size} and {chunks_per_load}"
            raise ScclipError(msg)
        train_idx = np.unique(np.asarray(train_idx, dtype=np.int64))
        if train_idx.size < 2 or train_idx[0] < 0 or train_idx[-1] >= rna.n_rows:
            msg = f"the training rows must be at least 2 rows of the {rna.n_rows} cached cells"
            raise ScclipError(msg)
        self.sources = {"rna": rna, "atac": atac}
        self.chunk_size, self.chunks_per_load, self.seed = int(chunk_size), int(chunks_per_load), int(seed)
        self.transform = transform
        edges = np.searchsorted(train_idx, np.arange(0, rna.n_rows + chunk_size, chunk_size))
        self.chunks = [train_idx[a:b] for a, b in itertools.pairwise(edges) if b > a]
        self.n_cells = int(train_idx.size)

    def n_steps(self, *, batch_size: int, world_size: int = 1) -> int:
        """Steps per epoch for a global ``batch_size`` over ``world_size`` ranks (the same every epoch)."""
        full, rest = divmod(self.n_cells, batch_size)
        return full + int(rest // world_size >= 2)

    def epoch_loads(self, epoch: int) -> list[np.ndarray]:
        """The training rows of each load of ``epoch``, in the order they enter batches (no data read)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.chunks))
        groups = [order[i : i + self.chunks_per_load] for i in range(0, len(order), self.chunks_per_load)]
        return [rng.permutation(np.concatenate([self.chunks[c] for c in g])) for g in groups]

    def _load(self, rows: np.ndarray) -> dict[str, sp.csr_matrix]:
        """Both modalities' ``rows`` (in that order), read chunk by chunk and transformed."""
        out = {}
        for m, src in self.sources.items():
            ranges = np.unique(rows // self.chunk_size)
            parts, starts = [], {}
            for c in ranges:
                starts[int(c)] = sum(p.shape[0] for p in parts)
                parts.append(src.rows(c * self.chunk_size, (c + 1) * self.chunk_size))
            block = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
            offsets = np.array([starts[int(c)] for c in rows // self.chunk_size]) + rows % self.chunk_size
            X = block[offsets]
            out[m] = X if self.transform is None else self.transform(m, X)
        return out

    def batches(
        self, epoch: int, *, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]]:
        """This rank's ``(rows, RNA, ATAC)`` of every step of ``epoch`` (:meth:`n_steps` of them)."""
        if batch_size // world_size < 1:
            msg = f"batch size {batch_size} is smaller than the number of processes ({world_size})"
            raise ScclipError(msg)
        ids, mats = np.empty(0, dtype=np.int64), None  # the cells carried over from the previous load
        loads = self.epoch_loads(epoch)
        for i, rows in enumerate(loads):
            new = self._load(rows)
            ids = np.concatenate([ids, rows])
            mats = new if mats is None else {m: sp.vstack([mats[m], new[m]], format="csr") for m in new}
            pos, last = 0, i == len(loads) - 1
            while len(ids) - pos >= batch_size or (last and (len(ids) - pos) // world_size >= 2):
                n = min(batch_size, len(ids) - pos)
                take = pos + np.arange(rank, n - n % world_size, world_size)
                yield ids[take], mats["rna"][take], mats["atac"][take]
                pos += n
            ids, mats = ids[pos:], {m: X[pos:] for m, X in mats.items()}
