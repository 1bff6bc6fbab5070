"""Data: demo datasets, uploads and server-side files, with a validation summary against the selected model."""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from scclip import explore
from scclip.errors import ScclipError
from webapp import common

common.ensure_app()
ss = st.session_state
common.page_header(
    "Data",
    "Choose the cells to embed: a demo dataset, your own files, or a file on the server. Nothing runs until "
    "you open Explore; first check the summary below.",
)
model = common.current_model()
data = common.current_data(model)

# state-tracked tabs: the rerun that follows an upload keeps "Upload files" open (untracked tabs reset to the first)
tab_demo, tab_upload, tab_path = st.tabs(
    ["Demo datasets", "Upload files", "Server path"], key="data_source_tab", on_change="rerun"
)
with tab_demo:
    demos = explore.list_demos()
    usable = [d for d in demos if d.available]
    current = data.get("demo") if data else None
    keys = [d.key for d in usable]
    choice = st.radio(
        "Demo dataset",
        keys,
        index=keys.index(current) if current in keys else 0,
        format_func=lambda k: next(d.label for d in usable if d.key == k),
        key="demo_choice",
    )
    st.caption(next(d.description for d in usable if d.key == choice))
    missing = [d for d in demos if not d.available]
    if missing:
        st.caption(f"Not available here: {', '.join(d.label for d in missing)} — {missing[0].reason}.")
    if st.button("Use this demo dataset", type="primary", key="demo_load", icon=":material/check:"):
        try:
            common.load_demo_into_session(choice, model)
            st.rerun()
        except ScclipError as err:
            common.show_error(err, "Demo dataset")

with tab_upload:
    st.markdown(
        "Upload **one** multimodal file (`.h5mu`, Cell Ranger ARC `filtered_feature_bc_matrix.h5`), or **one RNA "
        "and one ATAC** file (`.h5ad`, 10x `.h5`, 10x `.tar.gz`), or an RNA file plus a 10x "
        "`fragments.tsv.gz` (counted onto the model's ATAC features)."
    )
    files = st.file_uploader(
        "Files",
        type=["h5mu", "h5ad", "h5", "gz", "tgz"],
        accept_multiple_files=True,
        key="upload_files",
    )
    st.caption(
        f"Up to {explore.max_upload_bytes() / 1024**2:,.0f} MB in all; larger files: use the **Server path** tab. "
        "Uploads are read in a private temporary folder that is deleted right after."
    )
    pairing = st.segmented_control(
        "RNA and ATAC from two files are…",
        ["detect from barcodes", "paired (same cells)", "unpaired (different cells)"],
        default="detect from barcodes",
        key="upload_pairing",
    )
    if st.button("Read uploaded files", type="primary", disabled=not files, key="upload_load"):
        paired = {"paired (same cells)": True, "unpaired (different cells)": False}.get(pairing or "")
        try:
            with st.spinner("Reading…"):  # a private temporary folder, deleted once read
                mdata, notes = explore.read_uploads(
                    [(f.name, f.getvalue()) for f in files],
                    model=model["model"] if model else None,
                    paired=paired,
                )
            bad = {
                n[len(explore.SKIPPED_NOTE) :].split(":", 1)[0]
                for n in notes
                if n.startswith(explore.SKIPPED_NOTE)
            }
            label = " + ".join(f.name for f in files if f.name not in bad)
            fp = hashlib.blake2b(b"".join(f.getvalue()[: 1 << 20] for f in files), digest_size=6).hexdigest()
            common.accept_data(mdata, model, label=label, source=f"upload {fp}", notes=notes)
            st.rerun()
        except ScclipError as err:
            common.show_error(err, "Upload")
        except Exception as err:
            common.show_error(
                ScclipError(f"could not read the upload ({type(err).__name__}: {err})"), "Upload"
            )

with tab_path:
    st.markdown("For files too big to upload: paths on the machine running this app, one per line.")
    address = st.get_option("server.address")
    if not explore.is_loopback(address):  # a shared server: only below $SCCLIP_DATA_ROOTS
        st.caption(f"This app is reachable from the network: it reads files below {', '.join(f'`{r}`' for r in explore.data_roots())} only "
                   f"(`${explore.DATA_ROOTS_ENV}`).")  # fmt: skip
    text = st.text_area(
        "Server paths",
        key="server_paths",
        placeholder="/data/sample_filtered_feature_bc_matrix.h5",
        height=90,
    )
    paired_p = st.checkbox("Two files measure the same cells (paired)", value=False, key="path_paired")
    if st.button("Read from server", type="primary", key="path_load", disabled=not (text or "").strip()):
        try:
            paths = explore.check_server_paths(
                [ln for ln in text.splitlines() if ln.strip()], address=address
            )
            with st.spinner("Reading…"):
                mdata, notes = explore.read_files(paths, model=model["model"] if model else None,
                                                  paired=True if paired_p else None)  # fmt: skip
            common.accept_data(mdata, model, label=" + ".join(p.name for p in paths),
                               source="; ".join(map(str, paths)), notes=notes)  # fmt: skip
            st.rerun()
        except ScclipError as err:
            common.show_error(err, "Server path")

# --------------------------------------------------------------------------- a refused dataset
refused = ss.get("refused")
if refused is not None:
    st.divider()
    kept = ss.get("data")
    st.error(
        f"**{refused['label']}** was not loaded: {refused['advice']}"
        + (f" The session keeps its previous data: **{kept['label']}**." if kept else ""),
        icon=":material/block:",
    )
    with st.expander("What the check found"):
        for err in refused["errors"]:
            st.markdown(f"- {err}")
    b1, b2 = st.columns([1, 3])
    both = {"rna", "atac"} <= set(refused["mdata"].mod)
    if b1.button("Train a model on these data", type="primary", icon=":material/model_training:",
                 key="train_refused", disabled=not both,
                 help=None if both else "training needs paired RNA + ATAC cells"):  # fmt: skip
        ss.train_source = "refused"
        st.switch_page("webapp/pages/train.py")
    if b2.button("Dismiss", key="dismiss_refused"):
        ss.pop("refused", None)
        st.rerun()

# --------------------------------------------------------------------------- validation summary
data = ss.get("data")
if data is None:
    st.stop()
st.divider()
st.markdown(f"### {data['label']}")
mdata = data["mdata"]
summary = explore.validation_summary(mdata, model["model"] if model else None)
pair = summary["pairing"]
c = st.columns(4)
for col, m in zip(c[:2], ("rna", "atac"), strict=True):
    row = summary["modalities"].get(m)
    col.metric(f"{explore.MODALITY_LABELS[m]} cells", "—" if row is None else f"{row['cells']:,}",
               help=None if row is None else f"{row['features']:,} features, {row['non-zeros per cell']:.0f} non-zeros per cell")  # fmt: skip
if pair is None:
    c[2].metric("Pairing", "one modality")
else:
    c[2].metric("Pairing", "paired" if pair["n_shared"] and pair["fraction_rna"] > 0.5 else "unpaired",
                help=f"{pair['n_shared']:,} barcodes occur in both modalities")  # fmt: skip
model_genome = model["model"].feature_space.genome if model else None
c[3].metric("Genome", str(summary.get("genome") or "unknown"),
            help=f"The data's assembly ({summary.get('genome_source', 'unknown')}); the model's is {model_genome}.")  # fmt: skip

if model:
    rows = []
    for m, row in summary["modalities"].items():
        cov = row.get("coverage")
        rows.append(
            {
                "modality": explore.MODALITY_LABELS[m],
                "cells": row["cells"],
                "features": row["features"],
                "non-zeros / cell": round(row["non-zeros per cell"], 1),
                "model features reached": None if cov is None else cov["frac_model_hit"],
                "your features used": None if cov is None else cov["frac_query_used"],
                "counts used": None if cov is None else cov.get("count_coverage"),
                "matched by": None
                if cov is None
                else ", ".join(f"{k} ({v:,})" for k, v in cov["matched_by"].items()),
            }
        )
    st.markdown(
        f"**Feature coverage against model `{model['name']}`** ({model['model'].feature_space.genome})"
    )
    pct = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={"model features reached": pct, "your features used": pct, "counts used": pct},
    )
for err in summary["errors"]:
    st.error(err, icon=":material/error:")
for w in summary["warnings"]:
    st.warning(w, icon=":material/warning:")
for n in data.get("notes", []):
    if n.startswith(explore.SKIPPED_NOTE):
        st.warning(f"{n[len(explore.SKIPPED_NOTE):]} — this file was left out; remove it from the upload list "
                   "(its ×) or fix it. The other files were read.", icon=":material/file_present:")  # fmt: skip
if data["source"].startswith("upload"):
    st.caption(f"Files used: {data['label']}")
obs_cols = sorted({c for row in summary["modalities"].values() for c in row["obs columns"]})
st.caption(f"Cell annotations (obs): {', '.join(obs_cols) if obs_cols else 'none'}")
if data.get("notes"):
    with st.expander("Reading notes"):
        for n in data["notes"]:
            st.markdown(f"- {n}")
if not summary["errors"]:
    st.page_link(
        "webapp/pages/explore.py", label="Embed and explore these cells", icon=":material/arrow_forward:"
    )
