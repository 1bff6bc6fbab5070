"""The Explore page's feature views (issue 17) through ``AppTest``: colour by a gene, differential features of a
category (a table click and chart selections need a browser: tests/test_browser_views.py), the genome view, the
``.h5ad`` downloads and a single-modality dataset. Synthetic demo data and the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 240


def _explore() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    return at.run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _plots(at: AppTest) -> list[dict]:
    import json

    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _joint(at: AppTest):
    return next(iter(at.session_state["joints"].values()))


def test_colour_by_a_gene_colours_both_umaps_with_a_colour_bar(tiny_app_env):
    at = _explore()
    _ok(at)
    joint = _joint(at)
    gene = str(joint.info["views"]["mdata"]["rna"].var_names[3])
    at.text_input(key="feature_query").input(gene).run()
    _ok(at)
    left, right = _plots(at)[:2]
    for fig, mod in ((left, "measured in RNA cells"), (right, "RNA measured, ATAC imputed")):
        marker = fig["data"][0]["marker"]
        assert marker["showscale"] is True and gene in marker["colorbar"]["title"]["text"]
        assert fig["layout"]["title"]["text"] == f"{gene}: {mod}"
    assert any("imputed, mean over their 15 nearest RNA cells" in c.value for c in at.caption)
    # the cross-modal switch off: the right-hand plot is back to the annotation colouring
    at.toggle(key="feature_cross").set_value(False).run()
    _ok(at)
    assert _plots(at)[1]["layout"]["title"]["text"].startswith("Coloured by ")
    # an unknown gene: a one-line warning with suggestions, no traceback
    at.text_input(key="feature_query").input(gene[:-1] + "x" + gene[-1]).run()
    assert not at.exception
    assert any("did you mean" in w.value for w in at.warning)


def test_differential_features_of_a_cell_type_and_the_genome_view(tiny_app_env):
    at = _explore()
    _ok(at)
    at.radio(key="diff_mode").set_value("a category value").run()
    at.selectbox(key="diff_col").set_value("cell_type").run()
    _ok(at)
    joint = _joint(at)
    (df,) = joint.info["differential"].values()
    assert len(df) == 25 and (df["log2 fold change"].head(5) > 0).all()
    assert any("Top 25 genes" in m.value for m in at.markdown)
    at.radio(key="diff_mod").set_value("ATAC").run()
    _ok(at)
    atac = [d for k, d in joint.info["differential"].items() if k[2] == "atac"]
    assert atac and "nearest gene" in atac[0].columns
    # genome view of the same cell type
    at.radio(key="attr_mode").set_value("a category value").run()
    at.selectbox(key="attr_col").set_value("cell_type").run()
    at.button(key="attr_go").click().run()
    _ok(at)
    (attr,) = joint.info["attribution"].values()
    assert set(attr["modality"]) == {"rna", "atac"}
    titles = [p["layout"]["title"]["text"] for p in _plots(at)]
    assert any(t.startswith("What makes cell_type = ") for t in titles), titles


def test_h5ad_downloads_are_offered(tiny_app_env):
    at = _explore()
    _ok(at)
    keys = {b.proto.id for b in at.get("download_button")}
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("Joint cells (.h5ad)" in x for x in labels), labels
    assert any("RNA cells with counts (.h5ad)" in x for x in labels)
    assert keys


def test_single_modality_data_show_umap_colour_and_markers(tiny_app_env):
    import mudata as md

    from scclip.datasets import synthetic_multiome
    from webapp import common

    at = AppTest.from_function(_rna_only_page, default_timeout=TIMEOUT, args=(common,))
    rna = synthetic_multiome(n_cells=120, seed=0)["rna"]
    at.session_state["preset"] = md.MuData({"rna": rna})
    at.run()
    _ok(at)
    assert any("has only RNA cells" in i.value and "need RNA and ATAC" in i.value for i in at.info)
    gene = str(rna.var_names[2])
    at.text_input(key="feature_query").input(gene).run()
    _ok(at)
    fig = _plots(at)[0]
    assert fig["layout"]["title"]["text"] == f"{gene}: measured in RNA cells"
    assert fig["data"][0]["marker"]["showscale"] is True
    at.radio(key="diff_mode").set_value("a category value").run()
    _ok(at)
    assert any("Top 25 genes" in m.value for m in at.markdown)


def _rna_only_page(common) -> None:
    import streamlit as st

    from webapp import views

    common.ensure_app()
    model = common.current_model()
    if st.session_state.get("data") is None:
        common.set_data(st.session_state["preset"], label="RNA only", source="test")
    views.single_modality(model, st.session_state.data)


def test_numeric_colours_with_missing_values_get_a_grey_step():
    import pandas as pd

    from scclip import explore
    from scclip.explore.constants import MISSING_COLOR

    v = pd.Series([0.0, 1.0, np.nan, 3.0])
    marker = explore.umap_spec(np.zeros((4, 2)), v, np.arange(4))["data"][0]["marker"]
    assert marker["colorscale"][0][1] == marker["colorscale"][1][1] == MISSING_COLOR
    assert marker["cmax"] == 3.0 and marker["color"][2] < marker["cmin"] + 1e-6 < 0.0
    assert (marker["color"][[0, 1, 3]] == [0, 1, 3]).all()
    full = explore.umap_spec(np.zeros((2, 2)), pd.Series([0.0, 1.0]), np.arange(2))["data"][0]["marker"]
    assert full["colorscale"] == "Viridis" and "cmin" not in full
