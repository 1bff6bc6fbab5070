"""Zero-shot view: a query dataset's cells drawn over the model's reference embedding, with transferred labels."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st
import torch

from scclip import explore
from scclip.errors import ScclipError
from webapp import common

common.ensure_app()
ss = st.session_state
common.page_header(
    "Zero-shot view",
    "New cells embedded by a trained model land next to the reference cells of the same type: each query cell "
    "gets the majority cell type of its nearest reference cells, with the vote share as confidence.",
)
model, data = common.model_and_data()
summary = model["model"].summary or {}
ref_file = explore.reference_file(summary)
centroids = explore.parse_centroids(model["model"].centroids)

options = []
if ref_file is not None:
    options.append(("training", f"The model's training cells ({ref_file.name}, held-out cells excluded)"))
demo_opts = [d for d in explore.list_demos() if d.available and "unpaired" not in d.key]
if explore.reference_file(summary) is None and "snare" not in str(summary.get("data") or ""):
    demo_opts.sort(
        key=lambda d: not d.key.startswith("synthetic")
    )  # a synthetic-trained model: synthetic first
options += [(f"demo:{d.key}", f"Demo: {d.label}") for d in demo_opts]
if centroids is not None:
    options.insert(
        0 if ref_file is None else 1,
        ("centroids", f"Cell-type centroids stored with the model ({len(centroids[0])})"),
    )
c1, c2 = st.columns([2.5, 1], vertical_alignment="bottom")
ref_choice = c1.selectbox("Reference", [o for o, _ in options], format_func=dict(options).get, key="zs_ref")
st.markdown(f"Query: **{data['label']}** &nbsp;·&nbsp; model **{model['name']}**", unsafe_allow_html=True)


@st.cache_resource(show_spinner="Loading the reference…", max_entries=3)
def _reference(path: str, holdout_json: str):
    import json

    mdata = explore.load_reference(explore.Path(path), {"holdout": json.loads(holdout_json)})
    return mdata, explore.dataset_fingerprint(mdata)


def build(ref_choice: str) -> dict:
    import json

    q_emb, _ = explore.embed_cached(model["model"], data["mdata"], model_fp=model["fp"], data_fp=data["fp"])
    q_mods = [m for m in ("rna", "atac") if m in q_emb.mod]
    Zq = np.concatenate([q_emb[m].obsm[explore.EMBED_KEY] for m in q_mods]).astype(np.float32)
    q_obs = pd.concat(
        [q_emb[m].obs.assign(barcode=q_emb[m].obs_names.astype(str), dataset=f"query {explore.MODALITY_LABELS[m]}") for m in q_mods],
        ignore_index=True,
    )  # fmt: skip
    if ref_choice == "centroids":
        labels, M = centroids
        pred, conf = explore.nearest_centroid(Zq, labels, M, model["model"].temperature)
        Zr = M
        r_obs = pd.DataFrame(
            {
                "barcode": [f"centroid {x}" for x in labels],
                "dataset": "reference centroid",
                "ref_label": labels,
            }
        )
        label_col = "cell type"
        ref_count = f"{len(labels):,} cell types"
    else:
        if ref_choice == "training":
            ref, rfp = _reference(str(ref_file), json.dumps(summary.get("holdout") or {}))
        else:
            ref, rfp = common.demo_dataset(ref_choice.split(":", 1)[1], explore.synthetic_cells(summary))
        r_emb, _ = explore.embed_cached(model["model"], ref, model_fp=model["fp"], data_fp=rfp)
        r_mods = [m for m in ("rna", "atac") if m in r_emb.mod]
        ref_count = explore.cell_count_text(r_emb)
        Zr = np.concatenate([r_emb[m].obsm[explore.EMBED_KEY] for m in r_mods]).astype(np.float32)
        r_obs = pd.concat(
            [r_emb[m].obs.assign(barcode=r_emb[m].obs_names.astype(str)) for m in r_mods], ignore_index=True
        )
        label_col = next((c for c in ("cell_type", "celltype", "cell type") if c in r_obs), None)
        if label_col is None:
            raise ScclipError("the reference has no cell_type column to transfer")
        r_obs["ref_label"] = r_obs[label_col].astype(str)
        r_obs["dataset"] = "reference"
        from scclip.match import transfer_labels

        pred, conf = transfer_labels(Zr, r_obs["ref_label"].to_numpy(dtype=object), Zq, k=15)
    coords, _ = explore.umap_cached(
        np.concatenate([Zr, Zq]), key=f"zs-{model['fp']}-{data['fp']}-{ref_choice}"
    )
    q_obs["transferred"] = pred
    q_obs["confidence"] = conf.astype(float)
    if label_col in q_obs:
        q_obs["true"] = q_obs[label_col].astype(str)
    return {
        "Zr_n": len(Zr),
        "coords": coords,
        "r_obs": r_obs,
        "q_obs": q_obs,
        "label_col": label_col,
        "ref": ref_choice,
        "ref_count": ref_count,
        "query_count": explore.cell_count_text(q_emb),
    }


key = (model["fp"], data["fp"], ref_choice)
res = ss.get("zs_result") if ss.get("zs_key") == key else None
if res is None:
    go_btn = c2.button("Build the zero-shot view", type="primary", key="zs_go", icon=":material/play_arrow:")
    if not go_btn:
        st.info("Embeds the reference (cached after the first time), transfers its cell types to the query "
                "cells and computes a joint UMAP.", icon=":material/info:")  # fmt: skip
        st.stop()
    try:
        t0 = time.perf_counter()
        with (
            st.spinner("Embedding the reference and the query, transferring labels, computing the UMAP…"),
            torch.inference_mode(),
        ):
            res = build(ref_choice)
        res["seconds"] = time.perf_counter() - t0
        ss.zs_result, ss.zs_key = res, key
    except (ScclipError, *common.OOM) as err:
        common.show_error(err, "Zero-shot view")
        st.stop()

r_obs, q_obs, coords, nr = res["r_obs"], res["q_obs"], res["coords"], res["Zr_n"]
n = nr + len(q_obs)
dataset = pd.Series(
    np.concatenate([r_obs["dataset"].to_numpy(), q_obs["dataset"].to_numpy()]), dtype="category"
)
ds_colors = {"reference": "#cfcfcf", "reference centroid": "#555555", "query RNA": explore.MODALITY_COLORS["RNA"],
             "query ATAC": explore.MODALITY_COLORS["ATAC"]}  # fmt: skip
ds_colors = {k: v for k, v in ds_colors.items() if k in set(dataset)}
hover = np.concatenate(
    [
        (r_obs["barcode"] + " · reference · " + r_obs["ref_label"].astype(str)).to_numpy(),
        (
            q_obs["barcode"] + " · " + q_obs["dataset"] + "<br>transferred: " + q_obs["transferred"].astype(str)
            + " (confidence " + q_obs["confidence"].map("{:.2f}".format) + ")"
        ).to_numpy(),
    ]
)  # fmt: skip

mode = (
    st.segmented_control(
        "Colour the query cells by",
        ["transferred cell type", "confidence"],
        default="transferred cell type",
        key="zs_mode",
    )
    or "transferred cell type"
)
point_size = float(np.clip(9 - 1.3 * np.log10(max(n, 10)), 2, 7))
drawn = explore.draw_indices(n)
left, right = st.columns(2, gap="medium")
with left:
    fig = explore.umap_figure(coords, dataset, drawn, hover=hover, title="Reference and query cells", colors=ds_colors,
                              point_size=point_size, opacity=0.8)  # fmt: skip
    st.plotly_chart(fig, key="zs_ds", config={"displaylogo": False})
with right:
    if mode == "confidence":
        vals = pd.Series(np.concatenate([np.full(nr, np.nan), q_obs["confidence"].to_numpy()]))
        order = np.flatnonzero(np.arange(n) >= nr)
        fig = explore.umap_figure(coords, vals, np.intersect1d(drawn, order), hover=hover,
                                  title="Query cells by transfer confidence", point_size=point_size, colorbar_title="confidence")  # fmt: skip
        # grey reference underneath
        import plotly.graph_objects as go

        ref_d = drawn[drawn < nr]
        fig.add_trace(go.Scattergl(x=coords[ref_d, 0], y=coords[ref_d, 1], mode="markers", hoverinfo="skip", showlegend=False,
                                   marker={"size": point_size, "color": "#e3e3e3"}))  # fmt: skip
        fig.data = (fig.data[-1], *fig.data[:-1])
    else:
        lab = pd.Series(
            np.concatenate(
                [np.full(nr, "reference", dtype=object), q_obs["transferred"].to_numpy(dtype=object)]
            )
        )
        cols = explore.category_colors(
            pd.Series(
                np.concatenate(
                    [r_obs["ref_label"].astype(str).to_numpy(), q_obs["transferred"].astype(str).to_numpy()]
                )
            )
        )
        fig = explore.umap_figure(coords, lab.astype("category"), drawn, hover=hover, title="Query cells by transferred cell type",
                                  colors={"reference": "#e3e3e3", **cols}, point_size=point_size, opacity=0.85)  # fmt: skip
    st.plotly_chart(fig, key="zs_lab", config={"displaylogo": False})

m = st.columns(4)
m[0].metric("Query", res.get("query_count", f"{len(q_obs):,}"), help="A paired cell (RNA + ATAC) counts once.")
m[1].metric("Reference" if res["ref"] != "centroids" else "Centroids", res.get("ref_count", f"{nr:,}"),
            help="A paired cell (RNA + ATAC) counts once.")  # fmt: skip
m[2].metric(
    "Median confidence",
    f"{q_obs['confidence'].median():.2f}",
    help="Share of the 15 nearest reference cells voting for the label.",
)
if "true" in q_obs:
    acc = (q_obs["true"] == q_obs["transferred"].astype(str)).mean()
    m[3].metric("Agrees with the query's own labels", f"{acc:.1%}")
st.caption(f"Built in {res.get('seconds', 0):.1f} s.")

if "true" in q_obs:
    ct = pd.crosstab(q_obs["true"], q_obs["transferred"].astype(str), normalize="index")
    heat = px.imshow(
        ct,
        color_continuous_scale="Blues",
        aspect="auto",
        labels={"x": "transferred", "y": "query's own label", "color": "fraction"},
    )
    heat.update_layout(height=420, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                       title={"text": "Where each query cell type lands (row-normalised)", "font": {"size": 13}})  # fmt: skip
    st.plotly_chart(heat, key="zs_heat", config={"displaylogo": False})
st.download_button("Transferred labels (CSV)", q_obs.to_csv(index=False).encode(), file_name="scclip_zero_shot_labels.csv",
                   mime="text/csv", icon=":material/download:")  # fmt: skip
