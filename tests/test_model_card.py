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
