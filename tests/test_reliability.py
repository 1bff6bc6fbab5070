"""Interrupted work, untrusted model files and isolated sessions (issue 8).

* Killing ``scclip train`` mid-run and re-running it with ``--resume`` ends with the same weights as an
  uninterrupted run (CPU, fixed seed); a checkpoint write that fails midway leaves the previous checkpoint
  loadable; ``scclip embed`` writes its output atomically.
* Pickles are refused as models; ``scclip convert-checkpoint`` converts a trusted one; model zips cannot escape
  their folder; a folder whose weights do not fit its config fails naming the tensors.
* Two app sessions never see each other's data; uploads live in private temporary folders that are deleted;
  models shared between sessions are read-only.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import scclip
from scclip import explore
from scclip.cli import main
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.io import write_h5mu
from scclip.training import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pretrained" / "demo-synthetic"


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _cli(*argv) -> tuple[int, str]:
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


# --------------------------------------------------------------------------------------- interrupted work
TRAIN = ["--config", "tiny", "--epochs", "4", "--batch-size", "32", "--seed", "3", "--device", "cpu"]
TRAIN += ["--patience", "100", "--val-size", "0.1"]


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scclip.cli", "train", "--data", str(data), "--out", str(out), *TRAIN, *extra]


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    data = write_h5mu(synthetic_multiome(1600, n_genes=120, peaks_per_gene=2, seed=0), tmp_path / "x.h5mu")
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(
        _train_cmd(data, full), env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        _train_cmd(data, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = killed / "checkpoints" / "last.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch: right after the first checkpoint appeared
    proc.wait(timeout=60)
    assert not (killed / "model" / "model.safetensors").exists(), "the run finished before it was killed"
    stopped_at = json.loads(first.read_text())["state"]["epoch"]
    assert 1 <= stopped_at < 4
    resumed = subprocess.run(
        _train_cmd(data, killed, "--resume"), env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after kill + --resume"
    history = json.loads((killed / "model" / "summary.json").read_text())["history"]
    ref = json.loads((full / "model" / "summary.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == [h["loss"] for h in ref]


def _tiny_net():
    net = scclip.load_pretrained(DEMO).net
    return net, torch.optim.AdamW(net.parameters(), lr=1e-3)


def test_checkpoint_write_failing_midway_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import scclip.training._checkpoint as ck

    net, opt = _tiny_net()
    save_checkpoint(tmp_path / "last", model=net, optimizer=opt, meta={"state": {"epoch": 1}})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)

    def half_write(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)  # a partial file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", model=net, optimizer=opt, meta={"state": {"epoch": 2}})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]  # no temp left
    fresh, _ = _tiny_net()
    meta = load_checkpoint(tmp_path / "last", model=fresh)
    assert meta["state"]["epoch"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k])


def test_checkpoint_json_stale_after_kill_between_renames(tmp_path, monkeypatch):
    """Killed after the tensors were committed but before the .json copy: the checkpoint is still whole."""
    import scclip.training._checkpoint as ck

    net, opt = _tiny_net()
    save_checkpoint(tmp_path / "last", model=net, optimizer=opt, meta={"state": {"epoch": 1}})

    def die(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "write_json_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", model=net, optimizer=opt, meta={"state": {"epoch": 2}})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last", model=_tiny_net()[0])["state"]["epoch"] == 2


def test_embed_output_is_atomic(tmp_path, monkeypatch):
    import mudata as md

    data = write_h5mu(synthetic_multiome(40, seed=0), tmp_path / "x.h5mu")
    out = tmp_path / "out" / "e.h5mu"

    def broken_write(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(md.MuData, "write_h5mu", broken_write)
    rc, err = _cli("embed", "--model", DEMO, "--data", data, "--out", out)
    assert rc == 1 and "No space left" in err and "Traceback" not in err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial output, no temp file
    monkeypatch.undo()
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"old result")
    monkeypatch.setattr(md.MuData, "write_h5mu", broken_write)
    assert _cli("embed", "--model", DEMO, "--data", data, "--out", out)[0] == 1
    assert out.read_bytes() == b"old result"  # a failed write never clobbers an existing output


# --------------------------------------------------------------------------------------- model files
class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".pkl", ".bin", ".pth"])
def test_pickle_given_as_model_is_refused(tmp_path, suffix):
    f = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(2)}, f)
    with pytest.raises(ScclipError, match=r"pickle-based file.*never loads.*convert-checkpoint"):
        scclip.load_pretrained(f)
    rc, err = _cli("embed", "--model", f, "--data", "x.h5mu", "--out", tmp_path / "e.h5mu")
    assert rc == 1 and "pickle" in err and "Traceback" not in err
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(f, folder / f.name)
    with pytest.raises(ScclipError, match="only pickle files"):
        scclip.load_pretrained(folder)


def test_convert_checkpoint_round_trip(tmp_path):
    model = scclip.load_pretrained(DEMO)
    ck = tmp_path / "trusted.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}, "epoch": 7}, ck)
    rc, err = _cli("convert-checkpoint", ck, "--out", tmp_path / "plain")
    assert rc == 0, err
    meta = json.loads((tmp_path / "plain" / "checkpoint.json").read_text())
    assert meta["metadata"] == {"epoch": 7} and "module." not in next(iter(meta["tensors"]))
    rc, err = _cli("convert-checkpoint", ck, "--out", tmp_path / "release", "--like", DEMO)
    assert rc == 0, err
    back = scclip.load_pretrained(tmp_path / "release")
    for k, v in model.net.state_dict().items():
        assert torch.equal(back.net.state_dict()[k], v)
    np.testing.assert_array_equal(back.idf if back.idf is not None else [], model.idf if model.idf is not None else [])


def test_convert_checkpoint_refuses_code_and_mismatched_weights(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": evil}))
    rc, err = _cli("convert-checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "out")
    assert rc == 1 and "weights_only" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    torch.save({"encoders.rna.unknown": torch.zeros(3)}, tmp_path / "other.pt")
    rc, err = _cli("convert-checkpoint", tmp_path / "other.pt", "--out", tmp_path / "o2", "--like", DEMO)
    assert rc == 1 and "missing tensors" in err and "encoders.rna.unknown" in err
    assert not (tmp_path / "o2").exists()


def _copy_demo(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(DEMO, d)
    return d


def test_folder_with_missing_unexpected_or_misshaped_tensors_names_them(tmp_path):
    d = _copy_demo(tmp_path)
    tensors = load_file(str(d / "model.safetensors"))
    name = sorted(k for k in tensors if k.startswith("encoders.rna"))[0]
    variants = {
        "missing": ({k: v for k, v in tensors.items() if k != name}, f"missing tensors: {name}"),
        "unexpected": ({**tensors, "extra.weight": torch.zeros(2)}, "unexpected tensors: extra.weight"),
    }
    for why, (state, expected) in variants.items():
        save_file(state, str(d / "model.safetensors"))
        with pytest.raises(ScclipError, match="do not fit") as info:
            scclip.load_pretrained(d)
        assert expected in str(info.value), why
    save_file(tensors, str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["d_model"] = cfg["model"]["d_model"] * 2  # a config that does not match the weights
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ScclipError, match=r"shapes that do not match config\.json") as info:
        scclip.load_pretrained(d)
    assert "config.json wants" in str(info.value)
    rc, err = _cli("embed", "--model", d, "--data", "x.h5mu", "--out", tmp_path / "e.h5mu")
    assert rc == 1 and "shapes that do not match" in err


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("../evil.json", "outside the model folder"),
        ("demo/../../evil.json", "outside the model folder"),
        ("/etc/evil.json", "outside the model folder"),
        ("..\\evil.json", "outside the model folder"),
        ("C:/evil.json", "outside the model folder"),
        ("demo/weights.pt", "not part of a release folder"),
        ("demo/weights.ckpt", "not part of a release folder"),
        ("demo/weights.pkl", "not part of a release folder"),
        ("demo/pytorch_model.bin", "not part of a release folder"),
        ("symlink", "symbolic link"),
    ],
)
def test_model_zip_entries_escaping_or_pickles_are_refused(tmp_path, member, expected):
    files = {f"demo/{f.name}": f.read_bytes() for f in DEMO.iterdir()}
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
        if member == "symlink":
            info = zipfile.ZipInfo("demo/linked.json")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(member, b"{}")
    with pytest.raises(ScclipError, match=expected):
        explore.safe_extract_model_zip(path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.json").exists()


def test_model_zip_size_and_entry_caps_and_read_only_result(tmp_path):
    files = {f"demo/{f.name}": f.read_bytes() for f in DEMO.iterdir()}
    good = _zip(tmp_path / "good.zip", files)
    with pytest.raises(ScclipError, match="more than"):
        explore.safe_extract_model_zip(good, tmp_path / "big", max_bytes=1000)
    many = _zip(tmp_path / "many.zip", {**files, **{f"demo/x{i}.json": b"{}" for i in range(1001)}})
    with pytest.raises(ScclipError, match="entries"):
        explore.safe_extract_model_zip(many, tmp_path / "many")
    folder = explore.safe_extract_model_zip(good, tmp_path / "ok" / "abc", reuse=True)
    scclip.load_pretrained(folder)
    for f in folder.iterdir():
        assert not os.access(f, os.W_OK) or os.geteuid() == 0, f"{f} is writable"
        assert f.stat().st_mode & 0o222 == 0
    again = explore.safe_extract_model_zip(good, tmp_path / "ok" / "abc", reuse=True)  # another session
    assert again == folder and [p.name for p in (tmp_path / "ok").iterdir()] == ["abc"]  # no temp left


# --------------------------------------------------------------------------------------- sessions
def test_uploads_live_in_private_temp_folders_that_are_removed(tmp_path, monkeypatch):
    import tempfile

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    seen = []
    real = explore.uploads.read_files

    def spy(paths, **kw):
        seen.extend(paths)
        folder = Path(paths[0]).parent
        assert folder.stat().st_mode & 0o077 == 0  # private: only the app's user can read it
        return real(paths, **kw)

    monkeypatch.setattr(explore.uploads, "read_files", spy)
    mdata = synthetic_multiome(30, seed=0)
    buf = tmp_path / "x.h5mu"
    write_h5mu(mdata, buf)
    got, _ = explore.read_uploads([("x.h5mu", buf.read_bytes())])
    assert got["rna"].n_obs == 30 and seen
    with pytest.raises(ScclipError):
        explore.read_uploads([("../../x.h5ad", b"junk")])
    assert list(spool.iterdir()) == []  # deleted after reading, also after an error
    assert not (tmp_path / "x.h5ad").exists()


def test_shared_model_is_read_only_and_unchanged_by_embedding():
    model = scclip.load_pretrained(DEMO)
    for p in model.net.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    scclip.embed(model, synthetic_multiome(50, seed=0))
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    assert not any(p.requires_grad for p in model.net.parameters())


def test_two_app_sessions_never_see_each_others_data(tmp_path, monkeypatch):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    pre = tmp_path / "pretrained"
    shutil.copytree(DEMO, pre / "demo-synthetic")
    for k, v in {
        "SCCLIP_PRETRAINED_DIR": str(pre),
        "SCCLIP_CACHE_DIR": str(tmp_path / "cache"),
        "SCCLIP_RUNS_DIR": str(tmp_path / "runs"),
        "SCCLIP_DEFAULT_MODEL": "demo-synthetic",
        "SCCLIP_DEFAULT_DEMO": "synthetic",
    }.items():
        monkeypatch.setenv(k, v)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    upload = write_h5mu(synthetic_multiome(30, seed=5), tmp_path / "private_cells.h5mu")
    a = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    b = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    a.switch_page("webapp/pages/data.py").run()
    a.file_uploader(key="upload_files").set_value([(upload.name, upload.read_bytes(), "application/x-hdf5")])
    a.run()
    a.button(key="upload_load").click().run()
    assert not a.exception and a.session_state["data"]["label"] == "private_cells.h5mu"
    a.session_state["query_cell"] = 7
    a.session_state["group_cells"] = [1, 2, 3]
    a.session_state["joints"][("model", "data")] = "session A's embedding"
    a.run()
    b.switch_page("webapp/pages/data.py").run()
    assert not b.exception
    assert b.session_state["data"]["label"] != "private_cells.h5mu"
    assert "private_cells.h5mu" not in "\n".join(m.value for m in b.markdown)
    assert b.session_state["query_cell"] is None and b.session_state["group_cells"] is None
    assert ("model", "data") not in b.session_state["joints"]
    assert b.session_state["data"]["mdata"] is not a.session_state["data"]["mdata"]
    assert a.session_state["query_cell"] == 7  # and B's runs did not reset A's selection
    assert [p for p in spool.iterdir() if p.name.startswith("scclip_upload_")] == []  # uploads cleaned up
