"""Helpers behind the Streamlit app (``app.py``): pure Python, no Streamlit import.

* demo datasets and the app's default (model, dataset) (:mod:`~scclip.explore.demos`);
* fingerprints and an on-disk cache of embeddings and UMAP coordinates per (model, dataset)
  (:mod:`~scclip.explore.cache`);
* the joint cell table (RNA cells, then ATAC cells: one global index per cell) and its UMAP
  (:mod:`~scclip.explore.joint`);
* plotly figures with one ``Scattergl`` trace whose ``customdata`` is the global cell index, hover texts, the
  similarity histogram and group composition bars (:mod:`~scclip.explore.figures`), and the mapping from a
  plotly selection event (click, box, lasso) back to cells, computed for all cells on the server
  (:mod:`~scclip.explore.selection`);
* cross-modal partners of a cell or a group, one-to-one matching and label transfer tables
  (:mod:`~scclip.explore.matches`), and downloads (:mod:`~scclip.explore.downloads`);
* the embedding-quality panel: metrics shown and their cached values (:mod:`~scclip.explore.quality`);
* reading uploads (:mod:`~scclip.explore.uploads`) and a safety check for zipped model folders
  (:mod:`~scclip.explore.model_zip`);
* a background training runner (a subprocess running :func:`scclip.train` that writes ``progress.json``;
  :mod:`~scclip.explore.training_runner`);
* the zero-shot reference and label centroids (:mod:`~scclip.explore.zero_shot`).
* colour by a feature: queries (gene, peak / bin, gene activity, gene set) resolved to a
  :class:`FeatureSpec` (:mod:`~scclip.explore.feature_query`) and per-cell values with the cross-modal imputed
  view, cached per dataset in a :class:`FeatureStore` (:mod:`~scclip.explore.feature_values`); differential
  features of a selection (:mod:`~scclip.explore.markers`); their dot plot and the genome track
  (:mod:`~scclip.explore.view_figures`);
  per-patch attributions (:mod:`~scclip.explore.attribution`); ``.h5ad`` hand-off for CELLxGENE / scanpy
  (:mod:`~scclip.explore.handoff`).

Constants live in :mod:`~scclip.explore.constants`, locations (cache, data, runs) in
:mod:`~scclip.explore.locations`. Every name is re-exported here, so ``explore.<name>`` keeps working.
"""

from __future__ import annotations

from pathlib import Path as Path  # ``explore.Path`` is used by webapp/pages/zero_shot.py

from scclip._constants import EMBED_KEY
from scclip.explore.attribution import (
    ATTRIBUTION_BUDGET,
    MAX_ATTRIBUTION_CELLS,
    MAX_REFERENCE_CELLS,
    patch_attribution,
    path_points,
)
from scclip.explore.cache import (
    CACHE_OFF_NOTE,
    cache_file,
    compute_umap,
    dataset_fingerprint,
    embed_cached,
    model_fingerprint,
    umap_cached,
)
from scclip.explore.constants import (
    MAX_DRAWN,
    MISSING_COLOR,
    MODALITY_COLORS,
    MODALITY_LABELS,
    MODEL_ZIP_MAX_BYTES,
    MODEL_ZIP_SUFFIXES,
    PALETTE,
    REPO,
    SNARE_DEMO_MODEL,
    SNARE_FILE,
    SNARE_TEST_LIBRARIES,
)
from scclip.explore.demos import Demo, default_choice, list_demos, load_demo, synthetic_cells
from scclip.explore.downloads import h5mu_bytes, matches_csv, umap_csv
from scclip.explore.feature_query import FeatureSpec, nearest_genes, resolve_feature
from scclip.explore.feature_values import FeatureColors, FeatureStore
from scclip.explore.figures import (
    category_colors,
    composition_figure,
    draw_indices,
    hover_text,
    is_categorical,
    prebuilt,
    similarity_histogram,
    umap_figure,
    umap_spec,
    with_highlight,
)
from scclip.explore.handoff import PARTS, h5ad_bytes, handoff_anndata
from scclip.explore.input_size import MAX_GB_ENV, check_memory, estimate_memory, max_app_bytes
from scclip.explore.joint import QC_COLUMNS, Joint, add_qc, default_color_column, joint_from_embedded
from scclip.explore.locations import cache_dir, data_dir, device_description, runs_dir
from scclip.explore.markers import (
    MAX_TEST_CELLS,
    as_cells,
    category_cells,
    cells_in_modality,
    differential_csv,
    differential_features,
    store_obs,
)
from scclip.explore.matches import (
    GROUP_PARTNER_CELLS,
    composition,
    group_partners,
    group_sample,
    label_columns,
    one_to_one_table,
    other_slice,
    partners_display,
    partners_table,
    similarities,
    store_transfer,
    transfer,
    true_partner_rank,
)
from scclip.explore.model_info import cv_foscttm, libraries_text, model_row, read_summary
from scclip.explore.model_zip import safe_extract_model_zip
from scclip.explore.quality import METRIC_PANEL, embedding_metrics
from scclip.explore.selection import (
    apply_selection_events,
    points_in_polygon,
    selection_signature,
    selection_to_cells,
)
from scclip.explore.server_paths import (
    DATA_ROOTS_ENV,
    check_server_path,
    check_server_paths,
    data_roots,
    is_loopback,
)
from scclip.explore.training_runner import (
    CPU_CELLS_PER_SECOND,
    GPU_SPEEDUP,
    RUN_STATUS_ICONS,
    estimate_train_seconds,
    list_runs,
    log_tail,
    percent_tickformat,
    read_progress,
    resume_training,
    start_training,
    stop_training,
    time_left,
)
from scclip.explore.uploads import (
    SKIPPED_NOTE,
    UPLOAD_SUFFIXES,
    data_genome,
    max_upload_bytes,
    read_files,
    read_uploads,
    refusal,
    validation_summary,
)
from scclip.explore.view_figures import chromosome_offsets, dot_plot, genome_track
from scclip.explore.zero_shot import (
    cell_count_text,
    load_reference,
    nearest_centroid,
    parse_centroids,
    reference_file,
)
from scclip.features import (  # gene activity, as the colour-by-feature view uses it
    PROMOTER_BP,
    activity_region,
)

__all__ = [
    "ATTRIBUTION_BUDGET",
    "CACHE_OFF_NOTE",
    "CPU_CELLS_PER_SECOND",
    "DATA_ROOTS_ENV",
    "EMBED_KEY",
    "GPU_SPEEDUP",
    "GROUP_PARTNER_CELLS",
    "MAX_ATTRIBUTION_CELLS",
    "MAX_DRAWN",
    "MAX_GB_ENV",
    "MAX_REFERENCE_CELLS",
    "MAX_TEST_CELLS",
    "METRIC_PANEL",
    "MISSING_COLOR",
    "MODALITY_COLORS",
    "MODALITY_LABELS",
    "MODEL_ZIP_MAX_BYTES",
    "MODEL_ZIP_SUFFIXES",
    "PALETTE",
    "PARTS",
    "PROMOTER_BP",
    "QC_COLUMNS",
    "REPO",
    "RUN_STATUS_ICONS",
    "SKIPPED_NOTE",
    "SNARE_DEMO_MODEL",
    "SNARE_FILE",
    "SNARE_TEST_LIBRARIES",
    "UPLOAD_SUFFIXES",
    "Demo",
    "FeatureColors",
    "FeatureSpec",
    "FeatureStore",
    "Joint",
    "activity_region",
    "add_qc",
    "apply_selection_events",
    "as_cells",
    "cache_dir",
    "cache_file",
    "category_cells",
    "category_colors",
    "cell_count_text",
    "cells_in_modality",
    "check_memory",
    "check_server_path",
    "check_server_paths",
    "chromosome_offsets",
    "composition",
    "composition_figure",
    "compute_umap",
    "cv_foscttm",
    "data_dir",
    "data_genome",
    "data_roots",
    "dataset_fingerprint",
    "default_choice",
    "default_color_column",
    "device_description",
    "differential_csv",
    "differential_features",
    "dot_plot",
    "draw_indices",
    "embed_cached",
    "embedding_metrics",
    "estimate_memory",
    "estimate_train_seconds",
    "genome_track",
    "group_partners",
    "group_sample",
    "h5ad_bytes",
    "h5mu_bytes",
    "handoff_anndata",
    "hover_text",
    "is_categorical",
    "is_loopback",
    "joint_from_embedded",
    "label_columns",
    "libraries_text",
    "list_demos",
    "list_runs",
    "load_demo",
    "load_reference",
    "log_tail",
    "matches_csv",
    "max_app_bytes",
    "max_upload_bytes",
    "model_fingerprint",
    "model_row",
    "nearest_centroid",
    "nearest_genes",
    "one_to_one_table",
    "other_slice",
    "parse_centroids",
    "partners_display",
    "partners_table",
    "patch_attribution",
    "path_points",
    "percent_tickformat",
    "points_in_polygon",
    "prebuilt",
    "read_files",
    "read_progress",
    "read_summary",
    "read_uploads",
    "reference_file",
    "refusal",
    "resolve_feature",
    "resume_training",
    "runs_dir",
    "safe_extract_model_zip",
    "selection_signature",
    "selection_to_cells",
    "similarities",
    "similarity_histogram",
    "start_training",
    "stop_training",
    "store_obs",
    "store_transfer",
    "synthetic_cells",
    "time_left",
    "transfer",
    "true_partner_rank",
    "umap_cached",
    "umap_csv",
    "umap_figure",
    "umap_spec",
    "validation_summary",
    "with_highlight",
]
