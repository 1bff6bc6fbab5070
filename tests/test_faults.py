"""Faults and hostile input outside the documented bad files (issue 19, items 3-5): a shared server's path field,
inputs too big for the app, broken or unwritable caches, a full disk under ``scclip embed --out``.

Training workers killed or started twice at once: ``tests/test_faults_training.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.io import write_h5mu

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pretrained" / "demo-synthetic"


# --------------------------------------------------------------------------- item 4: the server path field
@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.0.0.5", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("", False), (None, False), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False),
     ("example.org", False)],
)  # fmt: skip
def test_loopback_addresses(address, loopback):
    assert explore.is_loopback(address) is loopback


def test_server_paths_outside_the_roots_are_refused_on_a_shared_server(tmp_path, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    inside = root / "sub" / "cells.h5mu"
    inside.write_bytes(b"x")
    secret = outside / "secret.h5ad"
    secret.write_bytes(b"x")
    (root / "link_out.h5ad").symlink_to(secret)
    (root / "link_in.h5mu").symlink_to(inside)
    monkeypatch.setenv("SCCLIP_DATA_ROOTS", f"{tmp_path / 'other'}{os.pathsep}{root}")
    assert explore.data_roots() == [(tmp_path / "other").resolve(), root.resolve()]
    shared = "0.0.0.0"
    assert explore.check_server_path(inside, address=shared) == inside.resolve()
    assert explore.check_server_path(root / "link_in.h5mu", address=shared) == inside.resolve()
    assert explore.check_server_path(f"  {root}/sub/../sub/cells.h5mu ", address=shared) == inside.resolve()
    for bad in ("/etc/passwd", root / ".." / "outside" / "secret.h5ad", root / "link_out.h5ad", secret,
                f"{root}-evil/cells.h5mu", "/"):  # fmt: skip
        with pytest.raises(
            ScclipError, match=r"outside the folders this shared server may read .*SCCLIP_DATA_ROOTS"
        ):
            explore.check_server_path(bad, address=shared)
    with pytest.raises(ScclipError, match="outside"):  # the first refused path of several raises
        explore.check_server_paths([inside, "/etc/shadow"], address="")
    # loopback: as convenient as before (any path the app can read, ~ expanded, nothing resolved away)
    assert explore.check_server_path(secret, address="127.0.0.1") == secret
    assert explore.check_server_path("~/x.h5ad", address="localhost") == Path.home() / "x.h5ad"


def test_default_root_is_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SCCLIP_DATA_ROOTS", raising=False)
    monkeypatch.setenv("SCCLIP_DATA_DIR", str(tmp_path))
    assert explore.data_roots() == [tmp_path.resolve()]
    assert (
        explore.check_server_path(tmp_path / "a.h5mu", address="10.0.0.1") == (tmp_path / "a.h5mu").resolve()
    )
    with pytest.raises(ScclipError, match="outside"):
        explore.check_server_path(tmp_path.parent / "b.h5mu", address="10.0.0.1")


# --------------------------------------------------------------------------- item 5: big inputs
def _h5ad(path: Path, n_obs: int = 50, n_vars: int = 40, *, dense: bool = False) -> Path:
    rng = np.random.default_rng(0)
    import anndata as ad
    import scipy.sparse as sp

    X = sp.random(n_obs, n_vars, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.ceil(X.data * 5)
    ad.AnnData(X=X.toarray() if dense else X).write_h5ad(path)
    return path


def test_memory_estimate_reads_the_declared_shape_only(tmp_path):
    small = _h5ad(tmp_path / "small.h5ad")
    est = explore.estimate_memory(small)
    m = est["matrices"][0]
    assert m["shape"] == (50, 40) and m["nnz"] == 400  # 20 % of 2000
    assert est["bytes"] == int(explore.input_size.WORKING_FACTOR * (400 * 8 + 51 * 8))
    dense = explore.estimate_memory(_h5ad(tmp_path / "dense.h5ad", dense=True))
    assert dense["matrices"][0]["nnz"] is None and dense["bytes"] == (3 * 50 * 40 * 4)
    # a huge declared shape holding tiny data: estimated from the declaration, nothing allocated
    huge = _h5ad(tmp_path / "huge.h5ad")
    with h5py.File(huge, "r+") as f:
        f["X"].attrs["shape"] = np.array([4_000_000_000, 40])
    assert explore.estimate_memory(huge)["bytes"] == 3 * (400 * 8 + 4_000_000_001 * 8)
    mu = write_h5mu(synthetic_multiome(60, seed=0), tmp_path / "pair.h5mu")
    assert sorted(m["name"] for m in explore.estimate_memory(mu)["matrices"]) == ["mod/atac/X", "mod/rna/X"]
    mtx = tmp_path / "matrix.mtx"
    mtx.write_text(
        "%%MatrixMarket matrix coordinate integer general\n% comment\n36601 2000000 900000000\n1 1 1\n"
    )
    assert explore.estimate_memory(mtx)["matrices"][0]["shape"] == (2_000_000, 36601)  # cells are the columns
    assert explore.estimate_memory(tmp_path)["matrices"][0]["nnz"] == 900_000_000  # a 10x folder
    (tmp_path / "junk.h5ad").write_bytes(b"not hdf5")
    assert explore.estimate_memory(tmp_path / "junk.h5ad") is None  # left to the reader's clear error
    assert explore.estimate_memory(tmp_path / "cells.tar.gz") is None


def test_formats_files_are_measured(formats_dir):
    ten = explore.estimate_memory(formats_dir / "tenx_multiome_gex_10x10.h5")
    assert ten["matrices"][0]["shape"] == (10, 10)
    mu = explore.estimate_memory(formats_dir / "pbmc10x_multiome_1k_subset.h5mu")
    assert {m["shape"][0] for m in mu["matrices"]} == {1000}


def test_a_file_above_the_bound_is_refused_before_reading(tmp_path, monkeypatch):
    huge = _h5ad(tmp_path / "huge.h5ad")
    with h5py.File(huge, "r+") as f:
        f["X"].attrs["shape"] = np.array([400_000_000, 40])
    import scclip.io

    def never(*a, **k):
        raise AssertionError("the file was read")

    monkeypatch.setattr(scclip.io, "read", never)
    with pytest.raises(ScclipError) as info:
        explore.read_files([huge])
    msg = str(info.value)
    assert "huge.h5ad declares 400,000,000 cells x 40 features (400 non-zeros)" in msg
    assert "above this app's limit of 4.0 GB ($SCCLIP_APP_MAX_GB)" in msg and "--chunk-size" in msg
    assert "\n" not in msg
    monkeypatch.setenv("SCCLIP_APP_MAX_GB", "0.000001")  # ~1 kB: the small file is refused too
    small = _h5ad(tmp_path / "small.h5ad")
    with pytest.raises(ScclipError, match=r"small.h5ad declares 50 cells .*0.0 GB"):
        explore.read_uploads([("small.h5ad", small.read_bytes())])
    monkeypatch.setenv("SCCLIP_APP_MAX_GB", "not a number")
    assert explore.max_app_bytes() == 4 * 1024**3
    monkeypatch.delenv("SCCLIP_APP_MAX_GB")
    assert 0 < explore.check_memory([small]) < 1024**2  # under the default bound: passes on to the reader


# --------------------------------------------------------------------------- item 3: caches
@pytest.fixture(autouse=True)
def fast_umap(monkeypatch):
    """The cache logic is under test, not umap-learn (whose first call compiles for ~20 s)."""
    import scclip.explore.cache as cache

    monkeypatch.setattr(cache, "compute_umap", lambda Z, **kw: np.asarray(Z, dtype=np.float32)[:, :2] * 2)


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path / "cache"))
    model = scclip.load_pretrained(DEMO)
    return model, synthetic_multiome(120, seed=3)


def _entry(prefix: str) -> Path:
    (path,) = [p for p in explore.cache_dir().iterdir() if p.name.startswith(prefix)]
    return path


def test_a_truncated_or_corrupt_cache_entry_is_recomputed_with_a_note(cache_env):
    model, mdata = cache_env
    ref, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d")
    assert not cached
    path = _entry("emb-")
    good = path.read_bytes()
    for damage in ("truncate", "flip", "wrong arrays"):
        if damage == "truncate":
            path.write_bytes(good[: len(good) // 2])
        elif damage == "flip":
            raw = bytearray(good)
            raw[len(raw) // 3] ^= 0xFF
            path.write_bytes(bytes(raw))
        else:  # a well-formed file whose arrays do not fit its checksum (e.g. an older writer's entry)
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            key = next(k for k in arrays if k.endswith("X_scclip"))
            arrays[key] = arrays[key] + 1
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)
        notes: list[str] = []
        out, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d", notes=notes)
        assert not cached, damage
        assert len(notes) == 1 and "was incomplete or corrupt" in notes[0] and "recomputed" in notes[0], notes
        np.testing.assert_allclose(out["rna"].obsm["X_scclip"], ref["rna"].obsm["X_scclip"], atol=1e-6)
        path.write_bytes(good)
    notes = []
    _, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d", notes=notes)
    assert cached and notes == []  # the intact entry is trusted
    Z = ref["rna"].obsm["X_scclip"]
    coords, _ = explore.umap_cached(Z, key="k")
    upath = _entry("umap-")
    upath.write_bytes(upath.read_bytes()[:100])
    notes = []
    again, cached = explore.umap_cached(Z, key="k", notes=notes)
    assert not cached and "UMAP" in notes[0] and again.shape == coords.shape


def test_a_writer_killed_midway_leaves_no_trusted_entry(cache_env, monkeypatch):
    model, mdata = cache_env
    real_savez = np.savez

    def dies_midway(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # the process is interrupted while writing

    monkeypatch.setattr(np, "savez", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        explore.embed_cached(model, mdata, model_fp="m", data_fp="d")
    assert list(explore.cache_dir().iterdir()) == []  # no entry and no temporary file
    monkeypatch.setattr(np, "savez", real_savez)
    _, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d")
    assert not cached


def test_a_process_killed_while_writing_the_cache_leaves_no_entry(tmp_path, monkeypatch):
    """A real SIGKILL while a cache entry is written: its name never appears, nothing half-written is trusted."""
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path))
    Z = np.eye(6, dtype=np.float32)
    explore.umap_cached(Z, key="k")
    (target,) = tmp_path.iterdir()  # the entry's name; removed, then rewritten by a process that is killed
    target.unlink()
    code = (
        "import time; from pathlib import Path; from scclip.io import atomic_write\n"
        "def w(tmp):\n    fh = open(tmp, 'wb'); fh.write(b'PK' * 1000); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"atomic_write(Path({str(target)!r}), w)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(tmp_path.iterdir())  # the temporary file exists
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not target.exists()
    notes: list[str] = []
    coords, cached = explore.umap_cached(Z, key="k", notes=notes)
    assert not cached and notes == [] and coords.shape == (6, 2)
    assert target.is_file()  # written again, completely


def test_an_unwritable_cache_folder_means_no_cache_and_one_note(tmp_path, monkeypatch):
    model = scclip.load_pretrained(DEMO)
    mdata = synthetic_multiome(80, seed=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(blocker / "cache"))  # cannot be created (also as root)
    for _ in range(2):
        notes: list[str] = []
        out, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d", notes=notes)
        assert not cached and out["rna"].obsm["X_scclip"].shape[0] == 80
        assert len(notes) == 1 and notes[0].startswith(explore.CACHE_OFF_NOTE), notes
        assert "a_file/cache cannot be written" in notes[0] and "SCCLIP_CACHE_DIR" in notes[0]
    coords, cached = explore.umap_cached(out["rna"].obsm["X_scclip"], key="k", notes=notes)
    assert coords.shape == (80, 2) and not cached
    # a folder that exists but refuses writes (read-only mount, full disk): no entry, the same note
    import scclip.explore.cache as cache

    def refuse(path, write):
        raise OSError(30, "Read-only file system")

    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path / "ro"))
    monkeypatch.setattr(cache, "atomic_write", refuse)
    notes = []
    _, cached = explore.embed_cached(model, mdata, model_fp="m", data_fp="d", notes=notes)
    assert not cached and notes[0].startswith(explore.CACHE_OFF_NOTE) and "Read-only" in notes[0]
    assert list((tmp_path / "ro").iterdir()) == []


def test_sessions_asking_for_the_same_entry_at_once_compute_it_once(cache_env, monkeypatch):
    model, mdata = cache_env
    calls = []
    real = scclip.embed

    def slow_embed(*a, **k):
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(scclip, "embed", slow_embed)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(explore.embed_cached(model, mdata, model_fp="m", data_fp="d"))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1, calls
    assert sorted(c for _, c in results) == [False, True, True, True]


# --------------------------------------------------------------------------- item 3: a full disk on embed --out
@pytest.mark.parametrize("chunked", [False, True])
def test_a_full_disk_during_embed_out_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, chunked):
    """The HDF5 layer reports ENOSPC inside a long message without an errno: still one clear line."""
    import mudata as md

    from scclip.cli import main

    data = write_h5mu(synthetic_multiome(40, seed=0), tmp_path / "x.h5mu")
    out = tmp_path / "out" / "e.h5mu"

    def disk_full(self, path, *a, **k):
        Path(path).write_bytes(b"\x89HDF partial")
        raise OSError(
            "Can't write data (file write failed: time = Thu, errno = 28,\nerror message = 'No space left on device')"
        )

    monkeypatch.setattr(md.MuData, "write_h5mu", disk_full)
    args = ["embed", "--model", str(DEMO), "--data", str(data), "--out", str(out)]
    rc = main([*args, "--chunk-size", "16"] if chunked else args)
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("scclip embed: error: Could not write") and "the disk is full" in err, err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial output, no temporary file


# --------------------------------------------------------------------------- the Data page's glue
def test_data_page_limits_server_paths_off_loopback_and_refuses_big_files(demo_app_env, monkeypatch):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    from streamlit import config

    root = demo_app_env / "data_root"
    root.mkdir()
    good = write_h5mu(synthetic_multiome(60, seed=4), root / "server_cells.h5mu")
    monkeypatch.setenv("SCCLIP_DATA_ROOTS", str(root))
    before = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")  # a shared server
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
        at.switch_page("webapp/pages/data.py").run()
        assert any("reachable from the network" in c.value and str(root) in c.value for c in at.caption)
        at.text_area(key="server_paths").input("/etc/passwd").run()
        at.button(key="path_load").click().run()
        assert not at.exception
        assert any("outside the folders this shared server may read" in e.value for e in at.error)
        at.text_area(key="server_paths").input(str(good)).run()
        at.button(key="path_load").click().run()
        assert not at.exception and at.session_state["data"]["label"] == "server_cells.h5mu"
        monkeypatch.setenv("SCCLIP_APP_MAX_GB", "0.000001")
        at.button(key="path_load").click().run()
        assert any("--chunk-size 10000" in e.value and "SCCLIP_APP_MAX_GB" in e.value for e in at.error)
        config.set_option("server.address", "127.0.0.1")  # loopback: no roots, no caption
        at.run()
        assert not any("reachable from the network" in c.value for c in at.caption)
    finally:
        config.set_option("server.address", before)


def test_the_app_says_once_that_the_cache_is_off(demo_app_env, monkeypatch):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    blocker = demo_app_env / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(blocker / "cache"))
    at = AppTest.from_file(
        str(REPO / "app.py"), default_timeout=300
    ).run()  # Explore: embeds the default demo
    assert not at.exception, [e.value for e in at.exception]
    off = [w.value for w in at.warning if "cannot be written" in w.value]
    assert len(off) == 1 and "SCCLIP_CACHE_DIR" in off[0], [w.value for w in at.warning]
    assert any(m.label == "FOSCTTM" for m in at.metric)  # the page works without the cache
    at.session_state["joints"] = {}  # embed again (as for another dataset): computed, but not said again
    at.run()
    assert not at.exception and not [w for w in at.warning if "cannot be written" in w.value]
    assert any(m.label == "FOSCTTM" for m in at.metric)


def test_a_10x_archive_is_measured_from_its_matrix_header_without_unpacking(tmp_path, formats_dir):
    import gzip
    import io
    import tarfile

    small = explore.estimate_memory(formats_dir / "tenx_mtx_10x10.tar.gz")
    assert small["matrices"][0]["shape"] == (10, 10)
    mtx = b"%%MatrixMarket matrix coordinate integer general\n%\n36000 5000000 9000000000\n1 1 1\n"
    archive = tmp_path / "big_filtered_feature_bc_matrix.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        blob = gzip.compress(mtx)
        info = tarfile.TarInfo("filtered_feature_bc_matrix/matrix.mtx.gz")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    est = explore.estimate_memory(archive)
    assert est["matrices"][0]["shape"] == (5_000_000, 36_000) and est["matrices"][0]["nnz"] == 9_000_000_000
    with pytest.raises(ScclipError, match=r"big_filtered_feature_bc_matrix.tar.gz declares 5,000,000 cells"):
        explore.check_memory([archive])
