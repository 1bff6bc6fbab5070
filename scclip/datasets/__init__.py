"""Datasets: a seeded multiome simulator (tests, offline demo) and the real SNARE-seq mouse cortex data.

The modules:

- ``_synthetic``: :func:`synthetic_multiome`, paired RNA + ATAC simulated on real mm10 coordinates;
- ``_snareseq``: :func:`chen2019_snareseq`, from a local folder or downloaded on request (fails gracefully
  offline);
- ``_snareseq_raw``: the conversion of the five upstream files into AnnData.
"""

from __future__ import annotations

from scclip.datasets._snareseq import (
    DATA_DIR_ENV,
    SNARESEQ_BASE_URL,
    SNARESEQ_FILES,
    chen2019_snareseq,
    default_data_dir,
    resolve_data_dir,
)
from scclip.datasets._synthetic import synthetic_multiome

__all__ = [
    "DATA_DIR_ENV",
    "SNARESEQ_BASE_URL",
    "SNARESEQ_FILES",
    "chen2019_snareseq",
    "default_data_dir",
    "resolve_data_dir",
    "synthetic_multiome",
]
