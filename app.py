"""scCLIP Explorer — the Streamlit app (``streamlit run app.py``).

Pages (``webapp/pages/``; the Streamlit glue they share is ``webapp/common.py``): Model, Data, Explore (joint UMAP, metrics and cross-modal matches), Zero-shot, Train.
On start the app opens Explore on a pretrained model and a demo dataset (see ``scclip.explore.default_choice``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from webapp import common  # noqa: E402

st.set_page_config(page_title="scCLIP Explorer", page_icon=":material/hub:", layout="wide")
st.markdown(
    """
    <style>
      .block-container {padding-top: 2.2rem; padding-bottom: 2rem; max-width: 1500px;}
      div[data-testid="stMetricValue"] {font-size: 1.45rem;}
      div[data-testid="stTable"] table {font-size: 0.86rem;}
      [data-testid="stAppDeployButton"] {display: none;}
    </style>
    """,
    unsafe_allow_html=True,
)
common.init_state()

PAGES = ROOT / "webapp" / "pages"  # not ./pages: Streamlit would list its files before st.navigation
nav = st.navigation(
    {
        "scCLIP Explorer": [
            st.Page(PAGES / "model.py", title="Model", icon=":material/neurology:", url_path="model"),
            st.Page(PAGES / "data.py", title="Data", icon=":material/dataset:", url_path="data"),
            st.Page(
                PAGES / "explore.py",
                title="Explore",
                icon=":material/scatter_plot:",
                url_path="explore",
                default=True,
            ),
            st.Page(
                PAGES / "zero_shot.py",
                title="Zero-shot view",
                icon=":material/travel_explore:",
                url_path="zero-shot",
            ),
            st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", url_path="train"),
        ]
    }
)
if st.session_state.get("data") is None:  # a new session: say what happens while the defaults load
    loading = st.empty()
    loading.info("Loading the model and the demo dataset…", icon=":material/hourglass_top:")
    common.preload_defaults()
    loading.empty()
common.sidebar_summary()
nav.run()
