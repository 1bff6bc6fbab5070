"""Files larger than memory: chunked reading (scclip.io.read_backed) and chunked embed / train (scclip.api) give
the in-memory results, read only one chunk of rows at a time, and refuse bad input clearly."""

from __future__ import annotations

import contextlib
import io
import json

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scclip
import scclip.io as stream
from scclip.cli import main
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.io import read, write_h5mu
from scclip.preprocess import ValueStats, diagnose

N = 300  # the cells of the session's tiny model (conftest: synthetic_multiome(300, seed=0))


@pytest.fixture(scope="module")
def model(tiny_pretrained):
    return scclip.load_pretrained(tiny_pretrained / "demo-tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("stream")
    mdata = synthetic_multiome(n_cells=N, seed=0)
    write_h5mu(mdata, d / "x.h5mu")
    mdata["rna"].write_h5ad(d / "rna.h5ad")
    mdata["atac"].write_h5ad(d / "atac.h5ad")
    (d / "table.csv").write_text("a,b\n1,2\n")
    return {"d": d, "x": d / "x.h5mu", "rna": d / "rna.h5ad", "atac": d / "atac.h5ad", "mdata": mdata}


def _same(a, b) -> bool:
    """Reports equal (arrays by value, floats to 1e-9)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float):
        return a == pytest.approx(b, rel=1e-9)
    return a == b


def _assert_same_embedding(got, want):
    assert sorted(got.mod) == sorted(want.mod)
    for m in want.mod:
        for key in ("X_scclip", "X_scclip_raw"):
            np.testing.assert_allclose(got[m].obsm[key], want[m].obsm[key], atol=1e-6, rtol=0)
        assert (got[m].obs_names == want[m].obs_names).all()
        assert got[m].obs.astype(str).equals(want[m].obs.astype(str))
        assert _same(got.uns["scclip"]["modalities"][m], want.uns["scclip"]["modalities"][m])
        assert got[m].n_vars == 0  # counts are never copied


class Recording:
    """A matrix that records the row keys it is read with."""

    def __init__(self, X):
        self.X, self.shape, self.keys = X, X.shape, []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.X[key]


# --------------------------------------------------------------------------------------------------- embed
def test_chunked_embed_of_a_file_equals_in_memory(model, files):
    want = scclip.embed(model, read(files["x"]), device="cpu")
    got = scclip.embed(model, files["x"], chunk_size=70, device="cpu")  # 5 chunks, the last one short
    _assert_same_embedding(got, want)
    assert got.uns["scclip"]["chunk_size"] == 70 and "chunk_size" not in want.uns["scclip"]
    assert got.uns["scclip"]["gap"]["closed"] and got.uns["scclip"]["paired"]


def test_backed_anndata_and_mudata_take_the_chunked_path(model, files):
    want = scclip.embed(model, read(files["x"]), device="cpu")
    backed = md.read_h5mu(files["x"], backed=True)
    got = scclip.embed(model, backed, device="cpu")
    assert got.uns["scclip"]["chunk_size"] == stream.DEFAULT_CHUNK_SIZE
    _assert_same_embedding(got, want)
    atac = ad.read_h5ad(files["atac"], backed="r")
    one = scclip.embed(model, atac, chunk_size=128, device="cpu")
    alone = scclip.embed(model, read(files["atac"]), device="cpu")
    assert list(one.mod) == ["atac"] and not one.uns["scclip"]["gap"]["closed"]
    _assert_same_embedding(one, alone)
    with pytest.raises(ScclipError, match="copy_counts=True needs the counts in memory"):
        scclip.embed(model, atac, copy_counts=True)


def test_each_chunk_reads_only_its_rows(model, files):
    mdata = files["mdata"]
    recs = {m: Recording(mdata[m].X) for m in ("rna", "atac")}
    data = stream.BackedData(
        {m: stream.Modality(mdata[m].obs, mdata[m].var, recs[m], source="rec") for m in recs}
    )
    got = scclip.embed(model, data, chunk_size=64, device="cpu")
    _assert_same_embedding(got, scclip.embed(model, mdata, device="cpu"))
    for rec in recs.values():
        assert all(isinstance(k, slice) and k.stop - k.start <= 64 for k in rec.keys)
        assert [(k.start, k.stop) for k in rec.keys] == [(lo, min(lo + 64, N)) for lo in range(0, N, 64)]


def test_rna_normalisation_decided_on_all_cells_not_the_first_chunk(model, files):
    mdata = files["mdata"].copy()
    X = mdata["rna"].X.toarray().astype(np.float32)
    X[:50] *= 0.01  # the first chunk looks log-scale (non-integer, small) ...
    X[200, 0] = 500.0  # ... but all cells together look like non-integer counts on a count scale
    mdata.mod["rna"] = ad.AnnData(sp.csr_matrix(X), obs=mdata["rna"].obs, var=mdata["rna"].var)
    want = scclip.embed(model, mdata, device="cpu")
    got = scclip.embed(model, mdata, chunk_size=50, device="cpu")
    assert want.uns["scclip"]["modalities"]["rna"]["preprocessing"]["normalized"] is True
    _assert_same_embedding(got, want)


@pytest.mark.parametrize("kind", ["counts", "log", "normalised", "scaled", "empty", "ambient"])
def test_value_stats_over_chunks_equal_diagnose_of_the_whole(kind):
    rng = np.random.default_rng(0)
    X = sp.random(120, 40, density=0.2, format="csr", random_state=1, dtype=np.float32)
    X.data = rng.poisson(5, X.nnz).astype(np.float32) + 1
    if kind == "log":
        X.data = np.log1p(X.data * 1.5)
    elif kind == "normalised":
        X = sp.csr_matrix(sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X, dtype=np.float32)
    elif kind == "scaled":
        X.data -= 3.0
    elif kind == "empty":
        X = sp.csr_matrix(X.shape, dtype=np.float32)
    elif kind == "ambient":
        X.data = X.data * 30 + 0.37
    stats = ValueStats()  # the class diagnose uses, fed chunk by chunk
    for lo in range(0, 120, 25):
        stats.add(X[lo : lo + 25])
    assert stats.decision() == diagnose(X)


# --------------------------------------------------------------------------------------------------- train
def test_chunked_training_gives_the_same_model(files, tmp_path):
    kw = dict(model_config="tiny", train_config={"epochs": 1, "batch_size": 64}, holdout_key="batch", holdout=["b2"])
    a = scclip.train(read(files["x"]), out_dir=tmp_path / "mem", **kw)
    b = scclip.train(files["x"], out_dir=tmp_path / "chunks", chunk_size=64, **kw)
    wa, wb = a.net.state_dict(), b.net.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    np.testing.assert_array_equal(a.idf, b.idf)
    assert _same(a.summary["feature_space_report"], b.summary["feature_space_report"])
    assert a.summary["holdout_metrics"] == b.summary["holdout_metrics"]
    assert a.summary["validation"] == b.summary["validation"]


def test_paired_cells_select_rows_in_rna_order(files):
    mdata = files["mdata"]
    order = np.random.default_rng(0).permutation(N)[:200]
    atac = stream.from_anndata(mdata["atac"][order].copy())
    data = stream.paired_cells(stream.BackedData({"rna": stream.from_anndata(mdata["rna"]), "atac": atac}))
    assert (data["rna"].obs_names == data["atac"].obs_names).all() and data["rna"].n_obs == 200
    got = sp.vstack([c for _, _, c in data["atac"].chunks(33)])
    want = mdata["atac"][data["atac"].obs_names].X
    assert (got != want).nnz == 0


# --------------------------------------------------------------------------------------------------- reading
def test_read_backed_follows_the_reader_rules(tmp_path, files):
    mdata = files["mdata"]
    rna = mdata["rna"].copy()
    rna.layers["counts"] = rna.X.copy()
    rna.X = sp.csr_matrix(np.log1p(rna.X.toarray()) * 0.5, dtype=np.float32)  # X normalised, counts kept
    rna.write_h5ad(tmp_path / "norm.h5ad")
    with stream.read_backed(tmp_path / "norm.h5ad") as data:
        assert list(data.mod) == ["rna"]
        assert "used layers['counts'] as raw counts" in " ".join(data.uns["scclip_read"]["notes"])
        got = sp.vstack([c for _, _, c in data["rna"].chunks(100)])
    assert (got != read(tmp_path / "norm.h5ad")["rna"].X).nnz == 0
    # 10x-style mixed feature types in one .h5ad: split by columns
    both = ad.concat([mdata["rna"], mdata["atac"]], axis=1, merge="first")
    both.var["feature_types"] = ["Gene Expression"] * mdata["rna"].n_vars + ["Peaks"] * mdata["atac"].n_vars
    both.write_h5ad(tmp_path / "mixed.h5ad")
    want = read(tmp_path / "mixed.h5ad")
    with stream.read_backed(tmp_path / "mixed.h5ad") as data:
        for m in ("rna", "atac"):
            assert (data[m].var_names == want[m].var_names).all()
            assert (sp.vstack([c for _, _, c in data[m].chunks(128)]) != want[m].X).nnz == 0
    # modality aliases in an .h5mu
    write_h5mu(md.MuData({"gex": mdata["rna"].copy(), "peaks": mdata["atac"].copy()}), tmp_path / "alias.h5mu")
    with stream.read_backed(tmp_path / "alias.h5mu") as data:
        assert sorted(data.mod) == ["atac", "rna"] and data["rna"].n_obs == N


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_chunk_size_is_refused(model, files, bad):
    with pytest.raises(ScclipError, match="chunk_size must be a positive number of cells"):
        scclip.embed(model, files["x"], chunk_size=bad)


def test_bad_files_and_values_are_refused(model, files, tmp_path):
    with pytest.raises(ScclipError, match=r"needs an \.h5ad or \.h5mu file"):
        scclip.embed(model, files["d"] / "table.csv", chunk_size=100)
    with h5py.File(tmp_path / "tenx.h5", "w") as f:
        f.create_group("matrix")
    with pytest.raises(ScclipError, match="is HDF5 but neither"):
        stream.read_backed(tmp_path / "tenx.h5")
    with pytest.raises(ScclipError, match="does not exist"):
        stream.read_backed(tmp_path / "absent.h5mu")
    atac = files["mdata"]["atac"].copy()
    atac.X = atac.X.tocsc()
    atac.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(ScclipError, match=r"stored column by column \(CSC\)"):
        scclip.embed(model, tmp_path / "csc.h5ad", chunk_size=100)
    atac = files["mdata"]["atac"].copy()
    atac.X = atac.X.tocsr()
    atac.X.data[atac.X.indptr[150]] = np.nan  # a NaN in cell 150: the third chunk of 64
    atac.write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(ScclipError, match=r"nan.h5ad \(cells 128 to 192\) holds 1 NaN"):
        scclip.embed(model, tmp_path / "nan.h5ad", chunk_size=64)


# --------------------------------------------------------------------------------------------------- CLI
def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_cli_embed_chunk_size(tiny_pretrained, files, tmp_path):
    model = tiny_pretrained / "demo-tiny"
    rc, stdout, err = cli("embed", "--model", model, "--data", files["x"], "--chunk-size", 100, "--out", tmp_path / "c.h5mu")
    assert rc == 0, err
    assert json.loads(stdout)["cells"] == {"rna": N, "atac": N}
    rc, _, err = cli("embed", "--model", model, "--data", files["x"], "--out", tmp_path / "m.h5mu")
    assert rc == 0, err
    got, want = md.read_h5mu(tmp_path / "c.h5mu"), md.read_h5mu(tmp_path / "m.h5mu")
    for m in ("rna", "atac"):
        np.testing.assert_allclose(got[m].obsm["X_scclip"], want[m].obsm["X_scclip"], atol=1e-6, rtol=0)
    rc, stdout, err = cli("embed", "--model", model, "--rna", files["rna"], "--atac", files["atac"], "--paired",
                          "--chunk-size", 64, "--out", tmp_path / "p.h5mu")  # fmt: skip
    assert rc == 0, err
    assert json.loads(stdout)["paired"] is True
    np.testing.assert_allclose(md.read_h5mu(tmp_path / "p.h5mu")["rna"].obsm["X_scclip_raw"],
                               want["rna"].obsm["X_scclip_raw"], atol=1e-6, rtol=0)  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--data", "{x}", "--chunk-size", "0"], "--chunk-size must be positive, got 0"),
        (["--data", "{d}/table.csv", "--chunk-size", "10"], "needs an .h5ad or .h5mu file"),
        (["--fragments", "{d}/frag.tsv.gz", "--chunk-size", "10"], "--fragments are counted in memory"),
    ],
)
def test_cli_chunk_size_errors_are_one_line(tiny_pretrained, files, tmp_path, extra, expected):
    args = [a.format(**files) for a in extra]
    rc, out, err = cli("embed", "--model", tiny_pretrained / "demo-tiny", *args, "--out", tmp_path / "e.h5mu")
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scclip embed: error: ") and expected in lines[0], err
    assert not (tmp_path / "e.h5mu").exists()
