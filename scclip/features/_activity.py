"""Gene activity: ATAC counts summed over each gene's body and promoter (the Signac / ArchR / GLUE recipe).

:func:`activity_region` is one gene's region; :func:`gene_activity_weights` is the 0/1 matrix that turns ATAC
counts on a model's features (peaks or genome bins) into per-gene activity: ``counts @ W``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Promoter length added upstream of the gene body for gene activity (bp).
PROMOTER_BP = 2_000


def activity_region(chrom: str, start: int, end: int, strand: str | None = None) -> tuple[str, int, int]:
    """Gene body + :data:`PROMOTER_BP` upstream: before ``start`` on ``+``, after ``end`` on ``-``, both sides
    when the strand is unknown (the bundled tables carry no strand)."""
    if strand == "+":
        return chrom, max(int(start) - PROMOTER_BP, 0), int(end)
    if strand == "-":
        return chrom, int(start), int(end) + PROMOTER_BP
    return chrom, max(int(start) - PROMOTER_BP, 0), int(end) + PROMOTER_BP


def gene_activity_weights(genes: pd.DataFrame, regions: pd.DataFrame) -> sp.csr_matrix:
    """``(len(regions), len(genes))`` 0/1 CSR: region ``i`` overlaps gene ``j``'s :func:`activity_region`.

    Parameters
    ----------
    genes, regions
        Frames with ``chrom``, ``start``, ``end`` (``genes`` may have ``strand``), in any order; rows without a
        chromosome (``""`` or missing) get no weight. Typically ``FeatureSpace["rna"].to_frame()`` and
        ``FeatureSpace["atac"].to_frame()``.

    Returns
    -------
    float32 CSR; ``atac_counts @ W`` is each cell's count over each gene's region (0 for genes no region
    touches).
    """
    rows, cols = [], []
    g_chrom = genes["chrom"].astype(str).to_numpy()
    strand = genes["strand"].astype(str).to_numpy() if "strand" in genes else np.full(len(genes), "")
    r_chrom = regions["chrom"].astype(str).to_numpy()
    r_start, r_end = regions["start"].to_numpy(np.int64), regions["end"].to_numpy(np.int64)
    for chrom in np.unique(r_chrom[(r_chrom != "") & (r_chrom != "nan")]):
        idx = np.flatnonzero(r_chrom == chrom)
        order = idx[np.argsort(r_start[idx], kind="stable")]
        starts, ends = r_start[order], r_end[order]
        reach = np.maximum.accumulate(ends)  # the furthest end so far: overlapping regions are allowed
        for j in np.flatnonzero(g_chrom == chrom):
            _, lo, hi = activity_region(chrom, genes["start"].iat[j], genes["end"].iat[j], strand[j] or None)
            first = np.searchsorted(reach, lo, side="right")  # regions before this one all end by ``lo``
            last = np.searchsorted(starts, hi, side="left")  # regions from here on start at or after ``hi``
            hit = np.arange(first, last)
            hit = hit[ends[hit] > lo]
            rows.append(order[hit])
            cols.append(np.full(hit.size, j))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(len(regions), len(genes)))
