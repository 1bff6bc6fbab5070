"""Datasets: a seeded multiome simulator (tests, offline demo) and loaders for real data.

- :func:`synthetic_multiome`: paired RNA + ATAC simulated on real mm10 coordinates.
- :func:`chen2019_snareseq`: the real SNARE-seq mouse cortex data from a local folder, or downloaded on request
  (implemented in ``_snareseq``).
"""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip.genome import gene_table


def synthetic_multiome(
    n_cells: int = 600,
    *,
    n_genes: int = 300,
    peaks_per_gene: int = 3,
    n_types: int = 5,
    genome: str = "mm10",
    seed: int = 0,
    depth_rna: float = 400.0,
    depth_atac: float = 150.0,
) -> md.MuData:
    """Paired RNA + ATAC counts with cell types, genes at real coordinates and peaks that track expression.

    Each cell type up-regulates its own set of marker genes; each gene has ``peaks_per_gene`` peaks within
    50 kb of its start whose accessibility follows the gene's expression (plus noise and background), with
    per-cell sequencing depth drawn log-normally. Sparsity is realistic (most entries zero).

    Returns
    -------
    MuData with modalities ``rna`` (raw counts, gene symbols, ``var`` chrom/start/end) and ``atac`` (raw
    counts, peaks named ``chr:start-end``, ``var`` chrom/start/end), and ``obs['cell_type']``, ``obs['batch']``.
    """
    rng = np.random.default_rng(seed)
    table = gene_table(genome)
    table = table[table["chrom"].isin([f"chr{i}" for i in range(1, 20)] + ["chrX"])]
    table = table[~table["gene_name"].str.startswith(("Gm", "Mir", "Snor", "LOC"))].drop_duplicates(
        "gene_name"
    )
    genes = table.iloc[np.sort(rng.choice(len(table), n_genes, replace=False))].reset_index(drop=True)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    markers = rng.random((n_types, n_genes)) < 0.15
    program = base[None, :] * np.where(markers, rng.uniform(4, 10, (n_types, n_genes)), 1.0)  # (types, genes)
    expr = program[types] * rng.lognormal(0, 0.3, (n_cells, n_genes))  # (cells, genes)
    expr /= expr.sum(1, keepdims=True)
    depth = rng.lognormal(np.log(depth_rna), 0.4, n_cells)
    rna = sp.csr_matrix(rng.poisson(expr * depth[:, None]).astype(np.float32))

    gene_of_peak = np.repeat(np.arange(n_genes), peaks_per_gene)
    offset = rng.integers(-50_000, 50_000, len(gene_of_peak))
    pstart = np.maximum(genes["start"].to_numpy()[gene_of_peak] + offset, 0)
    pchrom = genes["chrom"].to_numpy()[gene_of_peak]
    width = rng.integers(300, 1500, len(pstart))
    access = program[types][:, gene_of_peak] / program.max()  # (cells, peaks)
    access = 0.7 * access + 0.3 * rng.random(access.shape) * access.mean()
    access /= access.sum(1, keepdims=True)
    depth_a = rng.lognormal(np.log(depth_atac), 0.4, n_cells)
    atac = sp.csr_matrix(rng.poisson(access * depth_a[:, None]).astype(np.float32))

    cells = [f"cell{i:05d}" for i in range(n_cells)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in types]),
            "batch": pd.Categorical(np.where(np.arange(n_cells) % 4 == 3, "b2", "b1")),
        },
        index=cells,
    )
    rvar = pd.DataFrame(
        {
            "chrom": genes["chrom"].to_numpy(),
            "start": genes["start"].to_numpy(),
            "end": genes["end"].to_numpy(),
        },
        index=genes["gene_name"].to_numpy(),
    )
    names = [f"{c}:{s}-{s + w}" for c, s, w in zip(pchrom, pstart, width, strict=True)]
    avar = pd.DataFrame({"chrom": pchrom, "start": pstart, "end": pstart + width}, index=names)
    avar = avar[~avar.index.duplicated()]
    atac = atac[:, ~pd.Index(names).duplicated()]
    mdata = md.MuData(
        {"rna": ad.AnnData(rna, obs=obs.copy(), var=rvar), "atac": ad.AnnData(atac, obs=obs.copy(), var=avar)}
    )
    mdata.uns["genome"] = genome
    mdata.uns["description"] = f"synthetic multiome (scclip.datasets.synthetic_multiome, seed={seed})"
    return mdata
