"""Approximate cosine top-k by an inverted file (IVF): the scalable path of the cross-modal neighbour search.

The exact search (:func:`scclip.metrics.topk_chunked`) scores every query against every reference row, so its
cost grows with ``n x m``: 836 s for the gap closing of the 377,000-cell atlas on 2 cores (docs/benchmarks.md,
section 11). The inverted file cuts the reference into ``n_lists`` clusters (spherical k-means on a seeded sample)
and scores each query only against the members of its ``n_probe`` most similar clusters, so the work is about
``n x m x n_probe / n_lists``, plus ``n x n_lists`` to pick the clusters.

Everything is dense torch on one device, seeded and deterministic; the results are exact similarities of real
candidates (only a neighbour outside the probed clusters can be missed), and probing every cluster gives the
exact top-k (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scclip.errors import ScclipError

#: Reference rows per cluster the k-means is trained on (a seeded sample of ``n_lists x`` this many rows).
TRAIN_ROWS_PER_LIST = 64
KMEANS_ITERATIONS = 10
QUERY_BLOCK = 32768
#: ``search="auto"`` takes the inverted file on CPU from this many query x reference pairs (about 160,000 cells
#: on each side; the exact search of 100,000 x 100,000 takes about a minute on 2 cores). Below it, and on a GPU
#: (where the brute force takes seconds), the search is exact.
AUTO_IVF_PAIRS = 25_000_000_000
SEARCHES = ("auto", "exact", "ivf")


def resolve_search(search: str, n_query: int, n_ref: int, device: str | torch.device = "cpu") -> str:
    """``"exact"`` or ``"ivf"`` for a ``search`` option (``"auto"``: see :data:`AUTO_IVF_PAIRS`)."""
    if search not in SEARCHES:
        msg = f"search must be one of {SEARCHES}, got {search!r}."
        raise ScclipError(msg)
    if search != "auto":
        return search
    on_cpu = torch.device(device).type == "cpu"
    return "ivf" if on_cpu and n_query * n_ref >= AUTO_IVF_PAIRS else "exact"


def default_lists(n_ref: int) -> int:
    """Clusters of the inverted file: ``2 sqrt(m)``, between 1 and 4096 (1,228 for the 377k atlas)."""
    return int(min(4096, max(1, round(2 * math.sqrt(n_ref)))))


def default_probe(n_lists: int) -> int:
    """Clusters scored per query: a thirty-second of them, at least 8 (38 of 1,228 for the atlas)."""
    return int(min(n_lists, max(8, n_lists // 32)))


@dataclass
class InvertedFile:
    """Reference rows grouped by their nearest of ``centroids``.

    centroids : (L, d) unit vectors
    order : (m,) int64 reference rows sorted by cluster
    starts : (L + 1,) int64 offsets of each cluster's rows in ``order``
    """

    centroids: torch.Tensor
    order: torch.Tensor
    starts: torch.Tensor

    @property
    def n_lists(self) -> int:
        return int(self.centroids.shape[0])


def _nearest(x: torch.Tensor, centroids: torch.Tensor, *, block: int = QUERY_BLOCK) -> torch.Tensor:
    """(n,) index of each row's most cosine-similar centroid, in blocks of rows."""
    return torch.cat([(x[i : i + block] @ centroids.T).argmax(1) for i in range(0, x.shape[0], block)])


def spherical_kmeans(x: torch.Tensor, n_lists: int, *, seed: int = 0) -> torch.Tensor:
    """(n_lists, d) unit centroids of unit rows ``x`` by Lloyd iterations on cosine similarity (seeded)."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    cent = x[torch.randperm(n, generator=g)[:n_lists].to(x.device)].clone()
    for _ in range(KMEANS_ITERATIONS):
        label = _nearest(x, cent)
        sums = torch.zeros_like(cent).index_add_(0, label, x)
        counts = torch.bincount(label, minlength=n_lists)
        empty = counts == 0  # reseed empty clusters from seeded random rows
        if bool(empty.any()):
            pick = torch.randint(n, (int(empty.sum()),), generator=g).to(x.device)
            sums[empty] = x[pick]
        cent = torch.nn.functional.normalize(sums, dim=1)
    return cent


def build_inverted_file(ref: torch.Tensor, *, n_lists: int | None = None, seed: int = 0) -> InvertedFile:
    """Cluster unit reference rows ``ref`` (m, d) into an :class:`InvertedFile`."""
    m = ref.shape[0]
    n_lists = default_lists(m) if n_lists is None else int(n_lists)
    if not 1 <= n_lists <= m:
        msg = f"n_lists must be between 1 and the {m} reference cells, got {n_lists}."
        raise ScclipError(msg)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randperm(m, generator=g)[: n_lists * TRAIN_ROWS_PER_LIST].to(ref.device)
    cent = spherical_kmeans(ref[sample], n_lists, seed=seed)
    label = _nearest(ref, cent)
    order = torch.argsort(label, stable=True)
    counts = torch.bincount(label, minlength=n_lists)
    starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return InvertedFile(cent, order, starts)


def _search_block(q: torch.Tensor, ref: torch.Tensor, ivf: InvertedFile, k: int, n_probe: int):
    """Top-``k`` of a block of unit queries among the members of their ``n_probe`` best clusters.

    Returns (b, k) indices and scores; a row with fewer than ``k`` candidates keeps ``-inf`` scores at its end.
    """
    b = q.shape[0]
    probe = torch.topk(q @ ivf.centroids.T, n_probe, dim=1).indices  # (b, P) clusters of each query
    cand_val = torch.full((b, n_probe, k), -torch.inf, device=q.device)
    cand_idx = torch.zeros((b, n_probe, k), dtype=torch.int64, device=q.device)
    flat = probe.reshape(-1)  # pair p = (query p // P, its probe rank p % P)
    pairs = torch.argsort(flat, stable=True)
    bounds = torch.cat([flat.new_zeros(1), torch.bincount(flat, minlength=ivf.n_lists).cumsum(0)]).tolist()
    starts = ivf.starts.tolist()
    for cl in range(ivf.n_lists):
        s0, s1 = starts[cl], starts[cl + 1]
        if bounds[cl] == bounds[cl + 1] or s0 == s1:
            continue
        p = pairs[bounds[cl] : bounds[cl + 1]]  # pairs probing cluster cl
        rows, rank = p // n_probe, p % n_probe
        members = ivf.order[s0:s1]
        v, j = torch.topk(q[rows] @ ref[members].T, min(k, s1 - s0), dim=1)  # (pairs, kk)
        cand_val[rows, rank, : v.shape[1]] = v
        cand_idx[rows, rank, : v.shape[1]] = members[j]
    val, pos = torch.topk(cand_val.reshape(b, -1), k, dim=1)
    return cand_idx.reshape(b, -1).gather(1, pos), val


def topk_ivf(
    query: torch.Tensor,
    ref: torch.Tensor,
    k: int,
    *,
    n_lists: int | None = None,
    n_probe: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Approximate top-``k`` most cosine-similar ``ref`` rows of every ``query`` row (both unit-norm).

    Parameters
    ----------
    query, ref
        ``(n, d)`` and ``(m, d)`` unit rows (see :func:`scclip.metrics.prepare_metric`).
    k
        Neighbours per query (``<= m``).
    n_lists, n_probe
        Clusters of the inverted file and clusters scored per query (defaults: :func:`default_lists`,
        :func:`default_probe`); ``n_probe = n_lists`` is the exact search.
    seed
        Seeds the k-means sample and initialisation (equal seeds give equal results).
    device
        Where the scoring runs.

    Returns
    -------
    CPU ``(indices int64, scores float32)`` of shape ``(n, k)``, best first, and a JSON-safe dict of the
    parameters used. Rows whose probed clusters hold fewer than ``k`` cells are searched exactly.
    """
    dev = torch.device(device)
    ref_d = ref.to(dev)
    ivf = build_inverted_file(ref_d, n_lists=n_lists, seed=seed)
    n_probe = default_probe(ivf.n_lists) if n_probe is None else int(n_probe)
    if not 1 <= n_probe <= ivf.n_lists:
        msg = f"n_probe must be between 1 and n_lists ({ivf.n_lists}), got {n_probe}."
        raise ScclipError(msg)
    n = query.shape[0]
    idx, val = torch.empty((n, k), dtype=torch.int64), torch.empty((n, k), dtype=torch.float32)
    for i0 in range(0, n, QUERY_BLOCK):
        q = query[i0 : i0 + QUERY_BLOCK].to(dev)
        j, v = _search_block(q, ref_d, ivf, k, n_probe)
        short = torch.isinf(v[:, -1]).nonzero().flatten()  # fewer than k candidates: exact for those rows
        if short.numel():
            v[short], j[short] = torch.topk(q[short] @ ref_d.T, k, dim=1)
        idx[i0 : i0 + q.shape[0]], val[i0 : i0 + q.shape[0]] = j.cpu(), v.cpu()
    info = {"search": "ivf", "n_lists": ivf.n_lists, "n_probe": n_probe, "seed": int(seed)}
    return idx, val, info
