"""Shared fixtures: tiny seeded data and the real data in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCCLIP_SHARED_DIR", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SNARE_H5MU = SHARED_DATA / "chen2019_snareseq_dev.h5mu"
FORMATS = SHARED_DATA / "formats"
ANNOTATIONS = SHARED / "annotations"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (expected ../shared beside the repo)")
    return path


@pytest.fixture
def snare_h5mu() -> Path:
    return _need(SNARE_H5MU)


@pytest.fixture
def formats_dir() -> Path:
    return _need(FORMATS)


@pytest.fixture
def annotations_dir() -> Path:
    return _need(ANNOTATIONS)


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A folder holding one tiny release folder, ``demo-tiny`` (2 epochs on synthetic cells), trained once per
    session and shared read-only by the app, explore and browser tests (point ``SCCLIP_PRETRAINED_DIR`` at it)."""
    import shutil

    import scclip
    from scclip.datasets import synthetic_multiome

    root = tmp_path_factory.mktemp("tiny_model")
    scclip.train(
        synthetic_multiome(n_cells=300, seed=0),
        out_dir=root / "run",
        model_config=scclip.get_preset("tiny"),
        train_config=scclip.TrainConfig(epochs=2),
    )
    shutil.copytree(root / "run" / "model", root / "pretrained" / "demo-tiny")
    return root / "pretrained"


@pytest.fixture
def point_app_at(monkeypatch):
    """``point_app_at(root, pretrained, model)``: the app's environment for a test: models from ``pretrained``,
    ``model`` with the synthetic demo by default, cache and runs folders under ``root``; returns ``root``."""

    def point(root: Path, pretrained: Path, model: str) -> Path:
        monkeypatch.setenv("SCCLIP_PRETRAINED_DIR", str(pretrained))
        monkeypatch.setenv("SCCLIP_CACHE_DIR", str(root / "cache"))
        monkeypatch.setenv("SCCLIP_RUNS_DIR", str(root / "runs"))
        monkeypatch.setenv("SCCLIP_DEFAULT_MODEL", model)
        monkeypatch.setenv("SCCLIP_DEFAULT_DEMO", "synthetic")
        return root

    return point


@pytest.fixture
def demo_app_env(tmp_path, point_app_at) -> Path:
    """The app on a private copy of the shipped ``demo-synthetic`` model (its only pretrained model) and the
    synthetic demo data, with private cache and runs folders."""
    import shutil

    pre = tmp_path / "pretrained"
    shutil.copytree(REPO / "pretrained" / "demo-synthetic", pre / "demo-synthetic")
    return point_app_at(tmp_path, pre, "demo-synthetic")


@pytest.fixture
def tiny_app_env(tmp_path, tiny_pretrained, point_app_at) -> Path:
    """The app on the tiny model (300 + 300 synthetic cells) with private cache and runs folders."""
    return point_app_at(tmp_path, tiny_pretrained, "demo-tiny")
