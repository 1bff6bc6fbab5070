"""The app's pure helpers (scclip.explore): selections -> cells, matches, caches, uploads, zip safety, training."""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.errors import ScclipError
from scclip.evaluate import evaluate
from scclip.match import topk_partners


@pytest.fixture(scope="module")
def tiny(tiny_pretrained) -> Path:
    """The session's tiny model (see conftest)."""
    return tiny_pretrained / "demo-tiny"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCCLIP_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="module")
def joint(tiny):
    model = scclip.load_pretrained(tiny)
    emb = scclip.embed(model, synthetic_multiome(n_cells=300, seed=0))
    j = explore.joint_from_embedded(emb)
    j.umap = np.random.default_rng(0).normal(size=(j.n, 2)).astype(np.float32)
    return j


# --------------------------------------------------------------------------- selections
def test_click_maps_through_customdata_not_point_index():
    # a click on the partners trace (curve 3): its point_index is 0 but customdata is the global index
    event = {
        "selection": {
            "points": [{"curve_number": 3, "point_index": 0, "customdata": 417}],
            "box": [],
            "lasso": [],
        }
    }
    assert explore.selection_to_cells(event).tolist() == [417]
    # customdata as a one-element list, several points, legend entries without customdata
    sel = {"points": [{"customdata": [5]}, {"customdata": 2}, {"point_index": 9}, {"customdata": 5}]}
    assert explore.selection_to_cells(sel).tolist() == [2, 5]
    assert explore.selection_to_cells(None).size == 0
    assert explore.selection_to_cells({"selection": {"points": [], "box": [], "lasso": []}}).size == 0


def test_box_and_lasso_cover_all_cells_not_only_drawn():
    coords = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [0.5, 2.5]], dtype=np.float32)
    drawn_points = [{"customdata": 1}]  # only one drawn point was reported by the browser
    box = {"selection": {"points": drawn_points, "box": [{"x": [2.5, 0.5], "y": [0.5, 2.5]}], "lasso": []}}
    assert explore.selection_to_cells(box, coords).tolist() == [1, 2, 4]
    mask = np.array([True, True, False, True, True])
    assert explore.selection_to_cells(box, coords, mask=mask).tolist() == [1, 4]
    tri = {"lasso": [{"x": [-0.5, 3.5, -0.5], "y": [0.0, 4.0, 4.0]}]}  # above the line y = x + 0.5
    assert explore.selection_to_cells(tri, coords).tolist() == [4]


def test_selection_events_set_the_query_cell_or_the_group_once():
    coords = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [0.5, 2.5]], dtype=np.float32)
    joint = SimpleNamespace(n=5, umap=coords)
    state = {"umap_mod": {"selection": {"points": [{"customdata": 3}], "box": [], "lasso": []}}}
    explore.apply_selection_events(state, joint)
    assert state["query_cell"] == 3 and "group_cells" not in state
    state["query_cell"] = None
    explore.apply_selection_events(state, joint)  # the same selection again: handled already
    assert state["query_cell"] is None
    state["umap_col"] = {
        "selection": {"points": [], "box": [{"x": [2.5, 0.5], "y": [0.5, 2.5]}], "lasso": []}
    }
    state["_visible_mask"] = np.array([True, True, False, True, True])
    explore.apply_selection_events(state, joint)
    assert state["group_cells"].tolist() == [1, 4]
    assert state["sel_sig_umap_col"] == explore.selection_signature(state["umap_col"])


def test_points_in_polygon_square_and_concave():
    xy = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [5, 5]])
    sq = explore.points_in_polygon(xy, [0, 2, 2, 0], [0, 0, 2, 2])
    assert sq.tolist() == [True, True, True, False]
    # an L shape: the corner (1.5, 1.5) is outside
    L = explore.points_in_polygon(np.array([[1.5, 1.5], [0.5, 1.5]]), [0, 2, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2])
    assert L.tolist() == [False, True]


def test_draw_indices_stable_subset():
    a = explore.draw_indices(1000, 100)
    b = explore.draw_indices(1000, 100)
    # stable, distinct; drawn in a seeded random order (not index order: see the interleaving test below)
    assert a.tolist() == b.tolist() and len(a) == 100 and len(np.unique(a)) == 100
    mask = np.zeros(1000, dtype=bool)
    mask[:50] = True
    assert sorted(explore.draw_indices(1000, 100, mask=mask).tolist()) == list(range(50))


def test_max_drawn_from_environment_and_selections_still_cover_all(monkeypatch):
    from scclip.explore.constants import MAX_DRAWN, max_drawn

    monkeypatch.delenv("SCCLIP_MAX_DRAWN", raising=False)
    assert max_drawn() == MAX_DRAWN == 150_000
    assert explore.draw_indices(200_000).size == 150_000
    monkeypatch.setenv("SCCLIP_MAX_DRAWN", " 40 ")
    assert max_drawn() == 40 and explore.draw_indices(100).size == 40  # read at call time
    coords = np.random.default_rng(0).uniform(0, 1, (100, 2)).astype(np.float32)
    box = {"box": [{"x": [-1, 2], "y": [-1, 2]}]}
    assert explore.selection_to_cells(box, coords).size == 100  # undrawn cells are selected too
    for bad in ("0", "-3", "lots", "1.5e5"):
        monkeypatch.setenv("SCCLIP_MAX_DRAWN", bad)
        with pytest.warns(UserWarning, match="SCCLIP_MAX_DRAWN.*not a positive integer.*150,000"):
            assert max_drawn() == MAX_DRAWN


# --------------------------------------------------------------------------- joint table and matches
def test_joint_table_and_partners_match_library(joint):
    assert joint.n == 600 and joint.n_rna == 300 and joint.paired
    assert (joint.partner[:300] == np.arange(300, 600)).all() and (
        joint.partner[300:] == np.arange(300)
    ).all()
    assert list(joint.obs.columns[:2]) == ["barcode", "modality"]
    for i in (0, 123, 450):
        table = explore.partners_table(joint, i, k=7)
        other = joint.other(i)
        idx, sim = topk_partners(joint.Z[i : i + 1], joint.Z[other], k=7)
        assert table["cell_index"].tolist() == other[idx[0]].tolist()
        assert np.allclose(table["similarity"], sim[0])
        assert (table["modality"] != joint.modality[i]).all()
        assert "cell_type" in table and "true partner" in table
    rank = explore.true_partner_rank(joint, 5)
    sims = explore.similarities(joint, 5)
    assert rank == 1 + int((sims > sims[5]).sum())


def test_find_group_composition_and_transfer(joint):
    assert joint.find("CELL00007").tolist() == [7, 307]
    assert joint.find("cell00007", modality="ATAC").tolist() == [307]
    cells = np.arange(0, 40)
    partners = explore.group_partners(joint, cells, k=2)
    assert partners.shape == (80,) and (partners >= 300).all()
    comp = explore.composition(joint, cells, partners, "cell_type")
    assert np.isclose(comp["selected cells"].sum(), 1) and np.isclose(comp["their partners"].sum(), 1)
    res = explore.transfer(joint, "cell_type", source="RNA", k=5)
    assert len(res) == 300 and (res["modality"] == "ATAC").all()
    assert res["confidence"].between(0, 1).all() and "correct" in res
    o2o = explore.one_to_one_table(joint)
    assert len(o2o) == 300 and "true pair" in o2o


def test_page_helpers_hover_transfer_tables_and_figures(joint):
    j = replace(joint, obs=joint.obs.copy(), info=dict(joint.info))
    assert explore.default_color_column(j.color_columns()) == "cell_type"
    assert (
        explore.hover_text(j, "cell_type")[0]
        == f"{j.obs['barcode'][0]} · RNA<br>cell_type: {j.obs['cell_type'][0]}"
    )
    res = explore.transfer(j, "cell_type", source="RNA", k=5)
    explore.store_transfer(j, "cell_type", "RNA", res)
    assert "hover" not in j.info and j.info["transfer"]["table"] is res
    assert (j.obs["transfer confidence"][:300] == 1).all() and "transferred cell_type" in j.obs
    shown = explore.partners_display(explore.partners_table(j, 0, k=3))
    assert (
        shown.index.name == "rank"
        and "cell_index" not in shown
        and shown["similarity"].map(type).eq(str).all()
    )
    assert explore.matches_csv(j, k=2).decode().count("\n") == 1 + 2 * j.n
    sims = explore.similarities(j, 0)
    hist = explore.similarity_histogram(sims, kth=0.5, partner=float(sims[0]), barcode="b", other="ATAC")
    assert hist.data[0].type == "histogram" and len(hist.layout.shapes) == 2
    comp = explore.composition(j, np.arange(10), explore.group_partners(j, np.arange(10), k=1), "cell_type")
    assert [t.name for t in explore.composition_figure(comp, "cell_type").data] == [
        "selected cells",
        "their partners",
    ]


def test_metric_panel_scores_the_joint_embedding_only(tiny):
    model = scclip.load_pretrained(tiny)
    emb = scclip.embed(model, synthetic_multiome(n_cells=200, seed=1))
    j = explore.joint_from_embedded(emb)
    j.info["embedded"] = emb
    res = explore.embedding_metrics(j, "cell_type", temperature=0.07)
    full = evaluate(emb, label_key="cell_type", temperature=0.07)
    assert "raw" not in res and "raw" in full  # the panel skips scoring X_scclip_raw
    for key in ("foscttm", "mixing_entropy", "asw_cell_type", "asw_cell_type_rna", "label_transfer_accuracy"):
        assert res[key] == pytest.approx(full[key])
    assert explore.embedding_metrics(j, "cell_type", temperature=0.07) is res  # cached per label column


def test_figure_has_one_cell_trace_with_global_customdata(joint):
    drawn = explore.draw_indices(joint.n, 200)
    fig = explore.umap_figure(
        joint.umap, joint.obs["cell_type"], drawn, highlight={"query": 3, "partners": [301, 302]}
    )
    cells = [t for t in fig.data if t.name == "cells"]
    assert len(cells) == 1 and cells[0].type == "scattergl"
    assert list(cells[0].customdata) == drawn.tolist()
    assert next(t for t in fig.data if t.name == "selected cell").customdata[0] == 3
    num = explore.umap_figure(joint.umap, pd.Series(np.arange(joint.n, dtype=float)), drawn)
    assert num.data[0].marker.showscale


def test_embedding_and_umap_cache(tiny, env):
    model = scclip.load_pretrained(tiny)
    mdata = synthetic_multiome(n_cells=120, seed=0)
    fp = explore.model_fingerprint(tiny)
    emb1, cached1 = explore.embed_cached(model, mdata, model_fp=fp)
    emb2, cached2 = explore.embed_cached(model, mdata, model_fp=fp)
    assert (cached1, cached2) == (False, True)
    for m in ("rna", "atac"):
        assert np.array_equal(emb1[m].obsm["X_scclip"], emb2[m].obsm["X_scclip"])
    Z = emb1["rna"].obsm["X_scclip"]
    u1, c1 = explore.umap_cached(Z, key="t")
    u2, c2 = explore.umap_cached(Z, key="t")
    assert (c1, c2) == (False, True) and u1.shape == (120, 2) and np.array_equal(u1, u2)
    assert explore.dataset_fingerprint(mdata) == explore.dataset_fingerprint(
        synthetic_multiome(n_cells=120, seed=0)
    )
    assert explore.dataset_fingerprint(mdata) != explore.dataset_fingerprint(
        synthetic_multiome(n_cells=121, seed=0)
    )


# --------------------------------------------------------------------------- defaults, uploads, validation
def test_default_choice(monkeypatch, tmp_path):
    monkeypatch.delenv("SCCLIP_DEFAULT_MODEL", raising=False)
    monkeypatch.setenv("SCCLIP_DATA_DIR", str(tmp_path))  # no real data here
    assert explore.default_choice(["demo-synthetic", "x"]) == ("demo-synthetic", "synthetic")
    shipped = ["mouse-cortex-snareseq", explore.SNARE_DEMO_MODEL, "demo-synthetic"]
    assert explore.default_choice(shipped) == ("demo-synthetic", "synthetic")
    (tmp_path / explore.SNARE_FILE).write_bytes(b"")
    # the default must be zero-shot: the model that never saw the default cells, not the all-library release
    assert explore.default_choice(shipped) == (explore.SNARE_DEMO_MODEL, "snare-test")
    assert explore.default_choice(["mouse-cortex-snareseq", "demo-synthetic"]) == (
        "demo-synthetic",
        "synthetic",
    )
    assert explore.default_choice([]) == (None, "synthetic")


def test_synthetic_demo_and_validation(tiny):
    model = scclip.load_pretrained(tiny)
    mdata = explore.load_demo("synthetic", model_summary=model.summary)
    assert mdata.n_obs == 300
    s = explore.validation_summary(mdata, model)
    assert s["pairing"]["n_shared"] == 300 and not s["errors"]
    assert s["modalities"]["rna"]["coverage"]["frac_model_hit"] == 1.0
    un = explore.load_demo("synthetic-unpaired", model_summary=model.summary)
    assert un["rna"].obs_names.intersection(un["atac"].obs_names).empty


def test_read_files_errors_and_pairing(tmp_path, tiny):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ScclipError, match="unsupported file"):
        explore.read_files([bad])
    broken = tmp_path / "broken.h5ad"
    broken.write_bytes(b"not hdf5 at all")
    with pytest.raises(ScclipError):
        explore.read_files([broken])
    with pytest.raises(ScclipError, match="does not exist"):
        explore.read_files([tmp_path / "missing.h5mu"])
    mdata = synthetic_multiome(n_cells=80, seed=0)
    rna, atac = tmp_path / "rna.h5ad", tmp_path / "atac.h5ad"
    mdata["rna"].write_h5ad(rna)
    mdata["atac"].write_h5ad(atac)
    got, notes = explore.read_files([rna, atac])
    assert got["rna"].n_obs == 80 and any("paired" in n for n in notes)
    got, notes = explore.read_files([rna, atac], paired=False)
    assert any("unpaired" in n for n in notes)


def test_validation_reports_wrong_genome_as_error(tiny):
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    model = scclip.load_pretrained(tiny)
    peaks = [f"chr{c}:{s}-{s + 500}" for c in (20, 21, 22) for s in range(1000, 11000, 1000)]
    atac = ad.AnnData(sp.random(5, len(peaks), density=0.3, format="csr", dtype=np.float32, random_state=0))
    atac.var_names = peaks
    s = explore.validation_summary(md.MuData({"atac": atac}), model)
    assert s["errors"] and "ATAC" in s["errors"][0]


# --------------------------------------------------------------------------- model zips
def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_model_zip_ok_and_refusals(tiny, tmp_path):
    files = {f"demo/{f.name}": f.read_bytes() for f in tiny.iterdir()}
    good = _zip(tmp_path / "good.zip", files)
    folder = explore.safe_extract_model_zip(good, tmp_path / "out")
    assert (folder / "config.json").is_file()
    scclip.load_pretrained(folder)
    cases = {
        "escape": {**files, "../evil.json": b"{}"},
        "absolute": {**files, "/etc/evil.json": b"{}"},
        "pickle": {**files, "demo/weights.pkl": b"x"},
        "script": {**files, "demo/run.py": b"print()"},
        "no config": {"demo/README.md": b"#"},
    }
    for why, members in cases.items():
        with pytest.raises(ScclipError, match=r"refused|exactly one"):
            explore.safe_extract_model_zip(_zip(tmp_path / f"{why}.zip", members), tmp_path / why)
    with pytest.raises(ScclipError, match="more than"):
        explore.safe_extract_model_zip(good, tmp_path / "big", max_bytes=100)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        info = zipfile.ZipInfo("demo/linked.json")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ScclipError, match="symbolic link"):
        explore.safe_extract_model_zip(link, tmp_path / "link")
    with pytest.raises(ScclipError, match="not a readable"):
        (tmp_path / "bad.zip").write_bytes(b"not a zip")
        explore.safe_extract_model_zip(tmp_path / "bad.zip", tmp_path / "x")


# --------------------------------------------------------------------------- background training
def test_background_training_writes_progress_and_model(env):
    run = env / "runs" / "t1"
    spec = {
        "data": {"demo": "synthetic", "label": "synthetic"},
        "preset": "tiny",
        "train_config": {"epochs": 2, "batch_size": 64, "device": "cpu"},
        "val_size": 0.2,
    }
    pid = explore.start_training(run, spec)
    assert pid > 0
    with pytest.raises(ScclipError, match="already"):
        explore.start_training(run, spec)
    deadline = time.time() + 120
    while time.time() < deadline:
        prog = explore.read_progress(run)
        if prog.get("status") in ("done", "failed", "stopped"):
            break
        time.sleep(0.5)
    assert prog["status"] == "done", (prog, (run / "train.log").read_text()[-2000:])
    assert [h["epoch"] for h in prog["history"]] == [1, 2]
    assert all("val_foscttm" in h for h in prog["history"])
    assert (run / "model" / "config.json").is_file()
    assert any(r["name"] == "t1" and r["model"] for r in explore.list_runs())
    json.loads((run / "job.json").read_text())


def test_stop_training_and_failed_run(env):
    run = env / "runs" / "t2"
    spec = {
        "data": {"demo": "synthetic"},
        "preset": "tiny",
        "train_config": {"epochs": 200, "batch_size": 32, "device": "cpu"},
    }
    explore.start_training(run, spec)
    explore.stop_training(run)
    deadline = time.time() + 120
    while time.time() < deadline and explore.read_progress(run).get("status") in ("starting", "running"):
        time.sleep(0.5)
    assert explore.read_progress(run)["status"] == "stopped"
    bad = env / "runs" / "t3"
    explore.start_training(bad, {"data": {"path": str(env / "missing.h5mu")}, "preset": "tiny"})
    deadline = time.time() + 60
    while time.time() < deadline and explore.read_progress(bad).get("status") in ("starting", "running"):
        time.sleep(0.3)
    prog = explore.read_progress(bad)
    assert prog["status"] == "failed" and "does not exist" in prog["error"]
    assert explore.estimate_train_seconds(6000, 20, "default", cuda=False) > explore.estimate_train_seconds(
        6000, 20, "default", cuda=True
    )


def test_cells_are_drawn_in_a_seeded_interleaved_order():
    """RNA cells come first in a Joint, ATAC after: drawn in index order, ATAC would paint over RNA."""
    drawn = explore.draw_indices(1000)
    assert sorted(drawn.tolist()) == list(range(1000))
    assert drawn.tolist() != list(range(1000))  # not index order
    first_half = drawn[:500]
    assert 200 < (first_half < 500).sum() < 300  # both "modalities" throughout the drawing order
    np.testing.assert_array_equal(drawn, explore.draw_indices(1000))  # the same for every colouring
    sub = explore.draw_indices(1000, 100)
    assert len(sub) == 100 and len(set(sub.tolist())) == 100


def test_a_selected_group_fades_the_other_cells_instead_of_covering_its_own(joint):
    drawn = explore.draw_indices(joint.n)
    group = np.arange(10, 40)
    fig = explore.umap_figure(joint.umap, joint.obs["cell_type"], drawn, highlight={"group": group})
    cells = next(t for t in fig.data if t.name == "cells")
    assert sorted(drawn[list(cells.selectedpoints)].tolist()) == group.tolist()
    assert cells.unselected.marker.opacity < 0.5 and cells.selected.marker.opacity == 1.0
    assert not any(t.name == "selected" for t in fig.data)  # no ring trace over the selected cells' colours
    plain = explore.umap_figure(joint.umap, joint.obs["cell_type"], drawn)
    assert next(t for t in plain.data if t.name == "cells").selectedpoints is None


def test_composition_legend_does_not_overlap_the_title():
    comp = pd.DataFrame({"selected cells": [0.5, 0.5], "their partners": [0.4, 0.6]}, index=["a", "b"])
    fig = explore.composition_figure(comp, "cell_type")
    assert fig.layout.legend.orientation == "v" and fig.layout.legend.x > 1  # beside the plot, not above it


def test_time_left_follows_the_step_rate_not_the_start_up():
    """A 12 s job: 10 s of start-up, then 10 steps/s. The old estimate (elapsed x (1 - f) / f) said ~13 s."""
    prog = {"epochs": 2, "steps_per_epoch": 10, "elapsed": 10.8,
            "steps": [{"step": 1, "elapsed": 10.0}, {"step": 5, "elapsed": 10.4}, {"step": 9, "elapsed": 10.8}]}  # fmt: skip
    assert explore.time_left(prog) == pytest.approx(1.1, abs=0.01)
    assert explore.time_left({**prog, "steps": prog["steps"][:1]}) is None  # no rate yet
    assert explore.time_left({**prog, "elapsed": 30.0}) == 0.0  # overdue: never negative


@pytest.mark.parametrize("values", [[0.0071, 0.0074, 0.0072], [0.1, 0.5], [0.30, 0.3004], [0.2, 0.2]])
def test_percent_ticks_print_distinct_labels(values):
    fmt = explore.percent_tickformat(values)
    decimals = int(fmt[1:-1])
    lo, hi = min(values), max(values)
    if hi > lo:
        ticks = np.linspace(lo, hi, 5)
        labels = [f"{t * 100:.{decimals}f}%" for t in ticks]
        assert len(set(labels)) == 5, labels
    assert 0 <= decimals <= 4


def test_run_status_icons_are_material_symbols():
    for status in ("starting", "running", "done", "stopped", "failed"):
        icon, color = explore.RUN_STATUS_ICONS[status]
        assert icon.isascii() and icon.replace("_", "").isalpha() and color.isalpha()


def test_a_stopped_run_resumes_from_its_checkpoint(env):
    """Stopped after epoch 1 of 3 (checkpoints, no model): Resume continues in the background to a model."""
    import scclip
    from scclip.datasets import synthetic_multiome

    run = env / "runs" / "resumable"
    run.mkdir(parents=True)
    data = run / "train_data.h5mu"
    synthetic_multiome(200, seed=1).write(data)
    spec = {"data": {"path": str(data)}, "preset": "tiny", "val_size": 0.2,
            "train_config": {"epochs": 3, "batch_size": 64, "device": "cpu"}}  # fmt: skip
    (run / "job.json").write_text(json.dumps(spec))

    def stop_after_first_epoch(ev):
        if ev["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scclip.train(str(data), out_dir=run, model_config="tiny", train_config=spec["train_config"],
                     val_size=0.2, progress=stop_after_first_epoch)  # fmt: skip
    (run / "progress.json").write_text(json.dumps({"status": "stopped", "history": []}))
    assert not (run / "model").exists()
    explore.resume_training(run)
    deadline = time.time() + 120
    while time.time() < deadline and explore.read_progress(run).get("status") in ("starting", "running"):
        time.sleep(0.5)
    prog = explore.read_progress(run)
    assert prog["status"] == "done", (prog, (run / "train.log").read_text()[-2000:])
    summary = json.loads((run / "model" / "summary.json").read_text())
    assert summary["epochs_run"] == 3  # epochs 2 and 3 ran after the resume
    with pytest.raises(ScclipError, match="no checkpoint"):
        (env / "runs" / "empty").mkdir()
        (env / "runs" / "empty" / "job.json").write_text(json.dumps(spec))
        explore.resume_training(env / "runs" / "empty")


def test_qc_columns_are_offered_for_colouring():
    import scclip
    from scclip.datasets import synthetic_multiome

    mdata = synthetic_multiome(120, seed=3)
    emb = scclip.embed(scclip.load_pretrained("demo-synthetic"), mdata)
    joint = explore.add_qc(explore.joint_from_embedded(emb), mdata)
    cols = joint.color_columns()
    for col in ("RNA counts", "RNA genes detected", "ATAC counts", "ATAC peaks detected"):
        assert col in cols and not joint.obs[col].isna().any()  # paired: both profiles of a cell get it
    rna_counts = np.asarray(mdata["rna"].X.sum(axis=1)).ravel()
    np.testing.assert_allclose(joint.obs["RNA counts"].to_numpy()[: joint.n_rna], rna_counts)
    np.testing.assert_allclose(joint.obs["RNA counts"].to_numpy()[joint.n_rna :], rna_counts)  # same barcodes
    detected = np.diff(mdata["atac"].X.tocsr().indptr)
    np.testing.assert_array_equal(joint.obs["ATAC peaks detected"].to_numpy()[joint.n_rna :], detected)


# --------------------------------------------------------------------------- latency (issue 16): what a rerun sends and computes
def test_umap_spec_sends_binary_arrays_and_a_highlight_leaves_the_cached_figure_alone(joint):
    import plotly.io as pio

    drawn = explore.draw_indices(joint.n)
    hover = explore.hover_text(joint, "cell_type")
    spec = explore.umap_spec(joint.umap, joint.obs["cell_type"], drawn, hover=hover)
    cells = spec["data"][0]
    assert cells["type"] == "scattergl" and len([t for t in spec["data"] if t.get("name") == "cells"]) == 1
    for key, dtype in (("x", np.float32), ("y", np.float32), ("customdata", np.int32)):
        assert isinstance(cells[key], np.ndarray) and cells[key].dtype == dtype, key
    assert cells["marker"]["color"].dtype == np.float32
    encoded = json.loads(pio.to_json(explore.prebuilt(spec).to_dict(), validate=False))
    for key in ("x", "y", "customdata"):
        assert set(encoded["data"][0][key]) == {"dtype", "bdata"}, key  # base64 typed arrays, not JSON lists
    sent = explore.prebuilt(spec).to_dict()  # what st.plotly_chart encodes: no validation, no deep copy
    assert sent["data"][0]["text"] is cells["text"] and sent["layout"] == spec["layout"]
    xs = np.frombuffer(__import__("base64").b64decode(encoded["data"][0]["x"]["bdata"]), dtype=np.float32)
    np.testing.assert_array_equal(xs, joint.umap[drawn, 0])
    before = json.dumps(spec, default=lambda a: a.tolist())
    hl = explore.with_highlight(
        spec, joint.umap, hover, {"query": 3, "partners": [301, 302], "group": [5, 6]}
    )
    assert json.dumps(spec, default=lambda a: a.tolist()) == before  # the cached figure is not changed
    names = [t.get("name") for t in hl["data"]]
    assert names.count("cells") == 1 and "selected cell" in names and "top partners" in names
    assert sorted(drawn[hl["data"][0]["selectedpoints"]].tolist()) == [5, 6]
    import plotly.graph_objects as go

    go.Figure(hl)  # every property is one plotly knows (validation raises otherwise)
    assert spec["layout"]["margin"]["autoexpand"] is False  # no second layout pass in the browser


def test_matches_from_one_product_agree_with_the_library(joint):
    for i in (0, 299, 300, 599):
        sims = explore.similarities(joint, i)
        other = joint.other(i)
        ref = (
            joint.Z[other] @ joint.Z[i] / np.linalg.norm(joint.Z[other], axis=1) / np.linalg.norm(joint.Z[i])
        )
        np.testing.assert_allclose(sims, ref, rtol=1e-4, atol=1e-5)
        table = explore.partners_table(joint, i, k=5, sims=sims)
        idx, sim = topk_partners(joint.Z[i : i + 1], joint.Z[other], k=5)
        assert table["cell_index"].tolist() == other[idx[0]].tolist()
        np.testing.assert_allclose(table["similarity"], sim[0], atol=1e-5)
    assert (
        explore.partners_table(joint, 0, k=1000)["cell_index"].size == 300
    )  # k capped at the other modality


def test_a_large_group_is_summarised_by_a_seeded_sample_of_its_cells(joint):
    cells = np.arange(0, 600)
    sample = explore.group_sample(cells, 50)
    assert sample.size == 50 and np.unique(sample).size == 50 and np.isin(sample, cells).all()
    np.testing.assert_array_equal(sample, explore.group_sample(cells, 50))  # seeded: the same each rerun
    assert explore.group_sample(cells, None).size == 600
    partners = explore.group_partners(joint, cells, k=2, max_cells=50)
    assert partners.size == 100
    full = explore.group_partners(joint, sample, k=2, max_cells=None)
    np.testing.assert_array_equal(np.sort(partners), np.sort(full))


def test_umap_above_max_fit_places_the_other_points_beside_their_neighbours():
    from scclip.explore.cache import compute_umap

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    labels = np.repeat(np.arange(3), 80)
    Z = (centres[labels] + rng.normal(size=(240, 16))).astype(np.float32)
    coords = compute_umap(Z, max_fit=60, seed=0)
    assert coords.shape == (240, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    fit = np.sort(np.random.default_rng(0).choice(240, 60, replace=False))
    rest = np.setdiff1d(np.arange(240), fit)
    # each placed point's nearest fitted point on the layout is of its own cluster
    d = ((coords[rest, None, :] - coords[None, fit, :]) ** 2).sum(-1)
    assert (labels[fit][d.argmin(1)] == labels[rest]).mean() > 0.95
    # the same call again gives the same layout (seeded sample and fit, exact neighbours)
    np.testing.assert_allclose(compute_umap(Z, max_fit=60, seed=0), coords, atol=1e-4)
