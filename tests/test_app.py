"""The Streamlit entry page and the models page render without exceptions (streamlit AppTest)."""

from __future__ import annotations

from pathlib import Path

import pytest

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]


def test_entry_page_renders_and_lists_models():
    at = AppTest.from_file(str(REPO / "app.py")).run(timeout=60)
    assert not at.exception
    assert at.title[0].value == "scCLIP Explorer"
    assert any("Pretrained models" in s.value for s in at.subheader)


def test_models_page_renders(monkeypatch, tmp_path):
    monkeypatch.setenv("SCCLIP_PRETRAINED_DIR", str(tmp_path))
    at = AppTest.from_file(str(REPO / "pages" / "1_Models.py")).run(timeout=60)
    assert not at.exception
    assert at.title[0].value == "Models"
