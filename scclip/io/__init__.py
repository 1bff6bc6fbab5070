"""Files in and out: read any supported single-cell file into a MuData (``rna`` / ``atac``), pair modalities,
open files larger than memory for chunked reading, count 10x fragments, write atomically.

The modules:

- ``_read``: :func:`read` (``.h5mu``, ``.h5ad``, Cell Ranger ``.h5``, 10x Matrix Market folders and archives);
- ``_tenx``: the 10x readers;
- ``_checks``: modality names and inference, value checks, choosing raw counts, assembling the MuData;
- ``_pairing``: :func:`pairing_report`, :func:`paired_cells`, :func:`read_pair`;
- ``_backed``: :func:`read_backed` and :class:`BackedData` (``X`` stays on disk, read in row chunks);
- ``_disk_csr``: :class:`DiskCSR` / :class:`DiskCSRWriter` (a CSR matrix in flat files, read by row ranges);
- ``_fragments``: 10x ``fragments.tsv.gz`` counted onto any intervals (public face: :mod:`scclip.fragments`);
- ``_write``: :func:`write_h5mu` and JSON, through a temporary file and a rename.
"""

from __future__ import annotations

from scclip._constants import MODALITIES
from scclip.io._backed import (
    DEFAULT_CHUNK_SIZE,
    BackedData,
    Modality,
    as_backed,
    check_chunk_size,
    check_chunkable,
    from_anndata,
    is_backed,
    read_backed,
)
from scclip.io._checks import (
    check_modality_data,
    check_modality_meta,
    check_values,
    count_source,
    modality_of_anndata,
    unsupported_input,
)
from scclip.io._disk_csr import DiskCSR, DiskCSRWriter
from scclip.io._fragments import atac_from_fragments, count_fragments, covered_by_fragments
from scclip.io._pairing import paired_cells, pairing_report, read_pair, shared_barcodes
from scclip.io._read import read
from scclip.io._write import atomic_write, json_default, write_h5mu, write_json_atomic

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MODALITIES",
    "BackedData",
    "DiskCSR",
    "DiskCSRWriter",
    "Modality",
    "as_backed",
    "atac_from_fragments",
    "atomic_write",
    "check_chunk_size",
    "check_chunkable",
    "check_modality_data",
    "check_modality_meta",
    "check_values",
    "count_fragments",
    "count_source",
    "covered_by_fragments",
    "from_anndata",
    "is_backed",
    "json_default",
    "modality_of_anndata",
    "paired_cells",
    "pairing_report",
    "read",
    "read_backed",
    "read_pair",
    "shared_barcodes",
    "unsupported_input",
    "write_h5mu",
    "write_json_atomic",
]
