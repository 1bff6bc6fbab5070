"""The model card a training run writes (issue 16: it was titled "model", suggested load_pretrained('model'),
repeated "Intended use and limits" and showed raw JSON)."""

from __future__ import annotations

import scclip
from scclip.pretrained import render_model_card


def test_a_run_s_card_is_named_after_the_run_and_loads_as_written(tiny_pretrained, tmp_path):
    model = scclip.load_pretrained(tiny_pretrained / "demo-tiny")
    out = model.save_pretrained(tmp_path / "my-run" / "model")
    card = (out / "README.md").read_text()
    assert card.startswith("# scCLIP model `my-run`")
    ref = str(tmp_path / "my-run")
    assert f"scclip.load_pretrained('{ref}')" in card
    assert scclip.load_pretrained(ref).name  # the suggested call works
    assert card.count("## Intended use and limits") == 1
    assert "```json" not in card and "| d_model |" in card and "| learned temperature |" in card


def test_notes_with_their_own_intended_use_replace_the_generic_one(tiny_pretrained):
    model = scclip.load_pretrained(tiny_pretrained / "demo-tiny")
    notes = "## Intended use and limits\nMouse cortex only.\n"
    card = render_model_card(model, name="x", notes=notes)
    assert card.count("## Intended use and limits") == 1 and "Mouse cortex only." in card
    plain = render_model_card(model, name="x")
    assert plain.count("## Intended use and limits") == 1 and "same species, tissue and assay" in plain


def test_the_shipped_cards_have_one_intended_use_section_and_no_json():
    from pathlib import Path

    for card in (Path(__file__).resolve().parents[1] / "pretrained").glob("*/README.md"):
        text = card.read_text()
        assert text.count("## Intended use and limits") == 1, card
        assert "```json" not in text, card


def test_model_rows_say_which_libraries_a_model_saw(tmp_path):
    import json

    from scclip import explore

    release = tmp_path / "all10"
    release.mkdir()
    libs = [f"09{c}" for c in "ABCDEFGHIJ"]
    cv = {"scCLIP default + feature path": {"foscttm": [0.077, 0.005, 5]}}
    (release / "summary.json").write_text(
        json.dumps({"libraries_seen": libs, "libraries_held_out": [], "cv_estimate": cv})
    )
    row = explore.model_row(release, kind="pretrained", in_use=True)
    assert row["libraries"] == "09A-09J (all; none held out)"
    assert row["CV FOSCTTM"] == 0.077 and row[""] == "●"
    run = tmp_path / "run" / "model"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"holdout": {"key": "batch", "values": ["09I", "09J"]}}))
    row = explore.model_row(run, kind="trained run", in_use=False)
    assert row["model"] == "run" and row["libraries"] == "all but 09I, 09J" and row["CV FOSCTTM"] is None
    assert explore.libraries_text({"libraries_seen": libs[:8], "libraries_held_out": libs[8:]}) == (
        "09A-09H; never saw 09I, 09J"
    )
    assert explore.libraries_text({"libraries_seen": ["b1", "c7"]}) == "b1, c7 (all; none held out)"
    assert explore.libraries_text({}) == "—"


def test_release_cards_state_the_libraries_and_the_cv_estimate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pretrained"
    for name in ("mouse-cortex-snareseq", "mouse-cortex-snareseq-heldout-09IJ"):
        text = (root / name / "README.md").read_text()
        assert "## Libraries seen" in text and "## Expected quality on new libraries" in text, name
    assert "no held-out library is left" in (root / "mouse-cortex-snareseq" / "README.md").read_text()
    assert (
        "never seen in training or early stopping: 09I, 09J"
        in (root / "mouse-cortex-snareseq-heldout-09IJ" / "README.md").read_text()
    )
