"""Cross-modal matching in a joint embedding: nearest partners, match tables, one-to-one pairing, label transfer,
and matching-time Sinkhorn normalisation.

The modules: ``_partners`` (top-k partners, paired tables, label transfer), ``_assignment`` (one-to-one:
Hungarian, greedy, Sinkhorn), ``_sinkhorn`` (entropic transport potentials and the candidate biases they give).
"""

from __future__ import annotations

from scclip.match._assignment import HUNGARIAN_MAX_PAIRS, one_to_one
from scclip.match._partners import match_paired, match_table, topk_partners, transfer_labels
from scclip.match._sinkhorn import sinkhorn_bias

__all__ = [
    "HUNGARIAN_MAX_PAIRS",
    "match_paired",
    "match_table",
    "one_to_one",
    "sinkhorn_bias",
    "topk_partners",
    "transfer_labels",
]
