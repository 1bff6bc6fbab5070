"""The modality gap of contrastive embeddings: measure it, and close it by cross-modal completion.

A CLIP-style model places RNA and ATAC embeddings in two separate cones of the sphere: a cell is nearer to every
cell of its own modality than to its partner, so a joint UMAP shows two clouds although cross-modal matching is
good. Shifting or rescaling each modality (centring, standardising) does not remove this (measured on SNARE-seq,
see ``docs/modality_gap.md``): the modalities differ in more than their means.

:func:`close_gap` represents every cell by *both* modalities: its own embedding plus the mean embedding of its
``k`` nearest cells of the other modality (its predicted partners)::

    joint(rna_i)  = normalise(z_rna_i  + mean_{j in kNN_atac(z_rna_i)}  z_atac_j)
    joint(atac_i) = normalise(z_atac_i + mean_{j in kNN_rna(z_atac_i)}  z_rna_j)

Both sides are then sums of one RNA-space and one ATAC-space vector, so the modality-specific offsets appear
on both sides and cancel in the joint neighbourhoods. It needs no pairing (neighbours come from the model's
cross-modal similarity), keeps cross-modal matching intact (FOSCTTM unchanged or better), and scales like
:func:`scclip.match.topk_partners` (chunked, O(n * chunk) memory). The exact neighbour search is quadratic in the
cells; from about 160,000 cells per modality (``search="auto"``) it is an inverted file, whose cost grows like
``n^1.5`` (:func:`scclip.metrics.topk_ivf`; 377,000 cells: docs/benchmarks.md, section 11).
"""

from __future__ import annotations

import numpy as np

from scclip.errors import ScclipError
from scclip.match import topk_partners
from scclip.metrics import as_embedding, resolve_search

#: Default number of predicted partners averaged into each cell's joint embedding (chosen on validation cells
#: of the training libraries; results were flat for k in 5..50, see docs/modality_gap.md).
DEFAULT_K = 15


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def modality_gap(rna_emb, atac_emb) -> dict[str, float]:
    """Size of the gap between two sets of unit-norm embeddings.

    Returns
    -------
    ``mean_distance``: Euclidean distance between the two modalities' mean embeddings (0 = no gap);
    ``within_rna`` / ``within_atac`` / ``between``: mean cosine similarity of random pairs of cells within each
    modality and across modalities (a gap shows as ``between`` well below both ``within`` values).
    """
    r = _unit(as_embedding(rna_emb, name="rna_emb").numpy().astype(np.float64))
    a = _unit(as_embedding(atac_emb, name="atac_emb").numpy().astype(np.float64))
    mr, ma = r.mean(0), a.mean(0)
    # mean cosine over all pairs = |mean|^2 terms (self-pairs removed within a modality)
    within_r = (len(r) ** 2 * (mr @ mr) - len(r)) / max(len(r) * (len(r) - 1), 1)
    within_a = (len(a) ** 2 * (ma @ ma) - len(a)) / max(len(a) * (len(a) - 1), 1)
    return {
        "mean_distance": float(np.linalg.norm(mr - ma)),
        "within_rna": float(within_r),
        "within_atac": float(within_a),
        "between": float(mr @ ma),
    }


def _complete(own: np.ndarray, other: np.ndarray, idx: np.ndarray, *, block: int = 8192) -> np.ndarray:
    """``normalise(own + mean of other[idx])`` in blocks of rows: never a (cells, k, d) array of all cells."""
    out = np.empty_like(own, dtype=np.float32)
    idx = np.asarray(idx)
    for i in range(0, len(own), block):
        out[i : i + block] = _unit(own[i : i + block] + other[idx[i : i + block]].mean(axis=1))
    return out


def close_gap(
    rna_emb,
    atac_emb,
    *,
    k: int = DEFAULT_K,
    chunk_size: int | None = None,
    device: str = "cpu",
    search: str = "auto",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gap-closed joint embeddings by cross-modal completion (see the module docstring).

    Parameters
    ----------
    rna_emb, atac_emb
        ``(n_rna, d)`` and ``(n_atac, d)`` embeddings in the model's shared space (paired or not).
    k
        Predicted partners averaged into each cell (capped at the other modality's number of cells).
    chunk_size, device, search
        Passed to :func:`scclip.match.topk_partners`; ``search="auto"`` is exact below about 160,000 cells per
        modality and an approximate inverted file above (recorded in ``info["search"]``).

    Returns
    -------
    ``(joint_rna, joint_atac, info)``: float32 unit-norm arrays of the input shapes, and a JSON-safe dict
    recording the method, ``k`` and the gap before and after.
    """
    r = as_embedding(rna_emb, name="rna_emb").numpy().astype(np.float32)
    a = as_embedding(atac_emb, name="atac_emb").numpy().astype(np.float32)
    if r.shape[1] != a.shape[1]:
        msg = f"RNA ({r.shape[1]}-d) and ATAC ({a.shape[1]}-d) embeddings have different widths; embed both with one model"
        raise ScclipError(msg)
    if not isinstance(k, (int, np.integer)) or k < 1:
        msg = f"k must be a positive integer, got {k!r}"
        raise ScclipError(msg)
    k_r, k_a = min(int(k), len(a)), min(int(k), len(r))
    how = resolve_search(search, len(r), len(a), device)
    opts = {"chunk_size": chunk_size, "device": device, "search": how}
    idx_r, _ = topk_partners(r, a, k=k_r, **opts)  # (n_rna, k) ATAC neighbours
    idx_a, _ = topk_partners(a, r, k=k_a, **opts)  # (n_atac, k) RNA neighbours
    joint_r, joint_a = _complete(_unit(r), _unit(a), idx_r), _complete(_unit(a), _unit(r), idx_a)
    info = {
        "method": "cross-modal completion",
        "k": int(k),
        "search": how,
        "description": "joint = normalise(own embedding + mean of the k nearest cells of the other modality)",
        "gap_before": modality_gap(r, a),
        "gap_after": modality_gap(joint_r, joint_a),
    }
    return joint_r, joint_a, info
