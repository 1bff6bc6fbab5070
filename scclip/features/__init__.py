"""Feature spaces: each modality's features in natural genome order, cut into patches, and the mapping of any
query dataset's genes and peaks onto a model's features.

The modules:

- ``_modality``: :class:`ModalityFeatures` (one modality's ordered features and coordinates) and
  :func:`patch_layout` (contiguous patches, optionally within chromosomes);
- ``_builders``: the training data's own features, the bundled gene table, fixed-width genome bins;
- ``_space``: :class:`FeatureSpace` (genome + both modalities; saved in a model folder) and
  :func:`make_feature_space`;
- ``_var_coords``: coordinates, gene ids and symbols read from ``AnnData.var``;
- ``_align``: :func:`align_features`, zero-shot mapping by gene id / symbol and by interval overlap;
- ``_activity``: gene activity (ATAC counts over gene body + promoter): :func:`gene_activity_weights`.
"""

from __future__ import annotations

from scclip.features._activity import PROMOTER_BP, activity_region, gene_activity_weights
from scclip.features._align import LOW_COVERAGE, OVERLAP_RULES, Alignment, align_features
from scclip.features._builders import bin_features, features_from_anndata, gene_features, restrict_to_observed
from scclip.features._modality import KINDS, ModalityFeatures, patch_layout
from scclip.features._space import FeatureSpace, make_feature_space
from scclip.features._var_coords import (
    gene_coordinates,
    resolve_genome,
    var_gene_ids,
    var_gene_symbols,
    var_intervals,
)

__all__ = [
    "KINDS",
    "LOW_COVERAGE",
    "OVERLAP_RULES",
    "PROMOTER_BP",
    "Alignment",
    "FeatureSpace",
    "ModalityFeatures",
    "activity_region",
    "align_features",
    "bin_features",
    "features_from_anndata",
    "gene_activity_weights",
    "gene_coordinates",
    "gene_features",
    "make_feature_space",
    "patch_layout",
    "resolve_genome",
    "restrict_to_observed",
    "var_gene_ids",
    "var_gene_symbols",
    "var_intervals",
]
