"""The cross-validation protocol of ``benchmarks/cv.py`` (issue 15): folds, the fine-type frequency limit, the
seed ensemble and the aggregation into per-fold means (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
cv = pytest.importorskip("cv")


def test_five_folds_of_two_libraries_cover_each_library_once():
    libs = [lib for fold in cv.FOLDS for lib in fold]
    assert len(cv.FOLDS) == 5 and all(len(f) == 2 for f in cv.FOLDS)
    assert sorted(libs) == sorted(cv.LIBRARIES) and len(set(libs)) == 10


def test_fine_type_limit_is_the_expected_foscttm_of_a_perfect_type_classifier():
    labels = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    n = len(labels)
    # a perfect classifier ranks the other types below the partner; within the type, ties at random: each of
    # the n_t - 1 same-type cells is closer than the partner with probability 1/2
    expected = np.mean([(np.sum(labels == t) - 1) / 2 / (n - 1) for t in labels])
    assert cv.fine_type_limit(labels) == pytest.approx(expected)
    assert cv.fine_type_limit(np.arange(10)) == 0.0  # every cell its own type
    assert cv.fine_type_limit(np.zeros(10)) == pytest.approx(0.5)  # one type: chance


def test_seed_ensemble_cosine_is_the_mean_of_the_models_cosines():
    rng = np.random.default_rng(0)
    pairs = [(rng.normal(size=(6, 4)), rng.normal(size=(6, 4))) for _ in range(3)]
    r, a = cv.seed_ensemble(pairs)

    def cos(x, y):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T

    np.testing.assert_allclose(r @ a.T, np.mean([cos(x, y) for x, y in pairs], axis=0), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0)


def test_rows_average_seeds_within_a_fold_and_keep_folds_apart():
    score = dict.fromkeys(cv.COLUMNS, 0.0)
    records = {
        "scCLIP x|09A,09B|0": {"joint": {**score, "foscttm": 0.08}, "raw": {**score, "foscttm": 0.09}},
        "scCLIP x|09A,09B|1": {"joint": {**score, "foscttm": 0.10}, "raw": {**score, "foscttm": 0.11}},
        "scCLIP x|09C,09D|0": {"joint": {**score, "foscttm": 0.07}, "raw": {**score, "foscttm": 0.07}},
        "contrastive MLP|09A,09B|0": {"joint": {**score, "foscttm": 0.085}},
    }
    table = cv.rows(records)
    assert table["scCLIP x"]["09A,09B"]["foscttm"] == pytest.approx(0.09)
    assert table["scCLIP x (raw)"]["09A,09B"]["foscttm"] == pytest.approx(0.10)
    assert table["scCLIP x"]["09C,09D"]["foscttm"] == pytest.approx(0.07)
    assert set(table) == {"scCLIP x", "scCLIP x (raw)", "contrastive MLP"}  # baselines have no raw row
