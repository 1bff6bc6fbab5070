"""Explore: the joint RNA + ATAC UMAP, metrics, and cross-modal matches of a clicked cell or a selected group.

The page is a row of panels, one function each. The panels that a click, a box or a control changes (controls,
the two UMAPs, the matches of the clicked cell, the selected group) form one fragment, :func:`explorer`, so an
interaction reruns only that fragment; the quality metrics, matching / label transfer and downloads are
fragments of their own. A new panel is one more function called from :func:`main` (decorate it with
``@st.fragment`` if its widgets should not rerun the rest of the page).
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pandas as pd
import streamlit as st

from scclip import explore
from scclip.errors import ScclipError
from webapp import common, views

ss = st.session_state
CHARTS = ("umap_mod", "umap_col")
PLOT_CFG = {"displaylogo": False, "scrollZoom": True, "modeBarButtonsToRemove": ["autoScale2d"],
            "toImageButtonOptions": {"format": "png", "scale": 2, "filename": "scclip_umap"}}  # fmt: skip
MAX_FIGURES = 8  # cached figures per joint view (per colouring, point size, opacity and cells shown)
TIMING_LOG = os.environ.get("SCCLIP_EXPLORE_TIMING")  # a file: each panel's wall-clock start and end


def _mark(event: str) -> None:
    """Append ``<unix time> <event>`` to ``$SCCLIP_EXPLORE_TIMING`` (profiling the page; off by default)."""
    if TIMING_LOG:
        with open(TIMING_LOG, "a") as fh:
            fh.write(f"{time.time():.3f} {event}\n")


def main() -> None:
    _mark("page start")
    common.ensure_app()
    common.page_header(
        "Explore",
        "RNA and ATAC cells in one embedding space. Click a cell to see its closest cells in the other modality; "
        "box- or lasso-select (plot toolbar) to summarise where a group's partners land.",
    )
    model, data = common.model_and_data()
    _mark("model and data")
    if not {"rna", "atac"} <= set(data["mdata"].mod):
        _needs_both(model, data)
    joint = common.joint_for(model, data)
    if joint is None:
        st.stop()
    _mark("joint view")
    views.summary_line(joint, model, data)
    views.attach(joint, data, model)
    explorer(joint)
    metrics_panel(joint, model["model"].temperature)
    _mark("metrics")
    matching_panel(joint)
    downloads_panel(joint)
    _mark("page end")


def _needs_both(model: dict, data: dict) -> None:
    if {"rna", "atac"} & set(data["mdata"].mod):
        views.single_modality(
            model, data
        )  # its UMAP, colour by a feature, differential features, genome view
    st.page_link(
        "webapp/pages/data.py", label="Add the other modality on the Data page", icon=":material/dataset:"
    )
    st.stop()


# --------------------------------------------------------------------------- the interactive fragment
@st.fragment
def explorer(joint) -> None:
    """Controls, the two UMAPs, the clicked cell's matches and the selected group: a click, a box or a control
    reruns this fragment only."""
    _mark("explorer start")
    explore.apply_selection_events(ss, joint, CHARTS)
    view = _controls(joint)
    q = ss.get("query_cell")
    if q is not None and q >= joint.n:
        q = ss.query_cell = None
    k = int(ss.get("top_k", 10))
    sims = explore.similarities(joint, q) if q is not None else None
    table = explore.partners_table(joint, q, k=k, labels=view["labels"], sims=sims) if q is not None else None
    # the UMAPs' places come first on the page but are filled after the panels below them: a click's matches
    # table and a box's summary reach the browser before the two WebGL charts are re-created (each re-created
    # chart costs the browser ~0.5 s; Streamlit re-creates a chart whenever its figure changes)
    caption_slot, chart_slots = st.empty(), [c.empty() for c in st.columns(2, gap="medium")]
    _mark("explorer matches")
    matches_panel(joint, view, q, table, sims)
    group_panel(joint, view)
    _plots(joint, view, q, table, chart_slots, caption_slot)
    _mark("explorer plots sent")
    views.differential_panel(joint)
    views.genome_panel(joint)
    _mark("explorer end")


def _controls(joint) -> dict:
    """The colour, point size, opacity, barcode search and shown cells; returns what the plots need."""
    colour_cols = joint.color_columns()
    labels = explore.label_columns(joint)
    default_col = explore.default_color_column(colour_cols)
    c1, c2, c3, c4 = st.columns([2.2, 1.1, 1.1, 2.2], vertical_alignment="bottom")
    color_by = c1.selectbox("Colour the right-hand plot by", colour_cols, index=colour_cols.index(default_col),
                            key="color_by", help="Any cell annotation (obs column): cell type, batch, QC values, transferred labels…")  # fmt: skip
    auto_size = float(np.clip(9 - 1.3 * np.log10(max(joint.n, 10)), 2, 7))
    point_size = c2.slider("Point size", 1.0, 12.0, round(auto_size, 1), 0.5, key="point_size")
    opacity = c3.slider("Opacity", 0.1, 1.0, 0.75, 0.05, key="opacity")
    c4.text_input("Find a cell by barcode", key="barcode_search", placeholder="e.g. " + str(joint.obs["barcode"].iloc[0]),
                  on_change=views.find_barcode, args=(joint,))  # fmt: skip
    if ss.get("search_msg"):
        c4.caption(f":orange[{ss.search_msg}]")
    mods_shown = st.pills("Modalities shown", ["RNA", "ATAC"], selection_mode="multi", default=["RNA", "ATAC"],
                          key="mods_shown") or ["RNA", "ATAC"]  # fmt: skip
    visible = np.isin(joint.modality, mods_shown)
    values = joint.obs[color_by]
    if explore.is_categorical(values) and color_by != "modality":
        visible &= _shown_categories(values, color_by)
    ss._visible_mask = visible
    return {"color_by": color_by, "labels": labels, "default_col": default_col, "point_size": point_size,
            "opacity": opacity, "visible": visible, "feature": views.feature_controls(joint)}  # fmt: skip


def _shown_categories(values: pd.Series, color_by: str) -> np.ndarray:
    cats = list(explore.category_colors(values))
    if values.isna().any():
        cats.append("(missing)")
    with st.expander(f"Show / hide {color_by} categories ({len(cats)})", expanded=False):
        if len(cats) <= 40:
            shown = st.pills(color_by, cats, selection_mode="multi", default=cats, key=f"cats_{color_by}",
                             label_visibility="collapsed")  # fmt: skip
        else:
            shown = st.multiselect(
                color_by, cats, default=cats, key=f"cats_{color_by}", label_visibility="collapsed"
            )
    shown = shown if shown else cats
    vals = values.astype(object).where(values.notna(), "(missing)").astype(str).to_numpy()
    return np.isin(vals, shown)


def _base_figures(joint, view: dict) -> tuple[dict, dict, np.ndarray]:
    """The two UMAP figures without highlight, built once per (colouring, point size, opacity, cells shown)
    and kept in ``joint.info["figures"]``; and the cells drawn."""
    visible, color_by = view["visible"], view["color_by"]
    mask_fp = hashlib.blake2b(np.packbits(visible).tobytes(), digest_size=8).hexdigest()
    feature = view["feature"]
    key = (
        color_by,
        view["default_col"],
        view["point_size"],
        view["opacity"],
        mask_fp,
        feature and feature["key"],
    )
    cache = joint.info.setdefault("figures", {})
    if key not in cache:
        drawn = explore.draw_indices(joint.n, mask=visible)
        style = {"point_size": view["point_size"], "opacity": view["opacity"]}
        left, right = views.feature_figures(joint, feature, drawn, style) if feature else (None, None)
        left = left or explore.umap_spec(joint.umap, joint.obs["modality"], drawn, title="Coloured by modality (mixing)",
                                 hover=explore.hover_text(joint, view["default_col"]), **style)  # fmt: skip
        right = right or explore.umap_spec(joint.umap, joint.obs[color_by], drawn, title=f"Coloured by {color_by}",
                                  hover=explore.hover_text(joint, color_by), colorbar_title=color_by, **style)  # fmt: skip
        while len(cache) >= MAX_FIGURES:
            cache.pop(next(iter(cache)))
        cache[key] = (left, right, drawn)
    return cache[key]


def _plots(joint, view: dict, q, table, slots: list, caption_slot) -> None:
    """The two UMAPs (with the clicked cell, its partners and the selected group highlighted) into ``slots``."""
    left, right, drawn = _base_figures(joint, view)
    visible = view["visible"]
    if drawn.size < visible.sum():
        caption_slot.caption(f"Drawing a random {drawn.size:,} of {int(visible.sum()):,} cells for speed; selections and "
                   "matches use all cells.")  # fmt: skip
    group = ss.get("group_cells")
    # a click leaves the UMAPs as they are (plotly marks the clicked point itself) unless "Draw on the UMAPs"
    # is on: re-creating both WebGL charts is most of a click's time in the browser
    drawn_matches = q is not None and ss.get("matches_on_umap", False)
    highlight = {"query": q if drawn_matches else None,
                 "partners": table["cell_index"].to_numpy() if drawn_matches and table is not None else [],
                 "group": [] if group is None else group}  # fmt: skip
    hovers = (explore.hover_text(joint, view["default_col"]), explore.hover_text(joint, view["color_by"]))
    for slot, spec, hover, key in zip(slots, (left, right), hovers, CHARTS, strict=True):
        fig = explore.with_highlight(spec, joint.umap, hover, highlight, point_size=view["point_size"])
        slot.plotly_chart(explore.prebuilt(fig), key=key, on_select="rerun",
                          selection_mode=("points", "box", "lasso"), config=PLOT_CFG)  # fmt: skip


def _clear(name: str) -> None:
    ss[name] = None


def _keep_toggle(name: str) -> None:
    """Keep a toggle's value in ``ss[name]``: Streamlit forgets a widget's own key while it is not shown."""
    ss[name] = ss[f"{name}_toggle"]


def matches_panel(joint, view: dict, q, table, sims) -> None:
    """The clicked (or searched) cell's top partners in the other modality, its true partner's rank and the
    histogram of its similarities."""
    st.markdown("### Cross-modal matches")
    if q is None:
        st.info(
            "Click a cell on either plot, or find it by barcode above, to list its closest cells in the other "
            "modality. Use the **box** or **lasso** tool in the plot toolbar to select a group.",
            icon=":material/touch_app:",
        )
        return
    obs, labels = joint.obs, view["labels"]
    bc, mod = obs["barcode"].iloc[q], obs["modality"].iloc[q]
    other = "ATAC" if mod == "RNA" else "RNA"
    lab_txt = " · ".join(f"{c}: **{obs[c].iloc[q]}**" for c in labels[:3] if pd.notna(obs[c].iloc[q]))
    top = st.columns([3.3, 1.1, 1.8, 0.8], vertical_alignment="bottom")
    top[0].markdown(f"Selected cell **`{bc}`** ({mod}) {('· ' + lab_txt) if lab_txt else ''}")
    top[1].number_input("Partners (k)", 1, 100, value=int(ss.get("top_k", 10)), key="top_k")
    top[2].toggle("Draw on the UMAPs", key="matches_on_umap_toggle", value=bool(ss.get("matches_on_umap")),
                  on_change=_keep_toggle, args=("matches_on_umap",),
                  help="A star on the cell and lines to its partners on both plots. Redrawing both plots makes "
                       "each click about a second slower.")  # fmt: skip
    top[3].button("Clear", key="clear_query", on_click=_clear, args=("query_cell",))
    rank = explore.true_partner_rank(joint, q, sims) if joint.paired else None
    tcol, hcol = st.columns([1.35, 1], gap="medium")
    with tcol:
        st.markdown(f"**Top {len(table)} {other} partners** of `{bc}`")
        st.table(explore.partners_display(table))
        st.download_button("Download these matches (CSV)", lambda: table.assign(query_barcode=bc, query_modality=mod).to_csv(index=False).encode(),
                           file_name=f"scclip_matches_{bc}.csv", mime="text/csv", icon=":material/download:", on_click="ignore")  # fmt: skip
    with hcol:
        if rank is not None:
            m1, m2 = st.columns(2)
            m1.metric("Rank of the true partner", f"{rank:,} of {len(sims):,}",
                      help="1 = the same cell's other modality is its closest match.")  # fmt: skip
            m2.metric(
                "Cells closer than the partner",
                f"{(rank - 1) / max(len(sims) - 1, 1):.1%}",
                help="This cell's FOSCTTM.",
            )
        kth = float(table["similarity"].min())
        sp = (
            float(sims[int(joint.partner[q]) - explore.other_slice(joint, q).start])
            if rank is not None
            else None
        )
        hist = explore.similarity_histogram(sims, kth=kth, partner=sp, barcode=bc, other=other)
        st.plotly_chart(hist, key="sim_hist", config={"displaylogo": False})
        st.caption(f":orange[dashed line]: the {len(table)}th best match"
                   + ("; **black line**: the true partner (same cell)." if rank is not None else "."))  # fmt: skip


def group_panel(joint, view: dict) -> None:
    """A box / lasso selection: the group's label composition and where its partners land."""
    group = ss.get("group_cells")
    if group is None or not len(group):
        return
    labels = view["labels"]
    st.markdown(f"#### Selected group: {len(group):,} cells")
    g1, g2, g3 = st.columns([1.2, 1, 0.6], vertical_alignment="bottom")
    comp_label = g1.selectbox("Summarise by", labels or ["modality"], key="comp_label")
    gk = g2.number_input("Partners per cell", 1, 50, 1, key="group_k")
    g3.button("Clear group", key="clear_group", on_click=_clear, args=("group_cells",))
    partners = explore.group_partners(joint, group, k=int(gk))
    comp = explore.composition(joint, group, partners, comp_label)
    mods = pd.Series(joint.modality[group]).value_counts()
    searched = min(len(group), explore.GROUP_PARTNER_CELLS)
    st.caption(
        "Selected: " + ", ".join(f"{v:,} {m}" for m, v in mods.items())
        + f" · {len(partners):,} partners in the other modality (top {gk} each"
        + (f" of a random {searched:,} of the selected cells)." if searched < len(group) else ").")
    )  # fmt: skip
    cc1, cc2 = st.columns([1.4, 1])
    cc1.plotly_chart(
        explore.composition_figure(comp, comp_label), key="comp_bars", config={"displaylogo": False}
    )
    cc2.dataframe(comp.style.format("{:.1%}"), height=320)


# --------------------------------------------------------------------------- the other panels
@st.fragment
def metrics_panel(joint, temperature: float) -> None:
    """Embedding quality of the joint view (cached per cell-type column)."""
    labels = explore.label_columns(joint)
    default_col = explore.default_color_column(joint.color_columns())
    with st.container(border=True):
        h1, h2 = st.columns([3, 1.3], vertical_alignment="center")
        h1.markdown("**Embedding quality**")
        metric_label = h2.selectbox("Cell-type column for ASW / label transfer", [None, *labels],
                                    index=(labels.index(default_col) + 1) if default_col in labels else 0,
                                    key="metric_label", label_visibility="collapsed",
                                    format_func=lambda x: "no cell-type column" if x is None else f"cell types: {x}")  # fmt: skip
        if joint.n > 40_000 and not ss.get(f"metrics_go_{metric_label}"):
            st.button(
                "Compute metrics",
                key=f"metrics_go_{metric_label}",
                help="Large dataset: scoring takes a while.",
            )
            return
        with st.spinner("Scoring the embedding…"):
            try:
                res = common.shared_metrics(joint, metric_label, temperature)
            except ScclipError as err:
                common.show_error(err, "Metrics")
                return
        cols = st.columns(len(explore.METRIC_PANEL))
        for col, (key, name, helptext, _lower) in zip(cols, explore.METRIC_PANEL, strict=True):
            v, why = res.get(key), res.get("reasons", {}).get(key)
            col.metric(
                name,
                "—" if v is None else f"{v:.3f}",
                help=helptext + (f"\n\nNot computed: {why}" if why else ""),
            )
        if joint.paired:
            st.caption("FOSCTTM: lower is better (random = 0.5). Other scores: higher is better.")


@st.fragment
def matching_panel(joint) -> None:
    """Label transfer and one-to-one matching (mostly for unpaired data)."""
    st.markdown("### Matching and label transfer")
    st.caption(
        "For unpaired data (RNA and ATAC from different cells): pair cells one-to-one, or carry cell-type labels "
        "from one modality to the other. On paired data the true pairs show how well it works."
    )
    t1, t2 = st.tabs(["Label transfer", "One-to-one matching"])
    with t1:
        _transfer_tab(joint)
    with t2:
        _one_to_one_tab(joint)


def _transfer_tab(joint) -> None:
    labels = explore.label_columns(joint)
    if not labels:
        st.info("No categorical annotation (obs column) to transfer: load data with cell types.")
        return
    obs = joint.obs
    default_col = explore.default_color_column(joint.color_columns())
    a1, a2, a3, a4 = st.columns([1.3, 1.2, 0.8, 1], vertical_alignment="bottom")
    tl = a1.selectbox(
        "Label column",
        labels,
        index=labels.index(default_col) if default_col in labels else 0,
        key="tl_label",
    )
    sources = [m for m in ("RNA", "ATAC") if obs.loc[obs["modality"] == m, tl].notna().any()]
    src = (a2.selectbox("From", sources, format_func=lambda m: f"{m} -> {'ATAC' if m == 'RNA' else 'RNA'}", key="tl_src")
           if sources else None)  # fmt: skip
    tk = a3.number_input("Neighbours", 1, 100, 15, key="tl_k")
    if src and a4.button("Transfer labels", type="primary", key="tl_go"):
        try:
            explore.store_transfer(joint, tl, src, explore.transfer(joint, tl, source=src, k=int(tk)))
            st.rerun()  # the whole page: the new columns appear in the colour menu
        except ScclipError as err:
            common.show_error(err, "Label transfer")
    tr = joint.info.get("transfer")
    if not tr:
        return
    res = tr["table"]
    b1, b2, b3 = st.columns(3)
    b1.metric("Cells labelled", f"{len(res):,}")
    b2.metric("Median confidence", f"{res['confidence'].median():.2f}",
              help="Share of the k neighbours that voted for the winning label.")  # fmt: skip
    if "correct" in res and res["correct"].notna().any():
        b3.metric("Agreement with their own labels", f"{res['correct'].dropna().astype(float).mean():.1%}")
    st.caption(
        f"Colour the plot by **transferred {tr['label']}** or **transfer confidence** (menu above) to see them on the UMAP."
    )
    st.dataframe(res.drop(columns=["cell_index"]), height=260, hide_index=True,
                 column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0, max_value=1, format="%.2f")})  # fmt: skip
    st.download_button("Download transferred labels (CSV)", lambda: res.to_csv(index=False).encode(), on_click="ignore",
                       file_name=f"scclip_transfer_{tr['label']}.csv", mime="text/csv", icon=":material/download:")  # fmt: skip


def _one_to_one_tab(joint) -> None:
    o1, o2 = st.columns([1, 3], vertical_alignment="bottom")
    method = o1.selectbox("Method", ["auto", "hungarian", "greedy", "sinkhorn"], key="o2o_method",
                          help="auto: exact Hungarian up to 10,000 x 10,000 cells, else greedy.")  # fmt: skip
    if o2.button("Match cells one-to-one", key="o2o_go"):
        with st.spinner("Matching…"):
            try:
                joint.info["o2o"] = explore.one_to_one_table(joint, method=method)
            except (ScclipError, *common.OOM) as err:
                common.show_error(err, "One-to-one matching")
    res = joint.info.get("o2o")
    if res is None:
        return
    d1, d2, d3 = st.columns(3)
    d1.metric("Pairs", f"{len(res):,}")
    d2.metric("Mean similarity", f"{res['similarity'].mean():.3f}")
    if "true pair" in res:
        d3.metric("Pairs that are the same cell", f"{res['true pair'].mean():.1%}")
    st.caption(f"Method: {res.attrs.get('method', method)}")
    st.dataframe(res, height=260, hide_index=True)
    st.download_button("Download pairs (CSV)", lambda: res.to_csv(index=False).encode(), file_name="scclip_one_to_one.csv",
                       mime="text/csv", icon=":material/download:", on_click="ignore")  # fmt: skip


@st.fragment
def downloads_panel(joint) -> None:
    st.markdown("### Downloads")
    emb = joint.info["embedded"]
    dl1, dl2, dl3 = st.columns(3)
    dl1.download_button("Embeddings (.h5mu)", lambda: explore.h5mu_bytes(emb, joint), file_name="scclip_embedding.h5mu",
                        mime="application/octet-stream", icon=":material/download:", key="dl_h5mu", on_click="ignore",
                        help="obsm['X_scclip'] (and the raw embedding) plus obsm['X_umap'] per modality.")  # fmt: skip
    dl2.download_button("UMAP coordinates (.csv)", lambda: explore.umap_csv(joint), file_name="scclip_umap.csv",
                        mime="text/csv", icon=":material/download:", key="dl_umap", on_click="ignore")  # fmt: skip
    dl3.download_button("Top-10 matches of every cell (.csv)", lambda: explore.matches_csv(joint), file_name="scclip_matches.csv",
                        mime="text/csv", icon=":material/download:", key="dl_matches", on_click="ignore")  # fmt: skip
    views.handoff_buttons(joint)
    st.caption("Figures: use the camera icon in each plot's toolbar to save a PNG.")


main()
