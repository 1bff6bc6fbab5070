"""Every page of the Streamlit app renders on the default, the demo loads, embedding runs, errors are readable.

Uses ``streamlit.testing.v1.AppTest`` with a tiny model trained here (seconds) as the only pretrained model.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory, tiny_pretrained) -> Path:
    root = tmp_path_factory.mktemp("app")
    (root / "pretrained").symlink_to(tiny_pretrained, target_is_directory=True)
    return root


@pytest.fixture
def app_env(fixture_dirs, point_app_at):
    """The tiny model with cache and runs folders shared by this module's tests (one embedding for all)."""
    return point_app_at(fixture_dirs, fixture_dirs / "pretrained", "demo-tiny")


def _app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_explore_default_embeds_and_scores(app_env):
    at = _app().run()
    _ok(at)
    assert "## Explore" in _text(at)
    assert "300 RNA + 300 ATAC cells" in _text(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["FOSCTTM"] != "—" and float(metrics["FOSCTTM"]) < 0.6
    assert "Modality mixing" in metrics
    assert at.selectbox(key="color_by").value == "cell_type"


def test_group_summary_and_one_to_one_matching(app_env):
    at = _app().run()
    at.session_state["group_cells"] = np.arange(20)
    at.run()
    _ok(at)
    assert "#### Selected group: 20 cells" in _text(at)
    at.button(key="o2o_go").click().run()
    _ok(at)
    assert {m.label: m.value for m in at.metric}["Pairs"] == "300"


@pytest.mark.parametrize("page", ["model", "data", "zero_shot", "train"])
def test_every_page_renders(app_env, page):
    at = _app().run()
    at.switch_page(f"webapp/pages/{page}.py").run()
    _ok(at)
    title = {"model": "## Model", "data": "## Data", "zero_shot": "## Zero-shot view", "train": "## Train"}[
        page
    ]
    assert title in _text(at)


def test_model_page_lists_models_and_device(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/model.py").run()
    _ok(at)
    assert any("Compute device" in i.value for i in at.info)
    assert any("demo-tiny" in str(o) for o in at.selectbox(key="model_pick").options)


def test_demo_dataset_loads_and_unpaired_explore(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/data.py").run()
    at.radio(key="demo_choice").set_value("synthetic-unpaired").run()
    at.button(key="demo_load").click().run()
    _ok(at)
    assert "simulated, unpaired" in _text(at)
    assert {m.label: m.value for m in at.metric}["Pairing"] == "unpaired"
    at.switch_page("webapp/pages/explore.py").run()
    _ok(at)
    assert "150 RNA + 150 ATAC cells" in _text(at) and "unpaired" in _text(at)
    at.button(key="tl_go").click().run()
    _ok(at)
    assert "transferred cell_type" in at.selectbox(key="color_by").options
    at.selectbox(key="color_by").set_value("transfer confidence").run()
    _ok(at)


def test_bad_upload_shows_error_not_traceback(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/data.py").run()
    at.file_uploader(key="upload_files").set_value(
        ("cells.h5ad", b"this is not an h5ad file", "application/octet-stream")
    )
    at.run()
    at.button(key="upload_load").click().run()
    assert not at.exception
    assert at.error and "cells.h5ad" in at.error[0].value
    at.file_uploader(key="upload_files").set_value(("notes.txt.gz", b"\x1f\x8b junk", "application/gzip"))
    at.run()
    at.button(key="upload_load").click().run()
    assert not at.exception and at.error


def test_bad_model_zip_and_path_show_errors(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/model.py").run()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/config.json", "{}")
        zf.writestr("model/evil.py", "import os")
    at.file_uploader(key="model_zip").set_value(("model.zip", buf.getvalue(), "application/zip"))
    at.run()
    at.button(key="model_zip_load").click().run()
    assert not at.exception and at.error and "evil.py" in at.error[0].value
    at.text_input(key="model_path").input("/nonexistent/model").run()
    at.button(key="model_path_load").click().run()
    assert not at.exception and any("no scCLIP model" in e.value for e in at.error)


def test_barcode_search_lists_library_partners(app_env):
    at = _app().run()
    at.text_input(key="barcode_search").input("cell00042").run()
    _ok(at)
    assert "Selected cell **`cell00042`** (RNA)" in _text(at)
    table = at.table[0].value
    model = scclip.load_pretrained(app_env / "pretrained" / "demo-tiny")
    emb = scclip.embed(model, synthetic_multiome(n_cells=300, seed=0))
    joint = explore.joint_from_embedded(emb)
    expected = explore.partners_table(joint, 42, k=10)
    assert table["barcode"].tolist() == expected["barcode"].tolist()
    assert any(m.label == "Rank of the true partner" for m in at.metric)
    at.text_input(key="barcode_search").input("no-such-cell").run()
    assert not at.exception and "No cell with barcode" in "\n".join(c.value for c in at.caption)


def test_zero_shot_view_builds(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/zero_shot.py").run()
    at.selectbox(key="zs_ref").set_value("demo:synthetic").run()
    at.button(key="zs_go").click().run()
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Query"] == "300 cells (RNA + ATAC)"  # a paired cell counts once (not 600 profiles)
    assert metrics["Reference"].endswith("cells (RNA + ATAC)")
    assert float(metrics["Agrees with the query's own labels"].rstrip("%")) > 20


def test_train_page_estimate_and_start(app_env):
    at = _app().run()
    at.switch_page("webapp/pages/train.py").run()
    _ok(at)
    at.selectbox(key="train_preset").set_value("tiny").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.text_input(key="train_name").input("apptest").run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert at.selectbox(key="train_view").value == "apptest"  # the Run panel shows the run just started
    assert not any("emoji" in m.value for m in at.markdown)
    run = app_env / "runs" / "apptest"
    assert (run / "job.json").is_file()
    deadline = time.time() + 120  # let the background process finish before the fixture folder goes
    while time.time() < deadline and explore.read_progress(run).get("status") in ("starting", "running"):
        time.sleep(0.5)
    assert explore.read_progress(run)["status"] == "done"
    assert np.isfinite(explore.estimate_train_seconds(1000, 1, "tiny", cuda=False))


def test_model_folder_field_reads_only_below_the_roots_on_a_shared_server(app_env, monkeypatch, tmp_path):
    from streamlit import config

    monkeypatch.setenv("SCCLIP_DATA_ROOTS", str(tmp_path / "allowed"))
    before = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")  # reachable from the network
        at = _app().run()
        at.switch_page("webapp/pages/model.py").run()
        at.text_input(key="model_path").input("/etc").run()
        at.button(key="model_path_load").click().run()
        assert not at.exception
        assert any("outside the folders this shared server may read" in e.value for e in at.error)
        at.text_input(key="model_path").input("demo-synthetic").run()  # shipped names stay allowed
        at.button(key="model_path_load").click().run()
        assert not at.exception and not at.error
    finally:
        config.set_option("server.address", before)


def test_the_readme_command_serves_on_loopback_without_usage_statistics():
    import tomllib

    from scclip import explore

    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert explore.is_loopback(cfg["server"]["address"])  # the server-path field stays unrestricted locally
    assert cfg["browser"]["gatherUsageStats"] is False  # no network at run time
