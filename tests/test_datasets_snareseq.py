"""The SNARE-seq loader: local upstream files, converted copies, sha256-checked downloads from a local mirror.

No test touches the network: downloads come from a ``file://`` mirror built in ``tmp_path`` or from a fake
``urlopen``.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scclip.datasets._snareseq as snare
from scclip.datasets import chen2019_snareseq, synthetic_multiome
from scclip.errors import ScclipError
from scclip.features import var_intervals
from scclip.genome import chrom_sizes

GENES = ["Rorb", "Gad1", "Sst", "Vip", "Mbp"]
# mm10 regions in upstream order (chromosomes in natural order, as in regions.txt)
REGIONS = [
    "chr1_4914570_4914685",
    "chr1_4917513_4917696",
    "chr2_3000000_3001000",
    "chr10_120000_120500",
    "chr19_61000000_61000400",
    "chrX_169299741_169299901",
]
IDENTS = [
    "E3Rorb",
    "E2Rasgrf2",
    "InS",
    "InV",
    "OliM",
    "Ast",
    "E6Tle4",
    "Mis",
    "InP",
    "E5Parm1",
    "OliI",
    "Mic",
]
COARSE = ["L2/3", "L2/3", "Sst", "CGE", "Oligo", "Astro", "L6", "Mis", "Pvalb", "L4/5", "Oligo", "MGC"]
BATCHES = ["09A"] * 5 + ["09B"] * 4 + ["09K"] * 3


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_upstream(folder: Path, *, remapped: bool = True, genes_header: bool = False) -> dict:
    """Tiny upstream files in scMoMaT's formats: features x cells save_npz, one name a line, meta CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = len(IDENTS)
    rna = rng.poisson(0.8, (len(GENES), n)).astype(np.float64)  # genes x cells
    atac = rng.poisson(0.5, (len(REGIONS), n)).astype(np.float64)  # regions x cells
    sp.save_npz(folder / "GxC1.npz", sp.csc_matrix(rna))
    sp.save_npz(folder / "RxC1.npz", sp.csr_matrix(atac))
    (folder / "genes.txt").write_text(("x\n" if genes_header else "") + "\n".join(GENES) + "\n")
    (folder / "regions.txt").write_text("\n".join(REGIONS) + "\n")
    barcodes = [f"ACGT{i:08d}" for i in range(n)]
    meta = pd.DataFrame(
        {"Batch": BATCHES, "Barcode": barcodes, "Ident": IDENTS},
        index=[f"{b}_{c}" for b, c in zip(BATCHES, barcodes, strict=True)],
    )
    if remapped:
        meta["cluster (remapped)"] = COARSE
    meta.to_csv(folder / "meta_c1.csv")
    return {"rna": rna, "atac": atac, "cells": list(meta.index)}


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A local mirror of the upstream folder, with the loader pointed at it (URL and sha256 values)."""
    folder = tmp_path / "mirror"
    truth = _write_upstream(folder)
    monkeypatch.setattr(snare, "SNARESEQ_BASE_URL", folder.as_uri() + "/")
    monkeypatch.setattr(snare, "SNARESEQ_FILES", {n: _sha(folder / n) for n in snare.SNARESEQ_FILES})
    monkeypatch.delenv(snare.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return folder, truth


def _check_layout(m, truth: dict) -> None:
    assert set(m.mod) == {"rna", "atac"}
    assert m["rna"].shape == (len(IDENTS), len(GENES)) and m["atac"].shape == (len(IDENTS), len(REGIONS))
    assert list(m.obs_names) == truth["cells"] and list(m["atac"].obs_names) == truth["cells"]
    np.testing.assert_array_equal(m["rna"].X.toarray(), truth["rna"].T)  # transposed to cells x features
    np.testing.assert_array_equal(m["atac"].X.toarray(), truth["atac"].T)
    for key in ("rna", "atac"):
        assert sp.isspmatrix_csr(m[key].X) and m[key].X.dtype == np.float32
        assert list(m[key].obs.columns) == ["cell_type", "cell_type_fine", "batch"]
        assert all(isinstance(m[key].obs[c].dtype, pd.CategoricalDtype) for c in m[key].obs)
        assert m[key].uns["genome"] == "mm10"
    assert m.uns["genome"] == "mm10"
    obs = m["rna"].obs
    assert list(obs["cell_type_fine"]) == IDENTS and list(obs["cell_type"]) == COARSE
    assert list(obs["batch"]) == BATCHES and list(m.obs["batch"]) == BATCHES
    assert list(m["rna"].var_names) == GENES
    atac = m["atac"]
    assert atac.var_names[0] == "chr1:4914570-4914685"
    assert list(atac.var.columns) == ["chrom", "start", "end"]
    chrom, start, end, _ = var_intervals(atac)
    sizes = chrom_sizes("mm10")
    assert all(c in sizes for c in chrom) and (end <= np.array([sizes[c] for c in chrom])).all()
    expected = [r.split("_") for r in REGIONS]
    assert [(c, int(s), int(e)) for c, s, e in expected] == list(zip(chrom, start, end, strict=True))
    assert list(atac.var["chrom"].cat.categories) == ["chr1", "chr2", "chr10", "chr19", "chrX"]


def test_converts_local_upstream_files_and_caches_the_result(mirror, tmp_path):
    folder, truth = mirror
    m = chen2019_snareseq(folder)
    _check_layout(m, truth)
    cached = folder / "chen2019_snareseq.h5mu"
    assert cached.is_file() and not list(folder.glob(".*part"))
    for name in snare.SNARESEQ_FILES:  # the cached copy is enough from now on
        (folder / name).unlink()
    _check_layout(chen2019_snareseq(folder), truth)
    _check_layout(chen2019_snareseq(cached), truth)  # a .h5mu file as data_dir


def test_data_dir_argument_then_env_var_then_default_cache_dir(mirror, tmp_path, monkeypatch):
    _, truth = mirror
    default = tmp_path / "home" / ".cache" / "scclip" / "datasets"
    assert snare.default_data_dir() == default
    _write_upstream(default)
    assert snare.resolve_data_dir(None) == (default, "default cache dir")
    _check_layout(chen2019_snareseq(), truth)
    env_dir = tmp_path / "env"
    _write_upstream(env_dir / snare.RAW_SUBDIR, remapped=False)  # the sub-folder download=True fills
    monkeypatch.setenv(snare.DATA_DIR_ENV, str(env_dir))
    assert snare.resolve_data_dir(None) == (env_dir, "$SCCLIP_DATA_DIR")
    _check_layout(chen2019_snareseq(cache=False), truth)  # coarse types derived from Ident
    assert not (env_dir / "chen2019_snareseq.h5mu").exists()
    with pytest.raises(ScclipError, match="data_dir argument"):
        chen2019_snareseq(tmp_path / "elsewhere")  # the argument wins over the env var


def test_tolerates_a_genes_header_and_cells_by_features_matrices(tmp_path):
    folder = tmp_path / "d"
    truth = _write_upstream(folder, genes_header=True)
    sp.save_npz(folder / "GxC1.npz", sp.csr_matrix(truth["rna"].T))  # already cells x genes
    np.savez(folder / "RxC1.npz", counts=truth["atac"])  # a dense array, not save_npz
    _check_layout(chen2019_snareseq(folder, cache=False), truth)


def test_mismatched_files_fail_clearly(tmp_path):
    folder = tmp_path / "d"
    _write_upstream(folder)
    (folder / "genes.txt").write_text("\n".join(GENES[:3]) + "\n")
    with pytest.raises(ScclipError, match=r"genes\.txt lists 3 names"):
        chen2019_snareseq(folder, cache=False)
    _write_upstream(folder)
    (folder / "regions.txt").write_text("\n".join(["peak1", *REGIONS[1:]]) + "\n")
    with pytest.raises(ScclipError, match="not genomic intervals"):
        chen2019_snareseq(folder, cache=False)


def test_batches_subset_the_libraries(mirror):
    folder, _ = mirror
    m = chen2019_snareseq(folder, batches=["09A", "09B"])
    assert m.n_obs == 9 and list(m["rna"].obs["batch"].cat.categories) == ["09A", "09B"]
    assert m["atac"].n_vars == len(REGIONS)  # features never depend on the subset
    assert chen2019_snareseq(folder, batches="09K").n_obs == 3
    with pytest.raises(ScclipError, match=r"unknown batches \['09Z'\].*09A"):
        chen2019_snareseq(folder, batches=["09A", "09Z"])


def test_download_from_a_mirror_verifies_and_leaves_no_partial_files(mirror, tmp_path):
    _, truth = mirror
    target = tmp_path / "cache"
    with pytest.raises(ScclipError, match="download=True"):
        chen2019_snareseq(target)  # nothing downloaded unless asked
    assert not target.exists()
    m = chen2019_snareseq(target, download=True)
    _check_layout(m, truth)
    raw = target / snare.RAW_SUBDIR
    assert sorted(p.name for p in raw.iterdir()) == sorted(snare.SNARESEQ_FILES)
    assert (target / "chen2019_snareseq.h5mu").is_file()
    assert not [p for p in target.rglob("*") if p.name.endswith(".part")]


def test_wrong_sha256_deletes_the_download(mirror, tmp_path, monkeypatch):
    hashes = dict(snare.SNARESEQ_FILES)
    hashes["RxC1.npz"] = "0" * 64
    monkeypatch.setattr(snare, "SNARESEQ_FILES", hashes)
    target = tmp_path / "cache"
    with pytest.raises(
        ScclipError, match=r"RxC1\.npz but its sha256 is [0-9a-f]{64}, not the expected 0{64}"
    ):
        chen2019_snareseq(target, download=True)
    raw = target / snare.RAW_SUBDIR
    assert not (raw / "RxC1.npz").exists()
    assert not [p for p in raw.iterdir() if p.name.endswith(".part")]
    assert (raw / "GxC1.npz").is_file()  # verified files are kept; a re-run fetches only what is missing


def test_a_file_with_a_wrong_hash_is_replaced_on_download(mirror, tmp_path):
    _, truth = mirror
    raw = tmp_path / "cache" / snare.RAW_SUBDIR
    raw.mkdir(parents=True)
    (raw / "genes.txt").write_text("stale\n")
    _check_layout(chen2019_snareseq(tmp_path / "cache", download=True), truth)
    assert (raw / "genes.txt").read_text().split() == GENES


def test_offline_download_fails_clearly(mirror, tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "cache"
    with pytest.raises(
        ScclipError, match=r"Could not download .*GxC1\.npz .*name resolution.*no partial file"
    ):
        chen2019_snareseq(target, download=True)
    assert not any(p.is_file() for p in target.rglob("*"))


def test_interrupted_download_leaves_nothing(mirror, tmp_path, monkeypatch):
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return b"x" * 100

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken())
    target = tmp_path / "cache"
    with pytest.raises(ScclipError, match="ConnectionResetError"):
        chen2019_snareseq(target, download=True)
    assert not any(p.is_file() for p in target.rglob("*"))


def test_absent_data_names_the_folder_env_var_and_download(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not touch the network"))
    monkeypatch.setenv(snare.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "genes.txt").write_text("Rorb\n")
    with pytest.raises(ScclipError) as info:
        chen2019_snareseq()
    text = str(info.value)
    for part in (str(tmp_path / "nowhere"), "$SCCLIP_DATA_DIR", "download=True", "lacks GxC1.npz"):
        assert part in text


def test_loads_a_dev_file_in_the_data_dir(tmp_path):
    m = synthetic_multiome(40, n_genes=30, seed=1)
    for key in ("rna", "atac"):
        m[key].obs["cell_type_fine"] = m[key].obs["cell_type"]
        m[key].obs = m[key].obs[["cell_type", "cell_type_fine", "batch"]]
    m.write_h5mu(tmp_path / "chen2019_snareseq_dev.h5mu")
    out = chen2019_snareseq(tmp_path, batches=["b2"])
    assert out.n_obs == int((m["rna"].obs["batch"] == "b2").sum()) and out.uns["genome"] == "mm10"
    (tmp_path / "other.h5mu").write_bytes(b"not hdf5")
    with pytest.raises(ScclipError, match="Could not read"):
        chen2019_snareseq(tmp_path / "other.h5mu")
    with pytest.raises(ScclipError, match="does not exist"):
        chen2019_snareseq(tmp_path / "missing.h5mu")


@pytest.mark.realdata
def test_shared_dev_file_loads_and_matches_a_conversion_of_its_upstream_form(snare_h5mu, tmp_path):
    m = chen2019_snareseq(snare_h5mu.parent)
    assert m["rna"].shape == (8685, 1677) and m["atac"].shape == (8685, 25734)
    assert list(m["rna"].obs.columns) == ["cell_type", "cell_type_fine", "batch"]
    assert m["rna"].obs["cell_type"].nunique() == 15 and m["rna"].obs["cell_type_fine"].nunique() == 23
    assert m.uns["genome"] == "mm10" and m["atac"].var_names[0] == "chr1:4914570-4914685"
    held_out = chen2019_snareseq(snare_h5mu, batches=["09I", "09J"])
    assert held_out.n_obs == 876 + 841

    # write the data back in the upstream formats and convert them: same layout, same numbers
    up = tmp_path / "upstream"
    up.mkdir()
    rna, atac, obs = m["rna"], m["atac"], m["rna"].obs
    sp.save_npz(up / "GxC1.npz", sp.csc_matrix(rna.X.T))
    sp.save_npz(up / "RxC1.npz", sp.csc_matrix(atac.X.T))
    (up / "genes.txt").write_text("\n".join(rna.var_names) + "\n")
    regions = [
        f"{c}_{s}_{e}" for c, s, e in zip(atac.var["chrom"], atac.var["start"], atac.var["end"], strict=True)
    ]
    (up / "regions.txt").write_text("\n".join(regions) + "\n")
    meta = pd.DataFrame(
        {
            "Batch": obs["batch"].astype(str),
            "Barcode": [s.split("_", 1)[1] for s in obs.index],
            "Ident": obs["cell_type_fine"].astype(str),
            "cluster (remapped)": obs["cell_type"].astype(str),
        },
        index=obs.index,
    )
    meta.to_csv(up / "meta_c1.csv")
    c = chen2019_snareseq(up, cache=False)
    assert list(c.obs_names) == list(m.obs_names)
    for key in ("rna", "atac"):
        assert list(c[key].var_names) == list(m[key].var_names)
        assert (c[key].X != m[key].X).nnz == 0
        pd.testing.assert_frame_equal(c[key].obs, m[key].obs)
    pd.testing.assert_frame_equal(c["atac"].var, m["atac"].var)
