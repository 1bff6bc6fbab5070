"""Chromosome order and names, interval parsing, bundled tables, gene matching."""

from __future__ import annotations

import numpy as np
import pytest

from scclip.errors import GenomeMismatchError, ScclipError
from scclip.genome import (
    MATCH_CASEFOLD,
    MATCH_ID,
    MATCH_NONE,
    MATCH_SYMBOL,
    check_intervals_in_genome,
    chrom_sizes,
    chrom_sort_key,
    ensembl_species,
    gene_table,
    genome_alias,
    genome_order,
    infer_genome,
    match_genes,
    normalize_chrom,
    parse_interval,
    parse_intervals,
    strip_version,
)


def test_chrom_sort_key_natural_order_with_and_without_prefix():
    shuffled = ["chrUn_GL1", "chrM", "10", "chrY", "chr2", "X", "chr1", "chr22", "KI270728.1", "chr11"]
    assert sorted(shuffled, key=chrom_sort_key) == [
        "chr1", "chr2", "10", "chr11", "chr22", "X", "chrY", "chrM", "KI270728.1", "chrUn_GL1",
    ]  # fmt: skip
    assert chrom_sort_key("MT") == chrom_sort_key("chrM") == chrom_sort_key("chrMT")
    assert chrom_sort_key("1") == chrom_sort_key("chr1")
    assert chrom_sort_key("chr19") < chrom_sort_key("chrX") < chrom_sort_key("")


def test_normalize_chrom():
    assert [normalize_chrom(c) for c in ["1", "chr1", "MT", "chrMT", "x", "Y", "GL000194.1"]] == [
        "chr1", "chr1", "chrM", "chrM", "chrX", "chrY", "GL000194.1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name", ["chr1:100-200", "chr1-100-200", "chr1_100_200", "1:100-200", "chr1:1,00-2,00"]
)
def test_parse_interval_formats(name):
    assert parse_interval(name) == ("chr1", 100, 200)


def test_parse_interval_contig_with_underscores():
    assert parse_interval("chr1_KI270706v1_random:5-9") == ("chr1_KI270706v1_random", 5, 9)


def test_parse_intervals_vectorised_and_bad_names():
    chrom, start, end = parse_intervals(["chrX:5-10", "MT_1_3", "chr10-7-7"])
    assert chrom.tolist() == ["chrX", "chrM", "chr10"]
    assert start.dtype == np.int64 and start.tolist() == [5, 1, 7] and end.tolist() == [10, 3, 7]
    with pytest.raises(ScclipError, match="Gapdh"):
        parse_intervals(["chr1:1-2", "Gapdh", "chr2:9-3"])
    with pytest.raises(ScclipError, match="chr2:9-3"):  # end < start
        parse_intervals(["chr2:9-3"])
    chrom, start, end = parse_intervals(["chr1:1-2", "Gapdh"], errors="coerce")
    assert chrom.tolist() == ["chr1", ""] and start.tolist() == [1, 0]


def test_genome_alias():
    assert (
        genome_alias("GRCh38") == "hg38"
        and genome_alias("grcm38") == "mm10"
        and genome_alias("MM10") == "mm10"
    )
    assert genome_alias("GRCh38-2020-A") == "hg38"
    assert genome_alias("hg19") == "hg19"  # known (so it can be told apart), but not bundled
    assert genome_alias("GRCh38_and_mm10") is None and genome_alias("zebrafish") is None


def test_chrom_sizes_and_unknown_genome():
    sizes = chrom_sizes("GRCm38")
    assert sizes["chr1"] == 195471971 and list(sizes)[-3:] == ["chrX", "chrY", "chrM"] and len(sizes) == 22
    assert chrom_sizes("hg38")["chr22"] == 50818468
    with pytest.raises(ScclipError, match=r"mm10.*hg38"):
        chrom_sizes("dm6")
    with pytest.raises(ScclipError, match="unknown genome"):
        gene_table("hg19")


def test_gene_tables_are_genome_ordered():
    mm = gene_table("mm10")
    assert list(mm.columns) == ["gene_id", "gene_name", "chrom", "start", "end"]
    assert (mm["gene_id"] == "").all() and len(mm) == 32781
    assert "chrMT" not in set(mm["chrom"]) and (mm["chrom"] == "chrM").sum() == 37
    np.testing.assert_array_equal(genome_order(mm["chrom"], mm["start"]), np.arange(len(mm)))
    hg = gene_table("hg38")
    assert hg["gene_id"].str.startswith("ENSG").all()
    row = hg[hg["gene_name"] == "DDX11L1"].iloc[0]
    assert (row["chrom"], row["start"], row["end"]) == ("chr1", 11868, 14409)  # 0-based half-open
    assert (hg["end"] >= hg["start"]).all()
    mm.loc[0, "gene_name"] = "changed"  # callers get a copy
    assert gene_table("mm10").loc[0, "gene_name"] != "changed"


def test_genome_order_is_stable():
    chrom = np.array(["chr10", "chr2", "chrX", "chr2", "chr2", "chr1"])
    start = np.array([5, 9, 1, 3, 3, 7])
    assert genome_order(chrom, start).tolist() == [5, 3, 4, 1, 0, 2]


def test_infer_genome():
    assert infer_genome(["chr1"] * 50 + ["chr21"] * 20) == "hg38"
    # chr19 coordinates past hg38's chr19 end (58.6 Mb) but inside mm10's (61.4 Mb)
    assert infer_genome(["chr19"] * 20, ends=[60_000_000] * 20) == "mm10"
    assert infer_genome(["chr1"] * 20) is None
    assert infer_genome(gene_names=["Gapdh", "Actb", "Cd4", "Sox2", "Pax6", "Olig2"]) == "mm10"
    assert infer_genome(gene_names=["GAPDH", "ACTB", "CD4", "SOX2", "PAX6", "OLIG2"]) == "hg38"
    assert infer_genome(gene_names=["foo", "bar"]) is None


def test_check_intervals_in_genome_stray_contig_is_a_warning():
    chrom = np.array(["chr1"] * 200 + ["chr20"])
    start = np.arange(201) * 1000
    warnings = check_intervals_in_genome(chrom, start, start + 100, "mm10")
    assert any("chr20" in w for w in warnings)
    with pytest.raises(GenomeMismatchError, match="chr20"):
        check_intervals_in_genome(
            np.array(["chr1"] * 100 + ["chr20"] * 20), start[:120], start[:120] + 1, "mm10"
        )


def test_match_genes_id_then_symbol_then_casefold():
    ref_ids = np.array([f"ENSG0000000000{i}" for i in range(1, 6)])
    ref_sym = np.array(["TP53", "CD4", "GAPDH", "CD4", "XIST"])
    q_ids = np.array(["ENSG00000000003.7", "", "ENSG00000000009", "", "ENSG00000000008"])
    q_sym = np.array(["whatever", "CD4", "Xist", "nothing", "ACTB"])
    idx, how = match_genes(q_ids, q_sym, ref_ids, ref_sym)
    assert idx.tolist() == [2, 1, 4, -1, -1]  # duplicated CD4 -> first occurrence
    assert how.tolist() == [MATCH_ID, MATCH_SYMBOL, MATCH_CASEFOLD, MATCH_NONE, MATCH_NONE]
    idx, how = match_genes(None, q_sym, None, ref_sym)  # no ids on one side: symbols only
    assert idx.tolist() == [-1, 1, 4, -1, -1]


def test_ensembl_helpers():
    assert strip_version(["ENSMUSG00000000001.4", "ENSG00000141510", "Gapdh.2"]).tolist() == [
        "ENSMUSG00000000001", "ENSG00000141510", "Gapdh.2",
    ]  # fmt: skip
    assert ensembl_species(["ENSMUSG00000000001", "ENSMUSG00000000002", "ENSG00000141510"]) == ("mouse", 2)
    assert ensembl_species(["Gapdh"]) == (None, 0)


@pytest.mark.realdata
def test_build_script_reproduces_bundled_tables(annotations_dir, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "build_reference_tables.py"
    spec = importlib.util.spec_from_file_location("build_reference_tables", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--annotations", str(annotations_dir), "--out", str(tmp_path)]) == 0
    bundled = script.parents[1] / "scclip" / "data"
    for name in ["mm10_genes.tsv.gz", "hg38_genes.tsv.gz", "mm10_chrom_sizes.tsv", "hg38_chrom_sizes.tsv"]:
        assert (tmp_path / name).read_bytes() == (bundled / name).read_bytes(), name
