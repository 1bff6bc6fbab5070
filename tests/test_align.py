"""Zero-shot alignment of query features onto a model's feature space."""

from __future__ import annotations

import functools
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scclip.errors import GenomeMismatchError, ScclipError
from scclip.features import ModalityFeatures, align_features, bin_features, gene_features
from scclip.features._align import overlap_pairs, select_pairs
from scclip.genome import chrom_sizes


def _adata(var_names, var=None, uns=None, X=None) -> ad.AnnData:
    var = pd.DataFrame(var or {}, index=pd.Index(list(var_names)))
    if X is None:
        X = sparse.random(4, len(var_names), density=0.6, format="csr", random_state=1, dtype=np.float32)
    return ad.AnnData(X=sparse.csr_matrix(X, dtype=np.float32), var=var, uns=uns or {})


def _peaks(chrom, start, end, *, genome="mm10") -> ModalityFeatures:
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom, start, end, strict=True)]
    return ModalityFeatures("atac", names, chrom, start, end, genome=genome, n_patches=1)


@functools.cache
def _bins_mm10_5kb() -> ModalityFeatures:
    return bin_features("mm10", bin_size=5000, n_patches=256)


# --- RNA ---------------------------------------------------------------------------------------------------


def test_rna_by_id_then_symbol_then_casefold():
    model = ModalityFeatures(
        "rna",
        names=["Tp53", "Cd4", "Gapdh", "Actb"],
        chrom=["chr11", "chr6", "chr6", "chr5"],
        start=[1, 2, 3, 4],
        end=[5, 6, 7, 8],
        ids=["ENSMUSG00000059552", "ENSMUSG00000023274", "ENSMUSG00000057666", "ENSMUSG00000029580"],
        genome="mm10",
        n_patches=2,
    )
    var = {"gene_ids": ["ENSMUSG00000059552.3", "", "", "", "ENSMUSG00000000001"]}
    query = _adata(["renamed", "Gapdh", "Cd4", "ACTB", "Nope"], var)
    al = align_features(query, model)
    np.testing.assert_array_equal(al.matrix.toarray().argmax(1)[:4], [0, 2, 1, 3])
    assert al.matrix[4].nnz == 0
    assert al.report["matched_by"] == {"id": 1, "symbol": 2, "symbol_casefold": 1}
    assert al.report["method"] == "symbol" and al.report["unmapped_examples"] == ["Nope"]
    assert al.report["query_features_used"] == 4 and al.report["model_features_hit"] == 4
    assert any("case-insensitively" in w for w in al.report["warnings"])


def test_rna_onto_bundled_gene_table_by_id_and_symbol():
    genes = gene_features("hg38", n_patches=64)
    var = {"gene_ids": ["ENSG00000141510", "", ""]}
    al = align_features(_adata(["TP53_alias", "GAPDH", "NOT_A_GENE"], var), genes)
    hits = al.matrix.tocoo()
    assert sorted(genes.names[hits.col].tolist()) == ["GAPDH", "TP53"]
    assert al.report["matched_by"] == {"id": 1, "symbol": 1}
    assert al.report["frac_query_used"] == pytest.approx(2 / 3)


def test_identity_and_permutation_fast_path():
    model = ModalityFeatures("rna", ["a", "b", "c"], ["chr1"] * 3, [1, 2, 3], [2, 3, 4], n_patches=1)
    X = sparse.csr_matrix(np.array([[1, 2, 3], [4, 0, 6]], dtype=np.float32))
    al = align_features(_adata(["c", "a", "b"], X=X), model)  # same names, another order
    assert al.report["method"] == "identity"
    np.testing.assert_array_equal(al.transform(X).toarray(), [[2, 3, 1], [0, 6, 4]])
    assert align_features(_adata(["a", "b", "c"], X=X), model).report["method"] == "identity"


# --- ATAC overlap ------------------------------------------------------------------------------------------


def _overlap_case():
    model = _peaks(["chr1"] * 3 + ["chr2"], [100, 300, 400, 100], [200, 400, 500, 200])
    names = ["chr1:150-250", "chr1:350-450", "chr1:190-320", "chr1:600-700", "chr1:100-500", "chr2:150-160"]
    # overlaps (bp) with model 0..3:  [50,0,0,0], [0,50,50,0] tie, [10,20,0,0], none, [100,100,100,0], [0,0,0,10]
    X = sparse.csr_matrix(np.array([[1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 0, 1]], dtype=np.float32))
    return model, _adata(names, X=X), X


def test_overlap_best_conserves_counts_and_breaks_ties_low():
    model, query, X = _overlap_case()
    al = align_features(query, model)
    rows, cols = al.matrix.nonzero()
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 0, 1: 1, 2: 1, 4: 0, 5: 3}
    out = al.transform(X)
    assert sparse.isspmatrix_csr(out) and out.dtype == np.float32
    # model 0 <- peaks 0 and 4 (1 + 5), model 1 <- peaks 1 and 2 (2 + 3), model 3 <- peak 5
    np.testing.assert_array_equal(out.toarray(), [[6, 5, 0, 6], [0, 1, 0, 1]])
    assert out.sum() == X.sum() - X[:, 3].sum()  # only the unmapped peak's counts are lost
    assert al.report["query_features_used"] == 5 and al.report["model_features_hit"] == 3
    assert al.report["frac_model_hit"] == pytest.approx(0.75) and al.report["unmapped_examples"] == [
        "chr1:600-700"
    ]
    assert al.count_coverage(X) == pytest.approx((X.sum() - X[:, 3].sum()) / X.sum())


def test_overlap_all_gives_every_overlapped_feature():
    model, query, X = _overlap_case()
    al = align_features(query, model, overlap="all")
    assert al.matrix.nnz == 1 + 2 + 2 + 3 + 1
    np.testing.assert_array_equal(al.transform(X).toarray(), [[1 + 3 + 5, 2 + 3 + 5, 2 + 5, 6], [0, 1, 1, 1]])
    with pytest.raises(ScclipError, match="overlap rule"):
        align_features(query, model, overlap="most")


def test_shifted_and_merged_peaks():
    rng = np.random.default_rng(0)
    start = np.sort(rng.choice(np.arange(0, 5_000_000, 1000), size=300, replace=False))
    width = rng.integers(200, 800, size=300)
    model = _peaks(np.array(["chr3"] * 300), start, start + width)
    shifted = [f"chr3:{s + w // 3}-{s + w + w // 3}" for s, w in zip(start, width, strict=True)]
    al = align_features(_adata(shifted), model)
    np.testing.assert_array_equal(al.matrix.nonzero()[1], np.arange(300))  # each onto its own peak
    # merge neighbours pairwise: one query peak spanning model peaks 2k and 2k+1
    merged = [f"chr3:{start[i]}-{start[i + 1] + width[i + 1]}" for i in range(0, 300, 2)]
    best = align_features(_adata(merged), model)
    hit = best.matrix.nonzero()[1]
    expect = [i if width[i] >= width[i + 1] else i + 1 for i in range(0, 300, 2)]  # larger overlap wins
    np.testing.assert_array_equal(hit, expect)
    every = align_features(_adata(merged), model, overlap="all")
    assert every.matrix.nnz >= 300 and every.report["model_features_hit"] == 300


def test_bins_arithmetic_equals_generic_overlap():
    bins = _bins_mm10_5kb()
    sizes = chrom_sizes("mm10")
    rng = np.random.default_rng(1)
    chroms = rng.choice([c for c in sizes if c != "chrM"], size=3000)
    size = np.array([sizes[c] for c in chroms])
    start = (rng.random(3000) * (size - 20_000)).astype(np.int64)
    end = start + rng.integers(1, 16_000, size=3000)  # up to 4 bins each
    chroms[:5], start[:5], end[:5] = (
        "chr1",
        sizes["chr1"] - 100 + np.arange(5),
        sizes["chr1"] + 50,
    )  # past the end
    chroms[5:10], start[5:10], end[5:10] = "chrM", [0, 4000, 9000, 14000, 16000], 16299  # short last bin
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chroms, start, end, strict=True)]
    for rule in ("best", "all"):
        al = align_features(_adata(names), bins, overlap=rule)
        q, m, ov = overlap_pairs(chroms, start, end, bins.chrom, bins.start, bins.end)
        rows, cols = select_pairs(q, m, ov, overlap=rule)
        generic = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=al.matrix.shape)
        assert (al.matrix != generic).nnz == 0
    assert al.report["frac_query_used"] == 1.0 and any("past" in w for w in al.report["warnings"])


def test_large_alignment_is_fast():
    bins = _bins_mm10_5kb()
    rng = np.random.default_rng(2)
    n = 200_000
    chroms = rng.choice([f"chr{i}" for i in range(1, 20)], size=n)
    start = rng.integers(0, 60_000_000, size=n)
    end = start + rng.integers(100, 2000, size=n)
    t0 = time.perf_counter()
    q, m, ov = overlap_pairs(chroms, start, end, bins.chrom, bins.start, bins.end)  # generic path
    select_pairs(q, m, ov, overlap="best")
    generic_s = time.perf_counter() - t0
    var = {"chrom": chroms, "start": start, "end": end}
    t0 = time.perf_counter()
    al = align_features(_adata([f"p{i}" for i in range(n)], var, X=sparse.csr_matrix((1, n))), bins)
    arithmetic_s = time.perf_counter() - t0
    assert al.report["query_features_used"] == n
    assert generic_s < 5.0 and arithmetic_s < 5.0  # ~0.3 s each measured


# --- coverage and errors -----------------------------------------------------------------------------------


def test_zero_coverage_is_an_error_and_low_coverage_warns():
    model = _peaks(["chr1"] * 20, np.arange(20) * 1000, np.arange(20) * 1000 + 500)
    with pytest.raises(ScclipError, match="no query feature maps"):
        align_features(_adata(["chr5:1-100", "chr5:200-300"]), model)
    names = ["chr1:10-20"] + [f"chr1:{100_000 + i * 10}-{100_005 + i * 10}" for i in range(19)]
    al = align_features(_adata(names), model)
    assert al.report["frac_query_used"] == pytest.approx(0.05)
    assert sum("low coverage" in w for w in al.report["warnings"]) == 2  # query side and model side


def test_transform_checks_shape():
    model, query, X = _overlap_case()
    al = align_features(query, model)
    with pytest.raises(ScclipError, match="6 query features"):
        al.transform(sparse.csr_matrix((2, 5)))
    np.testing.assert_array_equal(al.transform(X.toarray()).toarray(), al.transform(query).toarray())


def test_declared_genome_mismatch():
    bins = _bins_mm10_5kb()
    names = ["chr1:3000000-3000500"]
    with pytest.raises(GenomeMismatchError, match="the genome argument"):
        align_features(_adata(names), bins, genome="GRCh38")
    with pytest.raises(GenomeMismatchError, match=r"adata.uns\['genome'\]"):
        align_features(_adata(names, uns={"genome": "hg38"}), bins)
    with pytest.raises(GenomeMismatchError, match=r"var\['genome'\] declares 'GRCh38'"):
        align_features(_adata(names, {"genome": ["GRCh38"]}), bins)
    ok = align_features(_adata(names, {"genome": ["GRCm38"]}, uns={"genome": "mm10"}), bins, genome="MM10")
    assert ok.report["query_features_used"] == 1  # aliases count as equal


def test_human_chromosomes_on_mouse_refused_but_stray_contig_is_not():
    bins = _bins_mm10_5kb()
    starts = np.arange(200) * 10_000
    names = [f"chr{1 + i % 19}:{s}-{s + 300}" for i, s in enumerate(starts)]
    stray = align_features(_adata([*names, "chr21:1000-1300"]), bins)
    assert stray.report["query_features_used"] == 200 and any("chr21" in w for w in stray.report["warnings"])
    human = names + [f"chr{20 + i % 3}:{s}-{s + 300}" for i, s in enumerate(starts[:30])]
    with pytest.raises(GenomeMismatchError, match=r"chromosomes that mm10 does not have \(chr20"):
        align_features(_adata(human), bins)


def test_coordinates_past_chromosome_ends_refused():
    bins = _bins_mm10_5kb()
    names = [f"chr1:{200_000_000 + i * 1000}-{200_000_500 + i * 1000}" for i in range(30)]
    names += [f"chr2:{1_000_000 + i * 1000}-{1_000_500 + i * 1000}" for i in range(30)]
    with pytest.raises(GenomeMismatchError, match="past the end"):
        align_features(_adata(names), bins)


def test_human_genes_on_mouse_model_refused():
    genes = gene_features("mm10", n_patches=64)
    with pytest.raises(GenomeMismatchError, match="case is ignored"):
        align_features(_adata(["CD4", "GAPDH", "ACTB", "SOX2", "Xkr4"]), genes)
    with pytest.raises(GenomeMismatchError, match="mouse Ensembl ids"):
        ids = {"gene_ids": ["ENSMUSG00000023274", "ENSMUSG00000057666"]}
        align_features(_adata(["Cd4", "Gapdh"], ids), gene_features("hg38", n_patches=8))


# --- real data ---------------------------------------------------------------------------------------------


@functools.cache
def _read_h5mu(path: str):
    import mudata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mudata.read_h5mu(path)


@pytest.mark.realdata
def test_snareseq_aligns_onto_mm10_bins_and_genes(snare_h5mu):
    mdata = _read_h5mu(str(snare_h5mu))
    atac = align_features(mdata["atac"], _bins_mm10_5kb())
    print(
        "SNARE atac -> mm10 5 kb bins:",
        {k: atac.report[k] for k in ("frac_query_used", "model_features_hit")},
    )
    assert atac.report["frac_query_used"] > 0.99 and atac.report["warnings"] == []
    assert atac.count_coverage(mdata["atac"].X) > 0.99
    X = atac.transform(mdata["atac"].X)
    assert X.shape == (mdata.n_obs, 545118) and X.sum() == pytest.approx(mdata["atac"].X.sum())
    rna = align_features(mdata["rna"], gene_features("mm10", n_patches=256))
    print(
        "SNARE rna -> mm10 gene table: found",
        rna.report["query_features_used"],
        "of",
        rna.report["query_features"],
    )
    assert rna.report["frac_query_used"] > 0.95 and rna.report["matched_by"]["symbol"] > 1600


@pytest.mark.realdata
def test_pbmc_multiome_is_refused_on_mouse_and_aligns_on_human(formats_dir):
    mdata = _read_h5mu(str(formats_dir / "pbmc10x_multiome_1k_subset.h5mu"))
    with pytest.raises(GenomeMismatchError, match="GRCh38"):
        align_features(mdata["atac"], _bins_mm10_5kb())
    rna = align_features(mdata["rna"], gene_features("hg38", n_patches=64))
    assert rna.report["matched_by"] == {"id": 45}
    atac = align_features(mdata["atac"], bin_features("hg38", bin_size=5000, n_patches=64))
    assert atac.report["frac_query_used"] == 1.0
