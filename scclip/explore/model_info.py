"""One row of the Model page's table per model folder: what it is, what it saw and how good it is expected to be."""

from __future__ import annotations

import json
from pathlib import Path


def read_summary(directory: str | Path) -> dict:
    """The folder's ``summary.json`` (``{}`` when absent or unreadable)."""
    try:
        return json.loads((Path(directory) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def libraries_text(summary: dict) -> str:
    """Which libraries (``obs['batch']`` values) trained the model, and which it never saw, in words.

    Release folders written by ``scripts/release_pretrained.py --data`` record ``libraries_seen`` and
    ``libraries_held_out``; other runs only record their ``holdout`` (``{'key', 'values'}``).
    """
    seen, held = summary.get("libraries_seen"), summary.get("libraries_held_out")
    if held is None:
        held = (summary.get("holdout") or {}).get("values") or []
    if seen:
        text = _span(seen)
        return f"{text}; never saw {_span(held)}" if held else f"{text} (all; none held out)"
    return f"all but {_span(held)}" if held else "—"


def _span(libraries: list[str]) -> str:
    """``09A-09H`` for a run of consecutive library names with a shared prefix, else a comma list."""
    libs = sorted(libraries)
    if len(libs) > 2 and len({x[:-1] for x in libs}) == 1:
        ends = [ord(x[-1]) for x in libs]
        if ends == list(range(ends[0], ends[0] + len(ends))):
            return f"{libs[0]}-{libs[-1]}"
    return ", ".join(libs)


def cv_foscttm(summary: dict) -> float | None:
    """The recipe's cross-validation estimate of FOSCTTM on new libraries (``summary['cv_estimate']``), if any."""
    est = summary.get("cv_estimate") or {}
    row = next(iter(est.values()), None)  # the release script writes the model's own recipe first
    return None if row is None else float(row["foscttm"][0])


def model_row(directory: str | Path, *, kind: str, in_use: bool) -> dict:
    """The Model page's row of one model folder (a release folder or a run's ``model`` folder)."""
    d = Path(directory)
    s = read_summary(d)
    try:
        genome = json.loads((d / "config.json").read_text()).get("feature_space", {}).get("genome")
    except (OSError, json.JSONDecodeError):
        genome = None
    return {
        "": "●" if in_use else "",
        "model": d.parent.name if d.name == "model" else d.name,
        "source": kind,
        "genome": genome,
        "trained on": Path(str(s.get("data"))).name if s.get("data") else "—",
        "libraries": libraries_text(s),
        "cells": s.get("n_train_cells"),
        "val FOSCTTM": (s.get("validation") or {}).get("foscttm"),
        "held-out FOSCTTM": (s.get("holdout_metrics") or {}).get("foscttm"),
        "CV FOSCTTM": cv_foscttm(s),
    }
