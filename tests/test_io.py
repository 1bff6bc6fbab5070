"""Reading user files into MuData (scclip.io): handmade files in every format, errors, and the real samples."""

from __future__ import annotations

import gzip
import io as stdio
import tarfile

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scclip import io
from scclip.errors import ScclipError

PEAKS = ["chr1:100-200", "chr1_300_400", "chr2-50-90", "chrX:10-20"]
GENES = ["CD3E", "MS4A1", "HLA-A", "MT-CO1"]


def _counts(n_obs: int, n_vars: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(1.0, (n_obs, n_vars)).astype(np.float32))


def _adata(names, cells=("a", "b", "c"), seed=0) -> ad.AnnData:
    obs = pd.DataFrame({"sample": ["s1"] * len(cells)}, index=list(cells))
    return ad.AnnData(_counts(len(cells), len(names), seed), obs=obs, var=pd.DataFrame(index=names))


def _mudata(mods: dict) -> md.MuData:
    with md.set_options(pull_on_update=False):
        return md.MuData(mods)


def write_10x_h5(path, X, barcodes, ids, names, types, intervals, *, genome="GRCh38"):
    """A minimal Cell Ranger ARC filtered_feature_bc_matrix.h5 (features x barcodes, CSC) of cells x features
    ``X``; also used by tests/test_browser_views.py."""
    csc = sp.csc_matrix(X.T.astype(np.int32))
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array(barcodes, dtype="S")
        g["data"], g["indices"], g["indptr"] = csc.data, csc.indices, csc.indptr
        g["shape"] = np.array(csc.shape, dtype=np.int32)
        feats = g.create_group("features")
        feats["id"], feats["name"] = np.array(ids, dtype="S"), np.array(names, dtype="S")
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array([genome] * len(ids), dtype="S")
        feats["interval"] = np.array(intervals, dtype="S")
        feats["_all_tag_keys"] = np.array(["genome", "interval"], dtype="S")


def _write_mtx(folder, X, barcodes, feature_rows, *, gz=True):
    folder.mkdir(parents=True)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    coo = sp.coo_matrix(X.T)
    lines = ["%%MatrixMarket matrix coordinate integer general", f"{coo.shape[0]} {coo.shape[1]} {coo.nnz}"]
    lines += [f"{i + 1} {j + 1} {int(v)}" for i, j, v in zip(coo.row, coo.col, coo.data, strict=True)]
    with opener(folder / f"matrix.mtx{suffix}", "wt") as f:
        f.write("\n".join(lines) + "\n")
    with opener(folder / f"features.tsv{suffix}", "wt") as f:
        f.write("\n".join("\t".join(map(str, r)) for r in feature_rows) + "\n")
    with opener(folder / f"barcodes.tsv{suffix}", "wt") as f:
        f.write("\n".join(barcodes) + "\n")


# ------------------------------------------------------------------------------------------ h5ad / h5mu
def test_h5ad_modality_inferred_from_feature_names(tmp_path):
    _adata(PEAKS).write_h5ad(tmp_path / "p.h5ad")
    _adata(GENES).write_h5ad(tmp_path / "g.h5ad")
    peaks, genes = io.read(tmp_path / "p.h5ad"), io.read(tmp_path / "g.h5ad")
    assert list(peaks.mod) == ["atac"] and list(genes.mod) == ["rna"]
    assert any("inferred modality atac" in n for n in peaks.uns["scclip_read"]["notes"])
    X = genes["rna"].X
    assert sp.isspmatrix_csr(X) and X.dtype == np.float32
    np.testing.assert_array_equal(X.toarray(), _counts(3, 4).toarray())
    assert genes["rna"].obs["sample"].tolist() == ["s1"] * 3


def test_h5ad_ambiguous_and_swapped_files_are_errors(tmp_path):
    _adata(PEAKS[:2] + GENES[:2]).write_h5ad(tmp_path / "mixed.h5ad")
    with pytest.raises(ScclipError, match="modality='rna' or 'atac'"):
        io.read(tmp_path / "mixed.h5ad")
    assert list(io.read(tmp_path / "mixed.h5ad", modality="ATAC").mod) == ["atac"]
    _adata(PEAKS).write_h5ad(tmp_path / "p.h5ad")
    with pytest.raises(ScclipError, match="swapped"):
        io.read(tmp_path / "p.h5ad", modality="rna")
    with pytest.raises(ScclipError, match="Unknown modality"):
        io.read(tmp_path / "p.h5ad", modality="protein")


def test_h5ad_uses_count_layer_when_x_is_normalised(tmp_path):
    adata = _adata(GENES)
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.37
    adata.write_h5ad(tmp_path / "n.h5ad")
    mdata = io.read(tmp_path / "n.h5ad")
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), _counts(3, 4).toarray())
    assert any("layers['counts']" in n for n in mdata.uns["scclip_read"]["notes"])


def test_h5mu_aliases_and_global_obs(tmp_path):
    mdata = _mudata({"gex": _adata(GENES), "Peaks": _adata(PEAKS, seed=1)})
    mdata.obs["cell_type"] = ["T", "B", "T"]
    io.write_h5mu(mdata, tmp_path / "x.h5mu")
    out = io.read(tmp_path / "x.h5mu")
    assert list(out.mod) == ["rna", "atac"]
    assert out.uns["scclip_read"]["modalities"] == {"rna": "gex", "atac": "Peaks"}
    assert out["atac"].obs["cell_type"].tolist() == ["T", "B", "T"]
    np.testing.assert_array_equal(out["atac"].X.toarray(), _counts(3, 4, 1).toarray())
    assert list(io.read(tmp_path / "x.h5mu", modality="atac").mod) == ["atac"]


def test_h5mu_two_rna_modalities_is_error(tmp_path):
    io.write_h5mu(_mudata({"rna": _adata(GENES), "gex": _adata(GENES)}), tmp_path / "x.h5mu")
    with pytest.raises(ScclipError, match="two rna modalities"):
        io.read(tmp_path / "x.h5mu")


# ------------------------------------------------------------------------------------------ 10x formats
def test_10x_h5_is_split_by_feature_type(tmp_path):
    X = _counts(3, 4, 2)
    ids = ["ENSG1", "ENSG2", "chr1:100-200", "chr2:5-50"]
    names = ["GENE1", "GENE2", *ids[2:]]
    types = ["Gene Expression"] * 2 + ["Peaks"] * 2
    intervals = ["chr1:1-50", "chr3:5-9", *ids[2:]]
    write_10x_h5(tmp_path / "f.h5", X, ["b1-1", "b2-1", "b3-1"], ids, names, types, intervals)
    mdata = io.read(tmp_path / "f.h5")
    rna, atac = mdata["rna"], mdata["atac"]
    assert sp.isspmatrix_csr(rna.X) and rna.X.dtype == np.float32
    np.testing.assert_array_equal(rna.X.toarray(), X.toarray()[:, :2])
    np.testing.assert_array_equal(atac.X.toarray(), X.toarray()[:, 2:])
    assert rna.var["gene_ids"].tolist() == ["ENSG1", "ENSG2"]
    assert rna.var["interval"].tolist() == ["chr1:1-50", "chr3:5-9"]
    assert atac.var_names.tolist() == ids[2:]
    assert rna.uns["genome"] == "GRCh38" and mdata.uns["genome"] == "GRCh38"
    assert io.pairing_report(mdata)["n_shared"] == 3
    assert list(io.read(tmp_path / "f.h5", modality="atac").mod) == ["atac"]
    write_10x_h5(
        tmp_path / "p.h5", X[:, 2:], ["b1-1", "b2-1", "b3-1"], ids[2:], names[2:], types[2:], ids[2:]
    )
    with pytest.raises(ScclipError, match="has no rna data"):
        io.read(tmp_path / "p.h5", modality="rna")


def test_mtx_folder_nested_and_tar(tmp_path):
    X = _counts(3, 2, 3)
    rows = [
        ("ENSG1", "GENE1", "Gene Expression", "chr1", 10, 50),
        ("chr1:5-9", "chr1:5-9", "Peaks", "chr1", 5, 9),
    ]
    folder = tmp_path / "sample" / "outs" / "filtered_feature_bc_matrix"
    _write_mtx(folder, X, ["b1", "b2", "b3"], rows)
    mdata = io.read(tmp_path / "sample")
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), X.toarray()[:, :1])
    assert mdata["atac"].var[["chrom", "start", "end"]].iloc[0].tolist() == ["chr1", 5, 9]
    assert mdata["rna"].var["interval"].tolist() == ["chr1:10-50"]
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "sample", arcname="./sample")
    from_tar = io.read(tmp_path / "s.tar.gz")
    np.testing.assert_array_equal(from_tar["atac"].X.toarray(), X.toarray()[:, 1:])
    assert from_tar.uns["scclip_read"]["format"] == "10x_mtx_tar"


def test_mtx_plain_genes_tsv(tmp_path):
    X = _counts(2, 2, 4)
    _write_mtx(tmp_path / "m", X, ["b1", "b2"], [("E1", "G1"), ("E2", "G2")], gz=False)
    (tmp_path / "m" / "features.tsv").rename(tmp_path / "m" / "genes.tsv")
    mdata = io.read(tmp_path / "m" / "matrix.mtx")
    assert mdata["rna"].var_names.tolist() == ["G1", "G2"]
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), X.toarray())


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_unsafe_tar_is_refused(tmp_path, kind):
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(
            {"parent": "../evil.txt", "absolute": "/tmp/evil.txt", "symlink": "link"}[kind]
        )
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, stdio.BytesIO(b"abc"))
    with pytest.raises(ScclipError, match="Refusing to extract"):
        io.read(tmp_path / "evil.tar.gz")
    assert not (tmp_path / "evil.txt").exists()


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ScclipError, match="does not exist"):
        io.read(tmp_path / "missing.h5ad")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ScclipError, match="not a valid HDF5"):
        io.read(tmp_path / "bad.h5")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ScclipError, match="Unknown format"):
        io.read(tmp_path / "x.csv")
    _adata(GENES).write_h5ad(tmp_path / "g.h5ad")
    data = (tmp_path / "g.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScclipError, match=r"cut\.h5ad"):
        io.read(tmp_path / "cut.h5ad")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["foo"] = np.arange(3)
    with pytest.raises(ScclipError, match="not a known single-cell layout"):
        io.read(tmp_path / "other.h5")


def test_duplicate_barcodes_and_empty_matrix(tmp_path):
    dup = _adata(GENES, cells=("a", "a", "b"))
    dup.write_h5ad(tmp_path / "dup.h5ad")
    with pytest.raises(ScclipError, match="not unique"):
        io.read(tmp_path / "dup.h5ad")
    _adata(GENES)[:0].copy().write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(ScclipError, match="empty"):
        io.read(tmp_path / "empty.h5ad")


# ------------------------------------------------------------------------------------------ pairing
def _unpaired_mdata(rna_cells, atac_cells) -> md.MuData:
    return _mudata({"rna": _adata(GENES, cells=rna_cells), "atac": _adata(PEAKS, cells=atac_cells, seed=5)})


def test_pairing_report_and_paired_cells():
    mdata = _unpaired_mdata(("a", "b", "c", "d"), ("c", "a", "e"))
    report = io.pairing_report(mdata)
    assert report["n_rna"] == 4 and report["n_atac"] == 3 and report["n_shared"] == 2 and report["paired"]
    assert report["fraction"] == pytest.approx(2 / 5)
    assert report["fraction_atac"] == pytest.approx(2 / 3)
    both = io.paired_cells(mdata)
    assert both["rna"].obs_names.tolist() == ["a", "c"] == both["atac"].obs_names.tolist()
    atac_x = _adata(PEAKS, cells=("c", "a", "e"), seed=5).X.toarray()
    np.testing.assert_array_equal(both["atac"].X.toarray(), atac_x[[1, 0]])


def test_paired_cells_without_shared_barcodes_is_error():
    with pytest.raises(ScclipError, match="No barcode is shared"):
        io.paired_cells(_unpaired_mdata(("a-1", "b-1"), ("c-1", "d-1")))
    with pytest.raises(ScclipError, match="suffix"):
        io.paired_cells(_unpaired_mdata(("a-1", "b-1"), ("a-2", "d-2")))


def test_read_pair_and_write_roundtrip(tmp_path):
    _adata(GENES, cells=("a", "b", "c")).write_h5ad(tmp_path / "rna.h5ad")
    _adata(PEAKS, cells=("b", "c", "d", "e"), seed=1).write_h5ad(tmp_path / "atac.h5ad")
    mdata, report = io.read_pair(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad")
    assert (mdata["rna"].n_obs, mdata["atac"].n_obs, report["n_shared"]) == (3, 4, 2)
    assert any("paired=True" in n for n in mdata.uns["scclip_read"]["notes"])
    paired, _ = io.read_pair(tmp_path / "rna.h5ad", tmp_path / "atac.h5ad", paired=True)
    assert paired["rna"].obs_names.tolist() == ["b", "c"] == paired["atac"].obs_names.tolist()
    back = io.read(io.write_h5mu(paired, tmp_path / "out" / "p.h5mu"))
    np.testing.assert_array_equal(back["atac"].X.toarray(), paired["atac"].X.toarray())


# ------------------------------------------------------------------------------------------ real files
@pytest.mark.realdata
def test_real_snareseq_h5mu(snare_h5mu):
    mdata = io.read(snare_h5mu)
    assert mdata["rna"].shape == (8685, 1677) and mdata["atac"].shape == (8685, 25734)
    for adata in mdata.mod.values():
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
        assert {"cell_type", "batch"} <= set(adata.obs.columns)
    assert {"chrom", "start", "end"} <= set(mdata["atac"].var.columns)
    report = io.pairing_report(mdata)
    assert report["paired"] and report["n_shared"] == 8685 and report["fraction"] == 1.0


@pytest.mark.realdata
def test_real_pbmc_multiome_h5mu(formats_dir):
    mdata = io.read(formats_dir / "pbmc10x_multiome_1k_subset.h5mu")
    assert mdata["rna"].shape == (1000, 45) and mdata["atac"].shape == (1000, 174)
    assert set(mdata["rna"].var["feature_types"]) == {"Gene Expression"}
    assert set(mdata["atac"].var["feature_types"]) == {"Peaks"}
    assert mdata["rna"].var["interval"].str.startswith("chr").all()
    assert mdata.uns["genome"] == "GRCh38"
    assert io.pairing_report(mdata)["n_shared"] == 1000


@pytest.mark.realdata
def test_real_10x_h5_and_mtx_tar(formats_dir):
    gex = io.read(formats_dir / "tenx_multiome_gex_10x10.h5")
    atac = io.read(formats_dir / "tenx_atac_10x10.h5")
    assert list(gex.mod) == ["rna"] and gex["rna"].shape == (10, 10)
    assert list(atac.mod) == ["atac"] and atac["atac"].shape == (10, 10)
    assert gex["rna"].var["gene_ids"].str.startswith("ENSG").all()
    assert atac["atac"].var_names.str.match(r"^chr\w+:\d+-\d+$").all()
    assert gex["rna"].X.nnz == 2 and atac["atac"].X.nnz == 1
    mtx = io.read(formats_dir / "tenx_mtx_10x10.tar.gz")
    assert mtx["rna"].shape == (10, 10)
    assert mtx["rna"].obs_names.tolist() == gex["rna"].obs_names.tolist()
    assert mtx["rna"].var["gene_ids"].tolist() == gex["rna"].var["gene_ids"].tolist()
    assert mtx["rna"].var["interval"].tolist() == gex["rna"].var["interval"].tolist()
    _, report = io.read_pair(formats_dir / "tenx_multiome_gex_10x10.h5", formats_dir / "tenx_atac_10x10.h5")
    assert (report["n_rna"], report["n_atac"], report["n_shared"], report["paired"]) == (10, 10, 0, False)
    with pytest.raises(ScclipError, match="No barcode is shared"):
        io.read_pair(
            formats_dir / "tenx_multiome_gex_10x10.h5", formats_dir / "tenx_atac_10x10.h5", paired=True
        )
