"""The command line contract: help texts, exit codes and messages on bad input, and train -> embed end to end.

Most tests call :func:`scclip.cli.main` in-process (fast); two run a real process to check the entry points.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mudata as md
import numpy as np
import pytest

from scclip.cli import main
from scclip.errors import ScclipError

REPO = Path(__file__).resolve().parents[1]
N_CELLS = 300


def train_args(epochs: int = 2) -> list[str]:
    return [
        "--config",
        "tiny",
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--holdout-key",
        "batch",
        "--holdout",
        "b2",
    ]


def cli(*argv) -> tuple[int, str, str]:
    """Run ``scclip ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny paired data as .h5mu, as separate RNA / ATAC .h5ad files, and a few broken inputs."""
    from scclip.datasets import synthetic_multiome
    from scclip.io import write_h5mu

    d = tmp_path_factory.mktemp("cli_data")
    mdata = synthetic_multiome(N_CELLS, n_genes=120, peaks_per_gene=2, seed=0)
    write_h5mu(mdata, d / "x.h5mu")
    mdata["rna"].write_h5ad(d / "rna.h5ad")
    mdata["atac"].write_h5ad(d / "atac.h5ad")
    other = mdata["atac"].copy()
    other.obs_names = [f"other{i}" for i in range(other.n_obs)]
    other.write_h5ad(d / "atac_other_cells.h5ad")
    write_h5mu(md.MuData({"rna": mdata["rna"].copy()}), d / "rna_only.h5mu")
    (d / "not_hdf5.h5mu").write_text("this is not an HDF5 file\n")
    (d / "table.csv").write_text("a,b\n1,2\n")
    (d / "a_file").write_text("x")
    (d / "nonempty").mkdir()
    (d / "nonempty" / "keep.txt").write_text("x")
    return {"d": d, "x": d / "x.h5mu", "rna": d / "rna.h5ad", "atac": d / "atac.h5ad"}


@pytest.fixture(scope="module")
def run(files) -> dict:
    """One tiny training run through the CLI: (run folder, exit status, stdout JSON, stderr)."""
    out = files["d"] / "run"
    rc, stdout, stderr = cli("train", "--data", files["x"], "--out", out, *train_args())
    assert rc == 0, stderr
    return {"dir": out, "stdout": json.loads(stdout), "stderr": stderr}


def _check_embedded(path: Path, *, n_cells: int, mods=("rna", "atac")) -> md.MuData:
    out = md.read_h5mu(path)
    assert sorted(out.mod) == sorted(mods)
    for m in mods:
        z = out[m].obsm["X_scclip"]
        assert z.shape == (n_cells, 16)  # preset tiny: proj_dim 16
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-4)
        assert {"cell_type", "batch"} <= set(out[m].obs.columns)
        assert out[m].n_vars == 0  # counts are not copied
    return out


# --------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), ["train", "embed", "match", "evaluate", "--debug"]),
        (
            ("train",),
            ["--data", "--out", "--epochs", "--config", "tiny", "--holdout-key", "--resume", "--device"],
        ),
        (("embed",), ["--model", "--data", "--rna", "--atac", "--paired", "--out", "X_scclip"]),
        (("match",), ["--data", "--k", "--out", "--one-to-one"]),
        (("evaluate",), ["--data", "--label-key"]),
    ],
)
def test_help_explains_each_command(argv, expected):
    rc, out, err = cli(*argv, "--help")
    assert rc == 0 and err == ""
    assert out.startswith("usage: scclip")
    for option in expected:
        assert option in out, f"{option} missing from `scclip {' '.join(argv)} --help`"


def test_no_command_prints_help_and_exits_2():
    rc, out, _ = cli()
    assert rc == 2 and "COMMAND" in out and "train" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("train", "--data", "x.h5mu"), "the following arguments are required: --out"),
        (("train", "--data", "x.h5mu", "--out", "r", "--epochs", "abc"), "invalid int value: 'abc'"),
        (("embed", "--model", "m", "--out", "e.h5mu", "--device", "tpu"), "invalid choice: 'tpu'"),
        (("fit", "--data", "x.h5mu"), "invalid choice: 'fit'"),
    ],
)
def test_usage_errors_exit_2(argv, expected):
    rc, _, err = cli(*argv)
    assert rc == 2
    assert "usage: scclip" in err and expected in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- bad input
BAD_INPUT = [
    # (id, argv; {d}: data folder, {x}: paired .h5mu, {rna}/{atac}: .h5ad, {run}: trained run, {tmp}: fresh folder)
    ("missing-file", "train --data {d}/absent.h5mu --out {tmp}/run", "absent.h5mu does not exist"),
    ("unknown-format", "train --data {d}/table.csv --out {tmp}/run", "Unknown format"),
    ("not-hdf5", "train --data {d}/not_hdf5.h5mu --out {tmp}/run", "is not a valid HDF5 file"),
    (
        "one-modality",
        "train --data {d}/rna_only.h5mu --out {tmp}/run --config tiny",
        "needs paired rna and atac",
    ),
    (
        "holdout-key",
        "train --data {x} --out {tmp}/run --config tiny --holdout-key donor --holdout b2",
        "--holdout-key 'donor' is not a column of obs",
    ),
    (
        "holdout-value",
        "train --data {x} --out {tmp}/run --config tiny --holdout-key batch --holdout b9",
        "has no values ['b9']",
    ),
    ("config", "train --data {x} --out {tmp}/run --config huge", "unknown config 'huge'"),
    ("negative-epochs", "train --data {x} --out {tmp}/run --epochs -1", "--epochs must be positive, got -1"),
    ("zero-lr", "train --data {x} --out {tmp}/run --lr 0", "--lr must be positive"),
    ("negative-val-size", "train --data {x} --out {tmp}/run --val-size -0.1", "--val-size must be >= 0"),
    ("out-not-empty", "train --data {x} --out {d}/nonempty", "exists and is not empty"),
    ("out-is-file", "train --data {x} --out {d}/a_file", "is a file"),
    ("embed-nothing", "embed --model {run} --out {tmp}/e.h5mu", "nothing to embed"),
    ("embed-data-and-rna", "embed --model {run} --data {x} --rna {rna} --out {tmp}/e.h5mu", "not both"),
    (
        "embed-paired-one-file",
        "embed --model {run} --rna {rna} --paired --out {tmp}/e.h5mu",
        "--paired needs both --rna and --atac",
    ),
    (
        "embed-paired-no-shared",
        "embed --model {run} --rna {rna} --atac {d}/atac_other_cells.h5ad --paired --out {tmp}/e.h5mu",
        "No barcode is shared",
    ),
    ("embed-swapped", "embed --model {run} --rna {atac} --out {tmp}/e.h5mu", "were the two files swapped"),
    (
        "embed-no-model",
        "embed --model {tmp}/no_such_model --data {x} --out {tmp}/e.h5mu",
        "no scCLIP model at",
    ),
    (
        "embed-batch-size",
        "embed --model {run} --data {x} --batch-size 0 --out {tmp}/e.h5mu",
        "--batch-size must be positive",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_1_with_one_line_message(argv, expected, files, run, tmp_path):
    names = {**files, "run": run["dir"], "tmp": tmp_path}
    args = [a.format(**names) for a in argv.split()]
    rc, out, err = cli(*args)
    assert rc == 1, err
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scclip {args[0]}: error: "), err
    assert expected in lines[0] and len(lines[0]) < 500
    assert not (tmp_path / "run").exists()  # a failed train leaves no half-made run folder
    assert not (tmp_path / "e.h5mu").exists()


@pytest.mark.parametrize("command", ["train", "embed"])
def test_device_cuda_without_gpu(command, files, run, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if command == "train":
        argv = ["train", "--data", files["x"], "--out", tmp_path / "run", *train_args(), "--device", "cuda"]
    else:
        argv = [
            "embed",
            "--model",
            run["dir"],
            "--data",
            files["x"],
            "--out",
            tmp_path / "e.h5mu",
            "--device",
            "cuda",
        ]
    rc, _, err = cli(*argv)
    assert rc == 1 and "Traceback" not in err
    assert "no CUDA GPU" in err and "--device auto or cpu" in err


def test_debug_shows_the_exception(files, tmp_path):
    with pytest.raises(ScclipError, match="does not exist"):
        main(["--debug", "train", "--data", str(files["d"] / "absent.h5mu"), "--out", str(tmp_path / "run")])


# ------------------------------------------------------------------------------------------ happy path
def test_train_writes_release_folder_and_reports_holdout(run):
    model = run["dir"] / "model"
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    assert (run["dir"] / "checkpoints" / "last.json").is_file()
    report = run["stdout"]
    assert Path(report["model"]) == model and report["epochs_run"] == 2
    n_b2 = sum(1 for i in range(N_CELLS) if i % 4 == 3)  # synthetic_multiome: every 4th cell is batch b2
    assert report["holdout_metrics"]["n_cells"] == n_b2
    summary = json.loads((model / "summary.json").read_text())
    assert summary["n_holdout_cells"] == n_b2
    assert summary["n_train_cells"] + summary["n_val_cells"] == N_CELLS - n_b2
    assert summary["command"].startswith("scclip ")


def test_resume_continues_the_run(files, run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run["dir"], out)
    rc, stdout, err = cli("train", "--data", files["x"], "--out", out, *train_args(epochs=3), "--resume")
    assert rc == 0, err
    history = json.loads((out / "model" / "summary.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and json.loads(stdout)["epochs_run"] == 3


def test_embed_paired_h5mu(files, run, tmp_path):
    from scclip.api import embed
    from scclip.io import read

    out_path = tmp_path / "sub" / "e.h5mu"
    rc, stdout, err = cli("embed", "--model", run["dir"], "--data", files["x"], "--out", out_path)
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["paired"] is True and report["cells"] == {"rna": N_CELLS, "atac": N_CELLS}
    assert report["coverage"]["rna"]["frac_model_hit"] == 1.0  # same features as training
    out = _check_embedded(out_path, n_cells=N_CELLS)
    source = md.read_h5mu(files["x"])
    for m in ("rna", "atac"):
        assert (out[m].obs_names == source[m].obs_names).all()
        assert (out[m].obs["cell_type"].astype(str) == source[m].obs["cell_type"].astype(str)).all()
    api = embed(str(run["dir"]), read(files["x"]), device="cpu")  # the CLI is a thin shell around the API
    np.testing.assert_allclose(out["rna"].obsm["X_scclip"], api["rna"].obsm["X_scclip"], atol=1e-5)


@pytest.mark.parametrize("paired", [False, True])
def test_embed_separate_files_unpaired_unless_paired(paired, files, run, tmp_path):
    out_path = tmp_path / "e.h5mu"
    flag = ["--paired"] if paired else []
    rc, stdout, err = cli(
        "embed",
        "--model",
        run["dir"],
        "--rna",
        files["rna"],
        "--atac",
        files["atac"],
        *flag,
        "--out",
        out_path,
    )
    assert rc == 0, err
    assert json.loads(stdout)["paired"] is paired
    out = _check_embedded(out_path, n_cells=N_CELLS)
    assert bool(out.uns["scclip"]["paired"]) is paired
    assert bool(out["atac"].uns["scclip"]["paired"]) is paired


def test_embed_one_modality(files, run, tmp_path):
    rc, stdout, err = cli(
        "embed", "--model", run["dir"], "--atac", files["atac"], "--out", tmp_path / "a.h5mu"
    )
    assert rc == 0, err
    assert json.loads(stdout)["cells"] == {"atac": N_CELLS}
    _check_embedded(tmp_path / "a.h5mu", n_cells=N_CELLS, mods=("atac",))


# ------------------------------------------------------------------------------------ real processes
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_python_m_help_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scclip.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: scclip" in proc.stdout and "embed" in proc.stdout


@pytest.mark.skipif(shutil.which("scclip") is None, reason="the scclip console script is not installed")
def test_console_script_error_in_a_real_process(tmp_path):
    proc = subprocess.run(
        ["scclip", "embed", "--model", str(tmp_path / "nowhere"), "--data", "x.h5mu", "--out", "e.h5mu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("scclip embed: error: no scCLIP model at")


def test_train_precision_and_memory_flags_reach_the_config(files, run):
    from scclip.model.encode import cpu_capability

    out = files["d"] / "run_flags"
    precision = "bf16" if cpu_capability()["native_bf16"] else "fp32"
    if precision == "fp32":  # a CPU without native bf16 (AVX2-only): the request is refused in one line
        rc, _, stderr = cli("train", "--data", files["x"], "--out", files["d"] / "x_bf16", *train_args(),
                            "--precision", "bf16")  # fmt: skip
        assert rc == 1 and "fp32" in stderr.strip().splitlines()[-1], stderr
    rc, _, stderr = cli("train", "--data", files["x"], "--out", out, *train_args(), "--precision", precision,
                        "--activation-checkpointing", "--ema-decay", "0.9", "--structure-weight", "0.5",
                        "--intra-negatives", "0.05")
    assert rc == 0, stderr
    summary = json.loads((out / "model" / "summary.json").read_text())
    assert summary["train_config"]["structure_weight"] == 0.5
    assert summary["train_config"]["intra_negatives"] == 0.05
    assert summary["train_config"]["precision"] == precision
    assert summary["train_config"]["activation_checkpointing"] is True
    assert summary["train_config"]["compile"] is False
    assert summary["train_config"]["ema_decay"] == 0.9
    rc, _, stderr = cli("train", "--data", files["x"], "--out", files["d"] / "x2", "--precision", "fp16")
    assert rc == 2 and "invalid choice" in stderr
    # a run without the flag records the weight it resolved to (1 for the presets' SVD per-feature embedding)
    default = json.loads((run["dir"] / "model" / "summary.json").read_text())
    assert default["train_config"]["structure_weight"] == 1.0
    rc, _, stderr = cli("train", "--data", files["x"], "--out", files["d"] / "x3", "--structure-weight", "-1")
    assert rc == 1 and stderr.strip().splitlines()[-1].endswith("structure_weight must be >= 0 (0 = off; None = automatic), got -1.0")


def test_train_chunk_size_reads_on_disk_and_trains_the_same_model(files):
    runs = {}
    for tag, extra in (("mem", []), ("chunked", ["--chunk-size", "70"])):
        out = files["d"] / f"run_chunk_{tag}"
        rc, _, stderr = cli("train", "--data", files["x"], "--out", out, *train_args(), *extra)
        assert rc == 0, stderr
        runs[tag] = json.loads((out / "model" / "summary.json").read_text())
    assert runs["chunked"]["holdout_metrics"] == runs["mem"]["holdout_metrics"]
    assert runs["chunked"]["history"][-1]["loss"] == runs["mem"]["history"][-1]["loss"]
    rc, _, stderr = cli("train", "--data", files["x"], "--out", files["d"] / "run_chunk0", *train_args(),
                        "--chunk-size", "0")
    assert rc == 1 and "--chunk-size must be positive" in stderr
