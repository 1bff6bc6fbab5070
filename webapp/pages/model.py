"""Model: pretrained models and trained runs with their model cards; load a folder from the server or a zip."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from scclip import explore
from scclip.errors import ScclipError
from scclip.pretrained import list_pretrained, resolve_model_dir
from webapp import common

common.ensure_app()
ss = st.session_state
common.page_header("Model", "The model that embeds your cells. Pretrained models and your own training runs.")
st.info(f"Compute device: **{explore.device_description()}**", icon=":material/memory:")


entries = []
for name in list_pretrained():
    try:
        entries.append({"ref": name, "dir": resolve_model_dir(name), "kind": "pretrained"})
    except ScclipError:
        continue
for run in explore.list_runs():
    if run["model"]:
        entries.append({"ref": str(run["path"]), "dir": run["path"] / "model", "kind": "trained run"})
custom = ss.get("custom_models", [])
for ref in custom:
    if all(e["ref"] != ref for e in entries):
        entries.append({"ref": ref, "dir": Path(ref), "kind": "loaded folder"})

if not entries:
    st.warning(
        "No model found. Train one on the **Train** page or load a folder below.", icon=":material/warning:"
    )
else:
    rows = [
        explore.model_row(e["dir"], kind=e["kind"], in_use=e["ref"] == ss.get("model_ref")) for e in entries
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "val FOSCTTM": st.column_config.NumberColumn(format="%.3f", help="lower is better; 0.5 = random"),
        "held-out FOSCTTM": st.column_config.NumberColumn(format="%.3f", help="on cells never used in training"),
        "CV FOSCTTM": st.column_config.NumberColumn(
            format="%.3f", help="expected on new libraries: mean over leave-two-libraries-out CV folds"),
        "libraries": st.column_config.TextColumn(help="libraries (obs['batch']) that trained the model"),
    })  # fmt: skip
    refs = [e["ref"] for e in entries]
    cur = ss.get("model_ref")
    pick = st.selectbox(
        "Model",
        refs,
        index=refs.index(cur) if cur in refs else 0,
        format_func=lambda r: next(
            row["model"] + f"  ({row['source']})"
            for row, e in zip(rows, entries, strict=True)
            if e["ref"] == r
        ),
        key="model_pick",
    )
    e = entries[refs.index(pick)]
    b1, b2 = st.columns([1, 4])
    if b1.button(
        "Use this model", type="primary", disabled=pick == cur, key="model_use", icon=":material/check:"
    ):
        common.set_model(pick)
        st.rerun()
    if pick == cur:
        b2.success("This is the model in use.", icon=":material/check_circle:")
    card = e["dir"] / "README.md"
    with st.expander("Model card", expanded=True):
        st.markdown(card.read_text() if card.is_file() else "_This model has no model card (README.md)._")

st.divider()
st.markdown("### Load another model folder")
lc, uc = st.columns(2, gap="large")
with lc:
    st.markdown("**From a path on the server** (a release folder or a run folder)")
    path = st.text_input("Model folder", key="model_path", placeholder="runs/my_run or /models/mouse-cortex")
    if st.button("Load folder", key="model_path_load", disabled=not path):
        try:
            ref = path.strip()
            if ref not in list_pretrained():  # a folder: off loopback only below $SCCLIP_DATA_ROOTS
                ref = str(explore.check_server_path(ref, address=st.get_option("server.address")))
            d = resolve_model_dir(ref)
            common.model_entry(str(d))  # loads and checks it
            ss.custom_models = [*custom, str(d)]
            common.set_model(str(d))
            st.rerun()
        except ScclipError as err:
            common.show_error(err, "Model folder")
with uc:
    st.markdown("**Upload a zipped release folder** (`.json`, `.safetensors`, `.tsv.gz`, `.md` files only)")
    up = st.file_uploader("Model .zip", type=["zip"], key="model_zip")
    if up is not None and st.button("Load uploaded model", key="model_zip_load"):
        blob = up.getvalue()
        digest = hashlib.sha256(blob).hexdigest()[:16]
        dest = explore.cache_dir() / "uploaded_models" / digest
        try:
            with tempfile.NamedTemporaryFile(suffix=".zip") as tmp:
                tmp.write(blob)
                tmp.flush()
                folder = explore.safe_extract_model_zip(tmp.name, dest, reuse=True)
            common.model_entry(str(folder))
            ss.custom_models = [*custom, str(folder)]
            common.set_model(str(folder))
            st.rerun()
        except ScclipError as err:
            common.show_error(err, "Model upload")
