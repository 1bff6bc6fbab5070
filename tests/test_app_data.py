"""Data page defects a new user hit (issue 16): a refused dataset must not become the session's data, the
genome-mismatch message speaks plainly and offers training, the Genome tile shows the data's own assembly, and
error messages name the uploaded file rather than the server's temporary path."""

from __future__ import annotations

from pathlib import Path

import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.errors import GenomeMismatchError

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pretrained" / "demo-synthetic"


@pytest.fixture
def app_env(demo_app_env):
    return demo_app_env


def _human_file(folder: Path) -> Path:
    """Paired cells that declare GRCh38 (the mouse demo model must refuse them)."""
    mdata = synthetic_multiome(120, n_genes=60, peaks_per_gene=2, genome="hg38", seed=4)
    mdata.uns["genome"] = "GRCh38"
    path = folder / "human_pbmc.h5mu"
    mdata.write(path)
    return path


def _data_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    at.switch_page("webapp/pages/data.py").run()
    return at


def _upload(at: AppTest, *paths: Path) -> AppTest:
    at.file_uploader(key="upload_files").set_value(
        [(p.name, p.read_bytes(), "application/octet-stream") for p in paths]
    )
    at.run()
    return at.button(key="upload_load").click().run()


def test_a_refused_upload_keeps_the_previous_data_and_offers_training(app_env):
    at = _data_page()
    before = at.session_state["data"]["label"]
    _upload(at, _human_file(app_env))
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["data"]["label"] == before  # the previous data stay the session's
    errors = " ".join(e.value for e in at.error)
    assert "human_pbmc.h5mu** was not loaded" in errors
    assert "human (hg38)" in errors and "mouse (mm10)" in errors and "liftOver" not in errors
    assert f"previous data: **{before}**" in errors
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "human_pbmc" not in sidebar
    at.button(key="train_refused").click().run()  # preconfigured on the Train page
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="train_src").value == "refused"
    assert any("the bundled hg38 gene table" in i.value for i in at.info)


def test_an_accepted_upload_replaces_the_data_and_clears_a_refusal(app_env):
    at = _data_page()
    _upload(at, _human_file(app_env))
    assert at.session_state["refused"] is not None
    mouse = synthetic_multiome(100, seed=5)  # the demo model's genes
    path = app_env / "mouse_cells.h5mu"
    mouse.write(path)
    _upload(at, path)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["data"]["label"] == "mouse_cells.h5mu"
    assert "refused" not in at.session_state
    assert {m.label: m.value for m in at.metric}["Genome"] == "mm10"


def test_upload_errors_name_the_file_not_the_server_temp_path(app_env):
    bad = app_env / "bad.h5ad"
    bad.write_bytes(b"this is not an HDF5 file at all")
    at = _upload(_data_page(), bad)
    text = " ".join(e.value for e in at.error)
    assert "bad.h5ad" in text
    assert "scclip_upload_" not in text and "/tmp" not in text


def test_the_genome_tile_and_summary_use_the_data_s_own_assembly():
    model = scclip.load_pretrained(DEMO)
    human = synthetic_multiome(80, n_genes=60, peaks_per_gene=2, genome="hg38", seed=1)
    human.uns["genome"] = "GRCh38"
    summary = explore.validation_summary(human, model)
    assert summary["genome"] == "hg38" and "declared" in summary["genome_source"]
    assert summary["errors"]  # the mouse model refuses it
    refused = explore.refusal(summary, model)
    assert refused["species_mismatch"] and refused["data_genome"] == "hg38"
    # without a declaration the assembly is inferred from the features, never copied from the model
    del human.uns["genome"]
    for m in human.mod:
        human[m].uns.pop("genome", None)
    assert explore.data_genome(human) == ("hg38", "inferred from the features")
    assert explore.refusal(explore.validation_summary(synthetic_multiome(60, seed=2), model), model) is None


def test_cross_species_mismatch_message_is_plain(tiny_pretrained):
    human = synthetic_multiome(60, n_genes=40, peaks_per_gene=2, genome="hg38", seed=3)
    human["atac"].uns["genome"] = "GRCh38"  # as a 10x file declares it
    with pytest.raises(GenomeMismatchError) as err:  # ATAC: the declared assembly is the evidence
        scclip.embed(scclip.load_pretrained(DEMO), human["atac"])
    msg = str(err.value)
    assert "the data are human and the model is mouse" in msg and "liftOver" not in msg
    assert "scclip train --feature-space hg38" in msg


def test_a_bad_file_among_good_ones_is_left_out_and_named(app_env):
    """A leftover bad file in the uploader no longer makes every later read fail."""
    good = app_env / "mouse_cells.h5mu"
    synthetic_multiome(100, seed=5).write(good)
    bad = app_env / "broken.h5ad"
    bad.write_bytes(b"not an HDF5 file")
    at = _upload(_data_page(), bad, good)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["data"]["label"] == "mouse_cells.h5mu"  # read from the good file
    warnings = " ".join(w.value for w in at.warning)
    assert "broken.h5ad" in warnings and "left out" in warnings and "scclip_upload_" not in warnings
    assert any("Files used: mouse_cells.h5mu" in c.value for c in at.caption)
    at2 = _upload(_data_page(), bad)  # alone, it is still refused with its reason
    assert "is not a valid HDF5 file" in " ".join(e.value for e in at2.error)
