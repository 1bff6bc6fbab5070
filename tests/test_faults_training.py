"""Background trainings under faults (issue 19, items 2-3): a worker killed with SIGKILL reads as failed with its
log and resumes; two trainings started at once both finish; one run started twice at once starts once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SCCLIP_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on a 2-core CI machine
    data = tmp_path / "cells.h5mu"
    synthetic_multiome(160, seed=2).write(data)
    return tmp_path


def _spec(runs: Path, epochs: int) -> dict:
    return {"data": {"path": str(runs / "cells.h5mu")}, "preset": "tiny", "val_size": 0.2,
            "train_config": {"epochs": epochs, "batch_size": 32, "device": "cpu"}}  # fmt: skip


def _wait(run: Path, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        prog = explore.read_progress(run)
        if prog.get("status") in ("done", "failed", "stopped"):
            return prog
        time.sleep(0.3)
    raise AssertionError(
        f"{run.name} still {explore.read_progress(run).get('status')}: {explore.log_tail(run)}"
    )


def test_a_worker_killed_with_sigkill_reads_as_failed_with_its_log_and_resumes(runs):
    run = runs / "runs" / "killed"
    pid = explore.start_training(run, _spec(runs, epochs=60))
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.safetensors").is_file():
        assert time.time() < deadline, explore.log_tail(run)
        assert explore.read_progress(run)["status"] in ("starting", "running"), explore.read_progress(run)
        time.sleep(0.1)
    assert explore.read_progress(run)["status"] == "running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while explore.read_progress(run)["status"] == "running":  # the pid is gone (or a zombie): failed
        assert time.time() < deadline, "a killed worker still reads as running"
        time.sleep(0.1)
    prog = explore.read_progress(run)
    assert prog["status"] == "failed" and "ended unexpectedly" in prog["error"]
    assert prog["resumable"] is True
    assert "training on 160 cells" in prog["log_tail"] and prog["log_tail"] == explore.log_tail(
        run
    )  # its log
    on_disk = json.loads((run / "progress.json").read_text())
    assert on_disk["status"] == "failed"  # saved: other sessions (and a reused pid) see it too
    assert [r["status"] for r in explore.list_runs() if r["name"] == "killed"] == ["failed"]
    assert not (run / "model").exists()
    explore.resume_training(run)  # the folder stays resumable: same data and settings, from the checkpoint
    prog = _wait(run)
    assert prog["status"] == "done", explore.log_tail(run)
    assert (run / "model" / "config.json").is_file()
    summary = json.loads((run / "model" / "summary.json").read_text())
    assert summary["epochs_run"] <= 60
    scclip.load_pretrained(run / "model")  # usable


def test_a_reused_pid_is_not_a_live_training():
    """``progress.json`` names a pid that now belongs to another process (here: pytest itself)."""
    assert not explore.training_runner._alive(os.getpid())  # the liveness rule itself
    assert not explore.training_runner._alive(2**22 + 12345)


def test_two_trainings_started_at_once_both_finish_usable(runs):
    runs_ = [runs / "runs" / "a", runs / "runs" / "b"]
    errors: list[BaseException] = []

    def start(run):
        try:
            explore.start_training(run, _spec(runs, epochs=2))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=start, args=(r,)) for r in runs_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {r["name"] for r in explore.list_runs() if r["status"] in ("starting", "running", "done")} == {
        "a",
        "b",
    }
    for run in runs_:
        prog = _wait(run)
        assert prog["status"] == "done", explore.log_tail(run)
        assert [h["epoch"] for h in prog["history"]] == [1, 2]
        model = scclip.load_pretrained(run / "model")
        assert model.summary["epochs_run"] == 2


def test_one_run_started_twice_at_once_starts_once(runs):
    run = runs / "runs" / "same"
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def start():
        barrier.wait()
        try:
            explore.start_training(run, _spec(runs, epochs=1))
            outcomes.append("started")
        except ScclipError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[1] == "started" and "already going on" in sorted(outcomes)[0], outcomes
    pid = explore.read_progress(run)["pid"]
    os.kill(pid, signal.SIGKILL)  # no need to wait for it: killed, it reads as failed at once
    deadline = time.time() + 30
    while explore.read_progress(run)["status"] != "failed":
        assert time.time() < deadline
        time.sleep(0.1)
    assert explore.read_progress(run)["resumable"] is False  # killed before its first checkpoint
