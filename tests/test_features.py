"""Feature spaces: patch layouts, own / gene / bin features, save and load."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from scclip.errors import GenomeMismatchError, ScclipError
from scclip.features import (
    FeatureSpace,
    ModalityFeatures,
    bin_features,
    features_from_anndata,
    gene_features,
    make_feature_space,
    patch_layout,
)
from scclip.genome import chrom_sizes


def _adata(var_names, var=None, uns=None) -> ad.AnnData:
    var = pd.DataFrame(var or {}, index=pd.Index(list(var_names)))
    X = sparse.random(3, len(var_names), density=0.5, format="csr", random_state=0, dtype=np.float32)
    return ad.AnnData(X=X, var=var, uns=uns or {})


def test_patch_layout_paper_pad_and_reshape():
    chrom = np.array(["chr1"] * 10)
    patch, offset, n_patches, patch_size = patch_layout(chrom, n_patches=4)
    assert (n_patches, patch_size) == (4, 3)  # ceil(10 / 4) = 3: patches of 3, 3, 3, 1
    assert patch.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3] and offset.tolist() == [0, 1, 2] * 3 + [0]
    patch, _, n_patches, patch_size = patch_layout(chrom, n_patches=7)
    assert (n_patches, patch_size) == (7, 2) and patch.max() == 4  # trailing patches stay empty
    _, _, n_patches, patch_size = patch_layout(chrom, patch_size=4)
    assert (n_patches, patch_size) == (3, 4)


def test_patch_layout_within_chromosome():
    chrom = np.array(["chr1"] * 5 + ["chr2"] * 3 + [""] * 2)
    patch, offset, n_patches, patch_size = patch_layout(chrom, patch_size=2, within_chromosome=True)
    assert patch.tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 5, 5] and offset.tolist() == [
        0,
        1,
        0,
        1,
        0,
        0,
        1,
        0,
        0,
        1,
    ]
    assert (n_patches, patch_size) == (6, 2)
    assert patch_layout(chrom, n_patches=6, within_chromosome=True)[2:] == (6, 2)
    assert patch_layout(chrom, n_patches=5, within_chromosome=True)[2:] == (
        4,
        3,
    )  # <= 5, as close as possible
    with pytest.raises(ScclipError, match="fewer than the 3 chromosomes"):
        patch_layout(chrom, n_patches=2, within_chromosome=True)


def test_patch_layout_within_chromosome_never_spans_two():
    rng = np.random.default_rng(0)
    chrom = np.repeat([f"chr{i}" for i in range(1, 8)], rng.integers(1, 40, size=7))
    for n_patches in (7, 10, 33, 100):
        patch, offset, got, size = patch_layout(chrom, n_patches=n_patches, within_chromosome=True)
        assert got <= n_patches and np.all(np.diff(patch) >= 0) and offset.max() < size
        per_patch = pd.Series(chrom).groupby(patch).nunique()
        assert (per_patch == 1).all()
        if size > 1:  # one size smaller would exceed the budget
            assert patch_layout(chrom, patch_size=size - 1, within_chromosome=True)[2] > n_patches


def test_patch_layout_needs_exactly_one_option():
    with pytest.raises(ScclipError, match="exactly one"):
        patch_layout(np.array(["chr1"]), n_patches=2, patch_size=2)
    with pytest.raises(ScclipError, match="exactly one"):
        patch_layout(np.array(["chr1"]))


def test_atac_features_sorted_in_natural_order():
    names = ["chr10:50-60", "chrX-1-9", "chr2_300_400", "chr2:100-200", "chr1:5-6"]
    feats, report = features_from_anndata(_adata(names), modality="atac", n_patches=2)
    assert feats.names.tolist() == ["chr1:5-6", "chr2:100-200", "chr2_300_400", "chr10:50-60", "chrX-1-9"]
    assert feats.chrom.tolist() == ["chr1", "chr2", "chr2", "chr10", "chrX"]
    assert feats.start.tolist() == [5, 100, 300, 50, 1] and feats.kind == "own"
    assert feats.patch.tolist() == [0, 0, 0, 1, 1] and feats.patch_size == 3
    assert report["n_features"] == report["with_coordinates"] == 5 and report["coordinate_source"] == {
        "var_names": 5
    }


def test_atac_features_from_var_columns_and_10x_interval():
    var = {"chr": ["1", "MT"], "chromStart": [10, 3], "chromEnd": [20, 9]}
    feats, report = features_from_anndata(_adata(["p1", "p2"], var), modality="atac", patch_size=1)
    assert feats.chrom.tolist() == ["chr1", "chrM"] and feats.names.tolist() == ["p1", "p2"]
    assert "chromStart" in next(iter(report["coordinate_source"]))
    var = {"interval": ["chr3:7-8", "chr1:1-2"]}
    feats, _ = features_from_anndata(_adata(["a", "b"], var), modality="atac", patch_size=1)
    assert feats.names.tolist() == ["b", "a"] and feats.end.tolist() == [2, 8]


def test_atac_features_refuse_bad_names_and_duplicates():
    with pytest.raises(ScclipError, match="Gapdh"):
        features_from_anndata(_adata(["chr1:1-5", "Gapdh"]), modality="atac", n_patches=1)
    adata = _adata(["chr1:1-5", "chr1:1-6"])
    adata.var_names = ["chr1:1-5", "chr1:1-5"]
    with pytest.raises(ScclipError, match="var_names_make_unique"):
        features_from_anndata(adata, modality="atac", n_patches=1)


def test_rna_features_from_gene_table_missing_genes_go_last():
    names = ["Gapdh", "NotAGene1", "Xkr4", "mt-Co1", "Sox2"]
    feats, report = features_from_anndata(_adata(names), modality="rna", genome="mm10", n_patches=2)
    assert feats.names.tolist() == ["Xkr4", "Sox2", "Gapdh", "mt-Co1", "NotAGene1"]
    assert feats.chrom.tolist() == ["chr1", "chr3", "chr6", "chrM", ""]
    assert report["with_coordinates"] == 4 and report["without_coordinates"] == 1
    assert report["missing_examples"] == ["NotAGene1"] and report["genome"] == "mm10"
    assert report["coordinate_source"] == {"mm10 table by symbol": 4}
    # the genome is inferred from the symbols when not given
    assert features_from_anndata(_adata(names), modality="rna", n_patches=2)[1]["genome"] == "mm10"


def test_rna_features_by_id_then_symbol_casefold():
    # TP53 by its Ensembl id although the symbol is wrong; GAPDH by symbol; 'actb' only case-insensitively
    var = {"gene_ids": ["ENSG00000141510.17", "", ""]}
    feats, report = features_from_anndata(
        _adata(["wrong_symbol", "GAPDH", "actb"], var), modality="rna", genome="GRCh38", n_patches=1
    )
    assert report["coordinate_source"] == {
        "hg38 table by id": 1,
        "hg38 table by symbol": 1,
        "hg38 table by symbol_casefold": 1,
    }
    assert dict(zip(feats.names, feats.chrom, strict=True)) == {
        "wrong_symbol": "chr17",
        "GAPDH": "chr12",
        "actb": "chr7",
    }
    assert feats.ids is not None and feats.genome == "hg38"


def test_rna_features_wrong_species_and_no_genome():
    human = ["GAPDH", "ACTB", "CD4", "SOX2", "PAX6"]
    with pytest.raises(GenomeMismatchError, match="case is ignored"):
        features_from_anndata(_adata(human), modality="rna", genome="mm10", n_patches=1)
    with pytest.raises(GenomeMismatchError, match="declares 'GRCh38'"):
        features_from_anndata(
            _adata(human, uns={"genome": "GRCh38"}), modality="rna", genome="mm10", n_patches=1
        )
    with pytest.raises(ScclipError, match="pass genome="):
        features_from_anndata(_adata(["foo", "bar"]), modality="rna", n_patches=1)


def test_rna_features_from_10x_interval():
    var = {
        "interval": ["chr2:50-90", "NA", "chr1:5-9"],
        "gene_ids": ["ENSG00000000001", "ENSG00000000002", "x"],
    }
    feats, report = features_from_anndata(
        _adata(["B", "NOPE", "A"], var), modality="rna", genome="hg38", n_patches=1
    )
    assert feats.names.tolist() == ["A", "B", "NOPE"] and feats.chrom.tolist() == ["chr1", "chr2", ""]
    assert report["coordinate_source"] == {"var['interval']": 2} and report["without_coordinates"] == 1


def test_gene_features():
    mm = gene_features("mm10", n_patches=100)
    assert mm.kind == "genes" and mm.n_features == 32781 and mm.ids is None and mm.n_patches == 100
    hg = gene_features("GRCh38", patch_size=64, within_chromosome=True)
    assert hg.genome == "hg38" and hg.ids is not None and hg.ids[0].startswith("ENSG")
    assert (pd.Series(hg.chrom).groupby(hg.patch).nunique() == 1).all()


def test_bin_features_mm10_exact():
    bins = bin_features("mm10", bin_size=5000, n_patches=256)
    sizes = chrom_sizes("mm10")
    assert bins.n_features == sum(-(-n // 5000) for n in sizes.values()) == 545118
    assert bins.names[:2].tolist() == ["chr1:0-5000", "chr1:5000-10000"] and bins.kind == "bins"
    last_chr1 = np.flatnonzero(bins.chrom == "chr1")[-1]
    assert bins.end[last_chr1] == sizes["chr1"] and bins.names[last_chr1] == f"chr1:195470000-{sizes['chr1']}"
    assert bins.names[last_chr1 + 1] == "chr2:0-5000"
    assert np.all(bins.end - bins.start <= 5000) and bins.n_patches == 256


def test_bin_features_chromosome_subset_and_bad_options():
    bins = bin_features("mm10", bin_size=1_000_000, chromosomes=["chrX", "2", "chr1"], patch_size=10)
    assert list(pd.unique(bins.chrom)) == ["chr1", "chr2", "chrX"]
    with pytest.raises(ScclipError, match="chr20"):
        bin_features("mm10", bin_size=5000, chromosomes=["chr20"], n_patches=4)
    with pytest.raises(ScclipError, match="bin_size"):
        bin_features("mm10", bin_size=0, n_patches=4)


def test_frame_round_trip():
    feats, _ = features_from_anndata(
        _adata(["Gapdh", "Unknown1", "Xkr4"]),
        modality="rna",
        genome="mm10",
        n_patches=3,
        within_chromosome=True,
    )
    back = ModalityFeatures.from_frame(feats.to_frame(), modality="rna", **feats.spec())
    for attr in ("names", "chrom", "start", "end", "patch", "offset"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(feats, attr))
    assert (back.n_patches, back.patch_size, back.within_chromosome) == (
        feats.n_patches,
        feats.patch_size,
        True,
    )


def test_feature_space_save_load_round_trip(tmp_path):
    rna = _adata(["Gapdh", "Sox2", "Xkr4", "Pax6"])
    fs, reports = make_feature_space(
        rna=rna, genome="GRCm38", atac_kind="bins", bin_size=100_000, n_patches=50
    )
    assert (
        fs.genome == "mm10" and fs.modalities == ["rna", "atac"] and reports["rna"]["with_coordinates"] == 4
    )
    spec = fs.save(tmp_path)
    text = json.dumps(spec)  # JSON-safe, and without the per-feature arrays
    assert len(text) < 5000 and spec["modalities"]["atac"]["bin_size"] == 100_000
    assert spec["chrom_sizes"]["chr1"] == 195471971
    assert (tmp_path / "features_rna.tsv.gz").exists() and not (tmp_path / "features_atac.tsv.gz").exists()
    back = FeatureSpace.load(tmp_path, json.loads(text))
    for m in ("rna", "atac"):
        for attr in ("names", "chrom", "start", "end", "patch", "offset"):
            np.testing.assert_array_equal(getattr(back[m], attr), getattr(fs[m], attr))
        assert (back[m].n_patches, back[m].patch_size, back[m].kind) == (
            fs[m].n_patches,
            fs[m].patch_size,
            fs[m].kind,
        )
    with pytest.raises(ScclipError, match="no 'atac'"):
        FeatureSpace("mm10", rna=fs["rna"])["atac"]


def test_make_feature_space_needs_genome_for_bins():
    with pytest.raises(ScclipError, match="genome"):
        make_feature_space(atac_kind="bins", n_patches=4)


def test_restrict_to_observed_keeps_order_and_relayouts(tmp_path):
    from scclip.features import FeatureSpace, restrict_to_observed

    bins = bin_features("mm10", bin_size=50_000, chromosomes=["chr19", "chr2"], n_patches=8)
    hit = np.zeros(bins.n_features, dtype=bool)
    hit[[3, 10, 11, 2000, bins.n_features - 1]] = True
    kept = restrict_to_observed(bins, hit)
    assert kept.names.tolist() == bins.names[hit].tolist() and kept.observed_only
    assert kept.n_features == 5 and kept.patch.max() < kept.n_patches <= 8
    space = FeatureSpace("mm10", atac=kept)
    spec = space.save(tmp_path)
    assert (tmp_path / "features_atac.tsv.gz").exists()  # a subset cannot be rebuilt from the spec alone
    again = FeatureSpace.load(tmp_path, spec)["atac"]
    assert again.names.tolist() == kept.names.tolist() and again.observed_only
    with pytest.raises(ScclipError, match="no atac reference feature"):
        restrict_to_observed(bins, np.zeros(bins.n_features, dtype=bool))
