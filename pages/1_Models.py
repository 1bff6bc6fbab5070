"""Models page: the model card of every installed model (pretrained/ and $SCCLIP_PRETRAINED_DIR)."""

from __future__ import annotations

import streamlit as st

from scclip.pretrained import list_pretrained, resolve_model_dir

st.title("Models")
names = list_pretrained()
if not names:
    st.info("No model installed. Train one: `scclip train --data FILE --out runs/NAME`, then load it with "
            "`--model runs/NAME`, or copy `runs/NAME/model` into `pretrained/NAME`.")
for name in names:
    card = resolve_model_dir(name) / "README.md"
    with st.expander(name, expanded=len(names) == 1):
        st.markdown(card.read_text() if card.is_file() else "_no model card_")
