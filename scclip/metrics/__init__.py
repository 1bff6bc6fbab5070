"""Cross-modal integration metrics, computed chunk-wise (nothing ever holds an ``n x m`` similarity matrix).

Every function takes embeddings as ``(n, d)`` float arrays (numpy or torch); similarities are cosine by default
or negative Euclidean distance. The modules:

- ``_similarity``: the scoring kernels (inputs, chunked top-k, one paired scoring pass);
- ``_ivf``: the approximate top-k of an inverted file, the scalable path for hundreds of thousands of cells;
- ``_paired``: FOSCTTM, top-k accuracy, match probability (row ``i`` of both modalities is the same cell);
- ``_labels``: cell-type ASW, modality mixing, batch entropy, kNN label transfer.
"""

from __future__ import annotations

from scclip.metrics._ivf import AUTO_IVF_PAIRS, SEARCHES, resolve_search, topk_ivf
from scclip.metrics._labels import (
    batch_entropy_mixing_score,
    celltype_asw,
    knn_vote,
    label_transfer_accuracy,
    modality_mixing,
)
from scclip.metrics._paired import foscttm, match_probability, paired_metrics, topk_accuracy
from scclip.metrics._similarity import (
    as_embedding,
    auto_chunk,
    check_metric,
    pair_embeddings,
    paired_pass,
    prepare_metric,
    topk_chunked,
)

__all__ = [
    "AUTO_IVF_PAIRS",
    "SEARCHES",
    "as_embedding",
    "auto_chunk",
    "batch_entropy_mixing_score",
    "celltype_asw",
    "check_metric",
    "foscttm",
    "knn_vote",
    "label_transfer_accuracy",
    "match_probability",
    "modality_mixing",
    "pair_embeddings",
    "paired_metrics",
    "paired_pass",
    "prepare_metric",
    "resolve_search",
    "topk_accuracy",
    "topk_chunked",
    "topk_ivf",
]
