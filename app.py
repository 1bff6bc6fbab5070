"""scCLIP Explorer — Streamlit entry page (``streamlit run app.py``).

The app is a thin layer over the ``scclip`` library. This first page lists the available models and embeds
a dataset from a server-side path; the interactive explorer pages live in ``pages/``.
"""

from __future__ import annotations

import streamlit as st

from scclip.pretrained import list_pretrained

st.set_page_config(page_title="scCLIP Explorer", layout="wide")
st.title("scCLIP Explorer")
st.write(
    "One embedding space for scRNA-seq and scATAC-seq cells: genome-sorted patch Transformers trained with a "
    "CLIP loss. Train with `scclip train`, embed with `scclip embed`, evaluate with `scclip evaluate`."
)
models = list_pretrained()
st.subheader("Pretrained models")
if models:
    st.write(", ".join(f"`{m}`" for m in models))
else:
    st.info("No pretrained model is installed yet: train one with `scclip train --data FILE --out runs/NAME`.")
