"""`scclip match` and `scclip evaluate` on an embedded .h5mu written by `scclip embed`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import scclip
from scclip.cli import main
from scclip.datasets import synthetic_multiome


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emb")
    mdata = synthetic_multiome(200, n_genes=100, peaks_per_gene=2, seed=3)
    model = scclip.train(mdata, out_dir=tmp / "run", model_config="tiny",
                         train_config=dict(epochs=2, batch_size=64), val_size=30)
    path = tmp / "emb.h5mu"
    scclip.embed(model, mdata).write(path)
    return path


def test_evaluate_prints_the_documented_json(embedded, capsys):
    assert main(["evaluate", "--data", str(embedded), "--label-key", "cell_type"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("foscttm", "top1", "top5", "match_probability", "asw_cell_type", "mixing_entropy",
                "label_transfer_accuracy", "directions", "reasons"):
        assert key in out
    assert 0.0 <= out["foscttm"] <= 1.0
    assert out["foscttm"] == pytest.approx(
        (out["directions"]["foscttm"]["rna_to_atac"] + out["directions"]["foscttm"]["atac_to_rna"]) / 2)
    assert out["reasons"] == {}
    # the uncorrected embedding is scored alongside: the gap correction keeps FOSCTTM and raises mixing
    assert out["raw"]["key"] == "X_scclip_raw"
    assert out["raw"]["mixing_entropy"] < out["mixing_entropy"]
    assert out["raw"]["foscttm"] != out["foscttm"]
    # label metrics of both, incl. the gap-blind per-modality ASW (the RNA cells' own raw embedding is not the
    # joint one, so the values differ)
    for key in ("asw_cell_type", "asw_cell_type_rna", "asw_cell_type_atac", "label_transfer_accuracy"):
        assert 0.0 <= out[key] <= 1.0 and 0.0 <= out["raw"][key] <= 1.0
    assert out["raw"]["asw_cell_type_rna"] != out["asw_cell_type_rna"]


def test_evaluate_without_labels_says_why(embedded, capsys):
    assert main(["evaluate", "--data", str(embedded)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["asw_cell_type"] is None and "asw_cell_type" in out["reasons"]


def test_match_writes_topk_table_and_one_to_one(embedded, tmp_path, capsys):
    out = tmp_path / "matches.csv"
    assert main(["match", "--data", str(embedded), "--k", "5", "--out", str(out), "--one-to-one"]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["cell", "modality", "partner", "rank", "similarity", "true_partner_rank"]
    assert len(df) == 2 * 200 * 5 and set(df["rank"]) == {1, 2, 3, 4, 5}
    assert (df.groupby(["cell", "modality"])["similarity"].apply(lambda s: s.is_monotonic_decreasing)).all()
    pairs = pd.read_csv(tmp_path / "matches_one_to_one.csv")
    assert len(pairs) == 200 and pairs["rna"].is_unique and pairs["atac"].is_unique


def test_match_errors_are_clear(embedded, tmp_path, capsys):
    assert main(["match", "--data", str(tmp_path / "none.h5mu"), "--out", str(tmp_path / "m.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.h5mu"
    bad.write_text("not hdf5")
    assert main(["evaluate", "--data", str(bad)]) == 1
    assert "not a readable .h5mu" in capsys.readouterr().err
    assert main(["match", "--data", str(embedded), "--out", str(tmp_path / "m.txt")]) == 1
    assert ".csv" in capsys.readouterr().err


def test_evaluate_sinkhorn_reports_a_separate_matching_score(embedded, capsys):
    assert main(["evaluate", "--data", str(embedded), "--sinkhorn"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("foscttm_sinkhorn", "top1_sinkhorn", "top5_sinkhorn"):
        assert 0.0 <= out[key] <= 1.0
    assert out["foscttm_sinkhorn"] != out["foscttm"]  # its own score, next to the embedding's
    assert main(["evaluate", "--data", str(embedded)]) == 0
    assert "foscttm_sinkhorn" not in json.loads(capsys.readouterr().out)


def test_match_sinkhorn_option(embedded, tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["match", "--data", str(embedded), "--k", "3", "--out", str(out), "--sinkhorn", "--one-to-one"]) == 0
    assert json.loads(capsys.readouterr().out)["sinkhorn"] is True
    df = pd.read_csv(out)
    assert len(df) == 2 * 200 * 3 and df["similarity"].between(-1, 1).all()
    assert len(pd.read_csv(tmp_path / "m_one_to_one.csv")) == 200
