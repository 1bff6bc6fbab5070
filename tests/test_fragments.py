"""Fragment -> interval cut-site counting (scclip.fragments): exact handmade counts and the real 10x PBMC file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from scclip.errors import ScclipError
from scclip.fragments import count_fragments, covered_by_fragments
from scclip.io import read

# chrom, start, end, barcode, count (PCR duplicates: ignored)
FRAGMENTS = """# id=handmade
# pipeline=none
chr1\t10\t20\tA\t1
chr1\t15\t40\tB\t3
chr1\t5\t100\tA\t1
chr2\t50\t60\tA\t2
chr1\t30\t31\tC\t1
chrZ\t1\t5\tA\t1
"""
# [10, 20) and [0, 16) overlap; given out of order on purpose
CHROM, START, END = ["chr1", "chr1", "chr2", "chr1"], [10, 0, 55, 30], [20, 16, 70, 35]
# cut sites (start, end - 1): A: 10,19 | 5,99 | chr2 50,59 ; B: 15,39 ; C: 30,30
EXPECTED = {"A": [2, 2, 1, 0], "B": [1, 1, 0, 0], "C": [0, 0, 0, 2]}


@pytest.fixture
def fragments_file(tmp_path):
    path = tmp_path / "fragments.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write(FRAGMENTS)
    return path


@pytest.mark.parametrize("chunksize", [1, 2, 1000])
def test_exact_cut_site_counts(fragments_file, chunksize):
    adata = count_fragments(fragments_file, CHROM, START, END, chunksize=chunksize)
    assert adata.obs_names.tolist() == ["A", "B", "C"]
    assert adata.var_names.tolist() == ["chr1:10-20", "chr1:0-16", "chr2:55-70", "chr1:30-35"]
    np.testing.assert_array_equal(adata.X.toarray(), np.array(list(EXPECTED.values())))
    assert adata.X.dtype == np.float32 and adata.X.format == "csr"
    assert adata.obs["n_fragments"].tolist() == [4, 1, 1]
    assert adata.obs["n_counts"].tolist() == [5, 2, 2]


def test_barcodes_order_missing_cells_and_min_count(fragments_file):
    adata = count_fragments(
        fragments_file, CHROM, START, END, barcodes=["C", "Q", "A"], feature_names=list("wxyz")
    )
    assert adata.obs_names.tolist() == ["C", "Q", "A"] and adata.var_names.tolist() == list("wxyz")
    np.testing.assert_array_equal(adata.X.toarray(), [EXPECTED["C"], [0, 0, 0, 0], EXPECTED["A"]])
    kept = count_fragments(fragments_file, CHROM, START, END, min_count=2)
    assert kept.obs_names.tolist() == ["A"]


def test_fragment_spanning_an_interval_counts_zero(tmp_path):
    path = tmp_path / "f.tsv"
    path.write_text("chr1\t0\t1000\tA\t1\nchr1\t99\t200\tA\t1\n")
    adata = count_fragments(path, ["chr1"], [100], [200])
    assert adata.X.toarray().tolist() == [[1.0]]  # only the cut at 199 is inside; 99 is just before


def test_bad_inputs(fragments_file, tmp_path):
    with pytest.raises(ScclipError, match="does not exist"):
        count_fragments(tmp_path / "nope.tsv.gz", CHROM, START, END)
    with pytest.raises(ScclipError, match="No chromosome"):  # ('1' and 'chr1' are one chromosome: they match)
        count_fragments(fragments_file, ["chrUn_KI270302v1"], [0], [10])
    with pytest.raises(ScclipError, match="invalid"):
        count_fragments(fragments_file, ["chr1"], [10], [10])
    with pytest.raises(ScclipError, match="unique"):
        count_fragments(fragments_file, CHROM[:2], START[:2], END[:2], feature_names=["p", "p"])
    (tmp_path / "bad.tsv").write_text("chr1\tten\t20\tA\t1\n")
    with pytest.raises(ScclipError, match="10x fragments file"):
        count_fragments(tmp_path / "bad.tsv", CHROM, START, END)


@pytest.mark.realdata
def test_agrees_with_cell_ranger_peak_matrix(formats_dir):
    """Counts from the fragments equal the Cell Ranger peak matrix for peaks inside the covered windows."""
    atac = read(formats_dir / "pbmc10x_multiome_1k_subset.h5mu")["atac"]
    path = formats_dir / "pbmc10x_multiome_1k_subset_fragments.tsv.gz"
    iv = atac.var_names.str.extract(r"^(.+):(\d+)-(\d+)$")
    start, end = iv[1].astype(int).to_numpy(), iv[2].astype(int).to_numpy()
    adata = count_fragments(path, iv[0], start, end, barcodes=atac.obs_names, feature_names=atac.var_names)
    assert adata.obs_names.equals(atac.obs_names) and adata.var_names.equals(atac.var_names)

    # The file covers windows around 45 genes: a peak is covered when no 3 kb gap in fragments touches it.
    covered = covered_by_fragments(path, iv[0], start, end)
    assert covered.sum() >= 100  # 125 of the 174 peaks

    ours, ranger = adata.X[:, covered].toarray(), atac.X[:, covered].toarray()
    assert (ours == ranger).mean() > 0.999
    assert np.corrcoef(ours.ravel(), ranger.ravel())[0, 1] > 0.99
    assert ours.sum() == pytest.approx(ranger.sum(), rel=0.01)


def test_atac_from_fragments_counts_onto_model_features(tmp_path):
    import gzip

    from scclip.features import bin_features
    from scclip.fragments import atac_from_fragments

    bins = bin_features("mm10", bin_size=100_000, chromosomes=["chr19"], n_patches=4)
    lines = ["chr19\t150\t250\tA-1\t1", "chr19\t100050\t100300\tA-1\t1", "chr19\t100010\t100020\tB-1\t1"]
    path = tmp_path / "f.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    ad_ = atac_from_fragments(path, bins, barcodes=["B-1", "A-1", "C-1"])
    assert list(ad_.obs_names) == ["B-1", "A-1", "C-1"] and list(ad_.var_names[:2]) == list(bins.names[:2])
    X = ad_.X.toarray()
    assert X[1, 0] == 2 and X[1, 1] == 2 and X[0, 1] == 2 and X[2].sum() == 0  # two cut sites per fragment
    assert ad_.uns["genome"] == "mm10"
    kept = atac_from_fragments(path, bins, min_count=2)  # A-1 has 2 fragments, B-1 one
    assert list(kept.obs_names) == ["A-1"]
    with pytest.raises(ScclipError, match="no cell"):
        atac_from_fragments(path, bins, min_count=10)


def test_covered_by_fragments_finds_the_windows(tmp_path):
    import gzip

    lines = [f"chr1\t{p}\t{p + 50}\tA\t1" for p in (1000, 2000, 3500, 20000, 21000)]
    path = tmp_path / "f.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("# header\n" + "\n".join(lines) + "\n")
    got = covered_by_fragments(
        path,
        ["chr1", "chr1", "chr1", "chr1", "chr2"],
        [1100, 3000, 19000, 20100, 1100],
        [1500, 3400, 20500, 20900, 1500],
    )
    # inside window 1000-3500; inside it too; starts before window 2; inside window 20000-21000; other chromosome
    assert got.tolist() == [True, True, False, True, False]
    assert covered_by_fragments(path, ["chr1"], [1100], [3400], max_gap=1000).tolist() == [False]
