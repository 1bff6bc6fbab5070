"""Label-aware and neighbourhood metrics: cell-type ASW, modality mixing, batch entropy, kNN label transfer.

Same conventions as the paired metrics: embeddings are
``(n, d)`` float arrays, cosine by default, neighbour searches chunked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scclip.errors import ScclipError
from scclip.metrics._similarity import (
    as_embedding,
    check_metric,
    pair_embeddings,
    prepare_metric,
    topk_chunked,
)


def _labels(labels, n: int, name: str) -> np.ndarray:
    lab = np.asarray(labels, dtype=object).ravel()
    if len(lab) != n:
        msg = f"{name} has {len(lab)} entries but the embedding has {n} rows; give one label per cell."
        raise ScclipError(msg)
    return lab


def _known(lab: np.ndarray) -> np.ndarray:
    return ~pd.isna(pd.Series(lab)).to_numpy()


def celltype_asw(emb, labels, *, max_cells: int = 5000, seed: int = 0) -> float:
    """Cell-type average silhouette width, rescaled: ``(silhouette(cosine) + 1) / 2`` (higher is better).

    Cells with a missing label are dropped; at most ``max_cells`` cells are drawn (seeded, without replacement).
    """
    from sklearn.metrics import silhouette_score

    x = as_embedding(emb, name="emb")
    lab = _labels(labels, x.shape[0], "labels")
    keep = np.flatnonzero(_known(lab))
    if keep.size > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=max_cells, replace=False))
    codes = pd.factorize(pd.Series(lab[keep]).astype(str))[0]
    n_types = len(np.unique(codes))
    if n_types < 2 or n_types >= keep.size:
        msg = f"cell-type ASW needs between 2 and n_cells - 1 distinct labels, got {n_types} among {keep.size} cells."
        raise ScclipError(msg)
    return float((silhouette_score(x[keep].numpy(), codes, metric="cosine") + 1) / 2)


def _entropy(counts: np.ndarray, log) -> np.ndarray:
    p = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(1)


def modality_mixing(
    rna_emb, atac_emb, *, k: int = 30, metric: str = "cosine", chunk_size: int | None = None
) -> float:
    """Mean entropy (log2) of the modality labels among each cell's ``k`` nearest neighbours.

    Both modalities are stacked into one joint space; a cell is never its own neighbour. 1.0 means every
    neighbourhood is half RNA, half ATAC (perfect mixing); 0.0 means every neighbourhood is one modality.
    """
    check_metric(metric)
    rna, atac = pair_embeddings(rna_emb, atac_emb, paired=False)
    x = prepare_metric(torch.cat([rna, atac]), metric)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        msg = f"k must be between 1 and n_cells - 1 = {n - 1}, got {k}."
        raise ScclipError(msg)
    mod = np.r_[np.zeros(rna.shape[0], dtype=np.int64), np.ones(atac.shape[0], dtype=np.int64)]
    idx, _ = topk_chunked(x, x, k, metric=metric, chunk_size=chunk_size, self_index=np.arange(n))
    n_atac = mod[idx.numpy()].sum(1)
    counts = np.stack([k - n_atac, n_atac], axis=1).astype(np.float64)
    return float(_entropy(counts, np.log2).mean())


def batch_entropy_mixing_score(
    emb,
    labels,
    *,
    n_neighbors: int = 100,
    n_pools: int = 100,
    n_samples_per_pool: int = 100,
    seed: int = 0,
    chunk_size: int | None = None,
) -> float:
    """Batch-entropy mixing score as in SCALEX (Xiong et al. 2022), reproduced faithfully.

    For ``n_pools`` pools of ``n_samples_per_pool`` cells drawn with replacement, each cell's ``n_neighbors``
    Euclidean neighbours (itself excluded) give label frequencies ``p``, reweighted by the global frequencies
    ``P`` (``q = (p / P) / sum(p / P)``); the score is the natural-log entropy of ``q`` averaged over cells and
    pools, divided -- as SCALEX does -- by ``log2(n_labels)``. With two labels the maximum is therefore
    ``ln 2 ~= 0.693``, not 1.
    """
    x = as_embedding(emb, name="emb")
    lab = _labels(labels, x.shape[0], "labels")
    codes, uniq = pd.factorize(pd.Series(lab).astype(str))
    n_lab = len(uniq)
    if n_lab < 2:
        msg = "batch_entropy_mixing_score needs at least 2 distinct labels (batches or modalities)."
        raise ScclipError(msg)
    n = x.shape[0]
    k = min(n_neighbors, n - 1)
    big_p = np.bincount(codes, minlength=n_lab) / n
    rng = np.random.default_rng(seed)
    pools = rng.integers(0, n, size=(n_pools, n_samples_per_pool))
    uq, inv = np.unique(pools, return_inverse=True)
    idx, _ = topk_chunked(x[uq], x, k, metric="euclidean", chunk_size=chunk_size, self_index=uq)
    nb = codes[idx.numpy()]
    counts = np.zeros((len(uq), n_lab))
    np.add.at(counts, (np.repeat(np.arange(len(uq)), k), nb.ravel()), 1.0)
    ratio = (counts / k) / big_p
    q = ratio / ratio.sum(1, keepdims=True)
    ent = -(q * np.log(q + 1e-8)).sum(1)
    per_pool = ent[inv.reshape(pools.shape)].mean(1)
    return float(per_pool.mean() / np.log2(n_lab))


def knn_vote(
    ref_emb, ref_labels, query_emb, *, k: int = 15, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of each query cell's ``k`` nearest (cosine) reference cells.

    Ties between labels go to the label of the nearest neighbour among them. Returns ``(labels, vote share)``;
    reference cells with a missing label are ignored.
    """
    ref = as_embedding(ref_emb, name="ref_emb")
    query = as_embedding(query_emb, name="query_emb")
    if ref.shape[1] != query.shape[1]:
        msg = f"ref_emb has {ref.shape[1]} dimensions but query_emb has {query.shape[1]}; embed both in the same space."
        raise ScclipError(msg)
    lab = _labels(ref_labels, ref.shape[0], "ref_labels")
    keep = np.flatnonzero(_known(lab))
    if keep.size == 0:
        msg = "every reference label is missing; give the reference cells labels to transfer."
        raise ScclipError(msg)
    if int(k) < 1:
        msg = f"k must be a positive integer, got {k}."
        raise ScclipError(msg)
    k = min(int(k), keep.size)
    codes, uniq = pd.factorize(pd.Series(lab[keep]))
    idx, _ = topk_chunked(prepare_metric(query, "cosine"), prepare_metric(ref[keep], "cosine"), k, chunk_size=chunk_size)
    nb = codes[idx.numpy()]  # (n_query, k), nearest first
    nq, n_lab = nb.shape[0], len(uniq)
    counts = np.zeros((nq, n_lab))
    np.add.at(counts, (np.repeat(np.arange(nq), k), nb.ravel()), 1.0)
    first = np.full((nq, n_lab), k, dtype=np.float64)
    for pos in range(k - 1, -1, -1):
        first[np.arange(nq), nb[:, pos]] = pos
    best = np.argmax(counts + (k - first) / (k + 1), axis=1)
    share = counts[np.arange(nq), best] / k
    return np.asarray(uniq, dtype=object)[best], share


def label_transfer_accuracy(
    ref_emb, ref_labels, query_emb, query_labels, *, k: int = 15, chunk_size: int | None = None
) -> float:
    """Accuracy of kNN (cosine, ``k`` neighbours, majority vote) label transfer from reference to query cells.

    Query cells with a missing true label are left out of the accuracy.
    """
    pred, _ = knn_vote(ref_emb, ref_labels, query_emb, k=k, chunk_size=chunk_size)
    truth = _labels(query_labels, len(pred), "query_labels")
    ok = _known(truth)
    if not ok.any():
        msg = "every query label is missing; label-transfer accuracy needs the query cells' true labels."
        raise ScclipError(msg)
    return float(np.mean(pred[ok].astype(str) == truth[ok].astype(str)))
