"""Training runs and a background training runner: a subprocess running :func:`scclip.train` that writes
``progress.json`` (started as ``python -m scclip.explore train RUN_DIR``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.explore.demos import load_demo
from scclip.explore.locations import runs_dir

#: Rough CPU training throughput (cells per second, 2 busy cores) per preset, for the time estimate.
CPU_CELLS_PER_SECOND = {"tiny": 3000.0, "default": 320.0, "paper-per-patch": 40.0, "paper": 60.0}
GPU_SPEEDUP = 15.0


#: Material icon and colour of each run status (Streamlit ships the icon font; emoji need one on the client).
RUN_STATUS_ICONS = {
    "starting": ("hourglass_top", "orange"),
    "running": ("sync", "blue"),
    "done": ("check_circle", "green"),
    "finished": ("check_circle", "green"),
    "stopped": ("stop_circle", "gray"),
    "failed": ("error", "red"),
}


def time_left(prog: dict, *, window: int = 20) -> float | None:
    """Seconds left of a running training, from the step rate of its last ``window`` step records (start-up,
    data loading and validation before them do not count); None before two step records exist."""
    steps = prog.get("steps") or []
    total = (prog.get("epochs") or 0) * (prog.get("steps_per_epoch") or 0)
    if len(steps) < 2 or not total:
        return None
    a, b = steps[-min(window, len(steps))], steps[-1]
    if b["step"] <= a["step"] or b["elapsed"] <= a["elapsed"]:
        return None
    rate = (b["step"] - a["step"]) / (b["elapsed"] - a["elapsed"])  # steps per second
    since = max(0.0, float(prog.get("elapsed", b["elapsed"])) - b["elapsed"])
    return max(0.0, (total - b["step"]) / rate - since)


def percent_tickformat(values) -> str:
    """A d3 percent format with enough decimals that ~5 ticks over ``values``' range print differently
    (``.1%`` repeats "0.7%, 0.7%" when a curve spans a few hundredths of a percent)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=float)
    span = float(v.max() - v.min()) if v.size else 0.0
    if span <= 0:
        return ".1%"
    decimals = int(np.clip(np.ceil(-np.log10(span * 100 / 5)), 0, 4))
    return f".{decimals}%"


def estimate_train_seconds(n_train_cells: int, epochs: int, preset: str, *, cuda: bool) -> float:
    rate = CPU_CELLS_PER_SECOND.get(preset, 320.0) * (GPU_SPEEDUP if cuda else 1.0)
    return n_train_cells * epochs / rate + 10.0


def list_runs(root: Path | None = None) -> list[dict]:
    """Training runs under ``runs/``: name, path, status (from ``progress.json``) and whether a model exists."""
    root = runs_dir() if root is None else root
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        prog = read_progress(d)
        has_model = (d / "model" / "config.json").is_file()
        if has_model or prog:
            out.append(
                {"name": d.name, "path": d, "model": has_model, "status": prog.get("status", "finished")}
            )
    return out


#: Lines of ``train.log`` kept in the progress of a run whose process died.
LOG_TAIL_LINES = 40
#: A run still "starting" without a pid after this many seconds never started.
START_TIMEOUT_S = 300.0


def log_tail(run_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a run's ``train.log`` ('' when there is none)."""
    try:
        with open(Path(run_dir) / "train.log", "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def read_progress(run_dir: Path) -> dict:
    """A run's ``progress.json``; a run whose process died (killed, out of memory) reads, and is saved, as
    ``failed`` with the end of its log and whether its checkpoints let it resume, never "running" forever."""
    path = Path(run_dir) / "progress.json"
    try:
        prog = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if prog.get("status") not in ("starting", "running"):
        return prog
    pid = prog.get("pid") or _worker_pid(Path(run_dir))
    prog["pid"] = pid
    never_started = pid is None and time.time() - float(prog.get("started") or time.time()) > START_TIMEOUT_S
    if (pid is not None and not _alive(pid)) or never_started:
        with contextlib.suppress(OSError, json.JSONDecodeError):  # it may have ended (and said why) meanwhile
            final = json.loads(path.read_text())
            if final.get("status") not in ("starting", "running"):
                return final
        prog["status"] = "failed"
        prog.setdefault("error", "the training process ended unexpectedly (killed, or out of memory?)")
        prog["log_tail"] = log_tail(run_dir)
        prog["resumable"] = (Path(run_dir) / "checkpoints" / "last.safetensors").is_file()
        prog["finished"] = time.time()
        with contextlib.suppress(OSError):  # say it once on disk, also for the other sessions
            _write_json(path, prog)
    return prog


def _worker_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid) -> bool:
    """Whether ``pid`` is a live (not zombie) training process of ours (a reused pid is not)."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    proc = Path(f"/proc/{int(pid)}")
    if not proc.is_dir():  # no /proc (not Linux): the signal check is all we have
        return True
    try:
        if (proc / "stat").read_text().split(")")[-1].split()[0] == "Z":  # finished, never waited for
            return False
        return b"scclip.explore" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


def start_training(run_dir: str | Path, spec: dict) -> int:
    """Start a background training process for ``spec`` in ``run_dir``; returns its pid.

    ``spec``: ``data`` (``{"demo": key}`` or ``{"path": file}``), ``preset``, ``feature_space`` (``own``,
    ``mm10``, ``hg38``), ``train_config`` (dict), ``holdout_key``, ``holdout`` (list), ``val_size``. Progress goes to ``run_dir/progress.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):  # two sessions starting the same run at once: one starts, one is told
        prog = read_progress(run_dir)
        if prog.get("status") in ("starting", "running"):
            raise ScclipError(f"a training run is already going on in {run_dir}: choose another run name")
        if (run_dir / "model" / "config.json").is_file():
            raise ScclipError(f"{run_dir} already holds a trained model: choose another run name")
        (run_dir / "STOP").unlink(missing_ok=True)
        (run_dir / "worker.pid").unlink(missing_ok=True)  # a previous worker's pid is not this one's
        _write_json(run_dir / "job.json", spec)
        _write_json(
            run_dir / "progress.json",
            {"status": "starting", "started": time.time(), "history": [], "pid": None},
        )
        with open(run_dir / "train.log", "a" if spec.get("resume") else "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scclip.explore", "train", str(run_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=os.getcwd(),
            )
        # the worker writes its pid into progress.json itself; until then worker.pid says who it is (never
        # rewrite progress.json here: the worker may already have written "running" to it)
        (run_dir / "worker.pid").write_text(str(proc.pid))
    return proc.pid


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock on ``run_dir`` (``fcntl.flock``; none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(run_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resume_training(run_dir: str | Path) -> int:
    """Continue a stopped run from its last checkpoint (same data and settings, ``job.json``); returns the pid."""
    run_dir = Path(run_dir)
    try:
        spec = json.loads((run_dir / "job.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ScclipError(f"{run_dir} has no readable job.json: it was not started by the app") from err
    if not (run_dir / "checkpoints" / "last.safetensors").is_file():
        raise ScclipError(f"{run_dir} has no checkpoint to resume from (it stopped before its first epoch)")
    return start_training(run_dir, {**spec, "resume": True})


def stop_training(run_dir: str | Path, *, kill_after: float = 0.0) -> None:
    """Ask a run to stop (it finishes the current steps, keeps its checkpoints and writes the best model)."""
    run_dir = Path(run_dir)
    (run_dir / "STOP").write_text(str(time.time()))
    if kill_after:
        time.sleep(kill_after)
        pid = read_progress(run_dir).get("pid")
        if pid and _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGTERM)


class _Stopped(Exception):
    pass


def _log(text: str) -> None:
    """One line of ``train.log`` (the worker's stdout), flushed at once so that a killed worker keeps it."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def train_main(run_dir: Path) -> int:
    """Entry point of the training subprocess (``python -m scclip.explore train RUN_DIR``)."""
    import scclip
    from scclip.io import read

    spec = json.loads((run_dir / "job.json").read_text())
    prog: dict = {
        "status": "running",
        "started": time.time(),
        "pid": os.getpid(),
        "history": [],
        "spec": spec,
    }
    _write_json(run_dir / "progress.json", prog)
    last = [0.0]

    def progress(ev: dict) -> None:
        if (run_dir / "STOP").exists():
            raise _Stopped
        now = time.time()
        prog["elapsed"] = now - prog["started"]
        prog["epochs"] = ev.get("epochs", prog.get("epochs"))
        if ev.get("event") == "step":
            prog.update(
                epoch=ev["epoch"], step=ev["step"], steps_per_epoch=ev["steps_per_epoch"], loss=ev["loss"]
            )
            prog.setdefault("steps", []).append(
                {"step": ev["step"], "loss": ev["loss"], "elapsed": prog["elapsed"]}
            )
        elif ev.get("event") == "epoch":
            _log(f"epoch {ev['epoch']}/{prog.get('epochs')}: loss {ev.get('loss')}, "
                 f"validation top-1 {ev.get('val_top1')}, FOSCTTM {ev.get('val_foscttm')}")  # fmt: skip
            prog["history"].append(
                {k: ev.get(k) for k in ("epoch", "loss", "val_foscttm", "val_top1", "elapsed", "temperature")}
            )
            prog["epoch"] = ev["epoch"]
            prog["best_epoch"] = ev.get("best_epoch")
        if ev.get("event") != "step" or now - last[0] > 1.0:
            last[0] = now
            _write_json(run_dir / "progress.json", prog)

    try:
        data = spec["data"]
        if "demo" in data:
            mdata = load_demo(data["demo"])
        else:
            mdata = read(data["path"])
        prog["n_cells"] = int(mdata["rna"].n_obs) if "rna" in mdata.mod else 0
        _log(f"training on {prog['n_cells']} cells ({data}), preset {spec.get('preset', 'default')}"
             + (", resumed from the last checkpoint" if spec.get("resume") else ""))  # fmt: skip
        scclip.train(
            mdata,
            out_dir=run_dir,
            model_config=spec.get("preset", "default"),
            train_config=spec.get("train_config", {}),
            feature_space=spec.get("feature_space", "own"),
            resume=bool(spec.get("resume")),
            holdout_key=spec.get("holdout_key") or None,
            holdout=spec.get("holdout") or (),
            val_size=spec.get("val_size", 0.1),
            progress=progress,
            data_name=data.get("label") or data.get("path") or data.get("demo"),
            command="scCLIP Explorer app",
        )
        prog["status"] = "done"
    except _Stopped:
        prog["status"] = "stopped"
        _finish_stopped(run_dir, prog)
    except Exception as err:
        prog["status"] = "failed"
        prog["error"] = f"{type(err).__name__}: {err}" if not isinstance(err, ScclipError) else str(err)
        if not isinstance(err, ScclipError):
            traceback.print_exc()
    _log(f"{prog['status']}" + (f": {prog['error']}" if prog.get("error") else ""))
    prog["finished"] = time.time()
    prog["elapsed"] = prog["finished"] - prog["started"]
    _write_json(run_dir / "progress.json", prog)
    return 0 if prog["status"] != "failed" else 1


def _finish_stopped(run_dir: Path, prog: dict) -> None:
    """A stopped run keeps its checkpoints; its best checkpoint is not a release folder (say so)."""
    prog["note"] = (
        "stopped by the user; its checkpoints are kept: Resume continues from the last one"
        if (run_dir / "checkpoints").is_dir()
        else "stopped by the user before the first epoch ended"
    )
