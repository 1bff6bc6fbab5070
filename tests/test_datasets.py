"""The seeded multiome simulator: reproducible, real mm10 coordinates, realistic sparsity, coupled modalities."""

from __future__ import annotations

import numpy as np

from scclip.datasets import synthetic_multiome
from scclip.genome import chrom_sizes


def test_synthetic_multiome_is_seeded_sparse_and_on_mm10():
    a = synthetic_multiome(150, n_genes=80, seed=7)
    b = synthetic_multiome(150, n_genes=80, seed=7)
    c = synthetic_multiome(150, n_genes=80, seed=8)
    assert (a["rna"].X != b["rna"].X).nnz == 0 and (a["atac"].X != b["atac"].X).nnz == 0
    assert (a["rna"].X != c["rna"].X).nnz > 0
    assert list(a["rna"].obs_names) == list(a["atac"].obs_names)
    sizes = chrom_sizes("mm10")
    var = a["atac"].var
    assert var["chrom"].isin(list(sizes)).all()
    assert (var["end"].to_numpy() <= var["chrom"].map(sizes).to_numpy()).all()
    density = a["atac"].X.nnz / np.prod(a["atac"].shape)
    assert 0.01 < density < 0.5  # mostly zeros, but not empty
    assert a["rna"].obs["cell_type"].nunique() == 5


def test_accessibility_tracks_expression_of_the_nearby_gene():
    m = synthetic_multiome(400, n_genes=60, peaks_per_gene=1, seed=2)
    rna = m["rna"].X.toarray()
    atac = m["atac"].X.toarray()
    rna = rna / rna.sum(1, keepdims=True)
    atac = atac / np.maximum(atac.sum(1, keepdims=True), 1)
    # one peak per gene, in gene order: the i-th peak belongs to the i-th gene
    corr = [np.corrcoef(rna[:, i], atac[:, i])[0, 1] for i in range(atac.shape[1]) if atac[:, i].std() > 0]
    shuffled = [np.corrcoef(rna[:, i], atac[:, (i + 7) % atac.shape[1]])[0, 1] for i in range(atac.shape[1])]
    assert np.nanmean(corr) > np.nanmean(shuffled) + 0.1
