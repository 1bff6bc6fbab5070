"""The Explore page's feature views (issue 17): colour the UMAPs by a gene, peak, gene activity or gene set;
differential features of a selection or a category; the genome view of what drives the embedding; the
``.h5ad`` hand-off. Streamlit only: the work is done by :mod:`scclip.explore` (``FeatureStore``,
``differential_features``, ``patch_attribution``, ``h5ad_bytes``).

The explorer fragment calls :func:`feature_controls` (its result goes into the cached UMAP figures through
:func:`feature_figures`), then :func:`differential_panel` and :func:`genome_panel`; the downloads panel calls
:func:`handoff_buttons`. :func:`attach` hands them the dataset's counts and the model once per page run.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from scclip import explore
from scclip.errors import ScclipError
from webapp import common

ss = st.session_state
MAX_CACHED = 8  # feature colourings, differential tables and attributions kept per joint view
QUERY_HELP = (
    "A gene symbol or id (`Gad1`), a peak or bin (`chr1:3000000-3100000`), a gene's accessibility "
    "(`gene activity of Gad1`) or a gene list scored with scanpy (`Gad1, Gad2, Slc32a1`). Empty: colour by the "
    "annotation chosen on the left."
)


def attach(joint, data: dict, model: dict) -> None:
    """Give the views the dataset's counts (``data["mdata"]``, the cells the joint table was embedded from) and
    the model; call once per page run before the fragments."""
    joint.info["views"] = {"mdata": data["mdata"], "model_dir": str(model["dir"]), "model_fp": model["fp"]}


@st.cache_resource(show_spinner="Loading the model for gradients…", max_entries=2)
def _gradient_model(model_dir: str, fingerprint: str):
    """The model loaded outside ``torch.inference_mode`` (the shared copy's weights are inference tensors,
    which autograd refuses): the genome view's integrated gradients."""
    import scclip

    model = scclip.load_pretrained(model_dir)
    model.net.eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    return model


def feature_store(joint) -> explore.FeatureStore:
    """The dataset's :class:`~scclip.explore.FeatureStore`, built once per joint view (which is kept per model
    and dataset fingerprint in the session)."""
    if "feature_store" not in joint.info:
        mdata = joint.info["views"]["mdata"]
        joint.info["feature_store"] = explore.FeatureStore(
            mdata, joint if joint.n > joint.n_rna > 0 else None
        )
    return joint.info["feature_store"]


def _remember(cache: dict, key, value) -> None:
    while len(cache) >= MAX_CACHED:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _fingerprint(cells) -> str:
    if isinstance(cells, tuple):
        return repr(cells)
    return hashlib.blake2b(np.asarray(cells, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- 1. colour by a feature
def _colors(joint, query: str) -> explore.FeatureColors:
    store = feature_store(joint)
    spec = store.resolve(query)
    cache = joint.info.setdefault("feature_colors", {})
    if spec.key not in cache:
        first = not joint.info.get("partners_ready") and store.joint is not None
        with st.spinner(
            "Finding every cell's cross-modal partners (once per dataset)…" if first else "Colouring…"
        ):
            _remember(cache, spec.key, store.colors(spec))
        joint.info["partners_ready"] = True
    return cache[spec.key]


def feature_controls(joint) -> dict | None:
    """The colour-by-feature row; returns ``{"key", "colors", "cross", "own"}`` or None (no query / unknown)."""
    f1, f2, f3 = st.columns([2.6, 1.4, 1.6], vertical_alignment="bottom")
    query = f1.text_input("Colour both plots by a gene, peak or gene set", key="feature_query",
                          placeholder="e.g. Gad1 · chr1:3000000-3100000 · gene activity of Gad1", help=QUERY_HELP)  # fmt: skip
    both = joint.n > joint.n_rna > 0
    cross = f2.toggle("Cross-modal view", value=True, key="feature_cross", disabled=not both,
                      help="Right-hand plot: the other modality's cells get the value imputed from their "
                           "nearest cross-modal cells (mean over 15). Needs RNA and ATAC cells.")  # fmt: skip
    own = False
    if both and joint.paired:
        own = f3.toggle("Own measured value (paired)", value=False, key="feature_own", disabled=not cross,
                        help="Paired data: show each cell's own measured value in the other modality instead "
                             "of the imputed one.")  # fmt: skip
    if not query.strip():
        return None
    try:
        colors = _colors(joint, query)
    except ScclipError as err:
        st.warning(f"Colour by feature: {err}", icon=":material/search_off:")
        return None
    cross = bool(cross and both and np.isfinite(colors.imputed).any())
    shown = colors.note if cross else colors.note.split(";")[0]
    st.caption(f"Colour: {shown}" + ("; own measured values shown instead" if own and cross else "")
               + ". Grey: no value.")  # fmt: skip
    return {"key": (colors.spec.key, cross, bool(own and cross)), "colors": colors, "cross": cross,
            "own": bool(own and cross)}  # fmt: skip


def _feature_hover(joint, values: np.ndarray, name: str, drawn: np.ndarray) -> np.ndarray:
    base = explore.hover_text(joint, "modality")
    txt = pd.Series(values).map(lambda x: "no value" if np.isnan(x) else f"{x:.3g}").to_numpy(dtype=object)
    out = np.empty(joint.n, dtype=object)
    out[drawn] = base[drawn] + f"<br>{name}: " + txt[drawn]
    return out


def feature_figures(joint, feature: dict, drawn: np.ndarray, style: dict) -> tuple[dict, dict | None]:
    """The UMAP figures of a feature colouring (cached with the others by the page): left, the measured
    values (the other modality grey); right, with the cross-modal view, or None (the annotation colouring)."""
    colors = feature["colors"]
    spec, title = colors.spec, colors.title
    nan = np.isnan(colors.measured[drawn])
    drawn = np.concatenate([drawn[nan], drawn[~nan]])  # cells without a value under the others
    src = explore.MODALITY_LABELS[spec.modality]
    left = explore.umap_spec(joint.umap, pd.Series(colors.measured), drawn, colorbar_title=title,
                             title=f"{spec.name}: measured in {src} cells",
                             hover=_feature_hover(joint, colors.measured, spec.name, drawn), **style)  # fmt: skip
    if not feature["cross"]:
        return left, None
    values = colors.values(paired_own=feature["own"])
    how = "own measured" if feature["own"] else "imputed"
    other = "ATAC" if src == "RNA" else "RNA"
    right = explore.umap_spec(joint.umap, pd.Series(values), drawn, colorbar_title=title,
                              title=f"{spec.name}: {src} measured, {other} {how}",
                              hover=_feature_hover(joint, values, spec.name, drawn), **style)  # fmt: skip
    return left, right


# --------------------------------------------------------------------------- 2. differential features
def _group_choice(joint, prefix: str, cols) -> tuple[object, str] | None:
    """Group A of a panel: the box / lasso selection or a category value; (cells or (column, value), label)."""
    group = ss.get("group_cells")
    labels = explore.label_columns(joint)
    modes = ["the selected cells", "a category value"] if labels else ["the selected cells"]
    mode = cols[0].radio("Group", modes, key=f"{prefix}_mode", horizontal=True)
    if mode == "a category value":
        col = cols[1].selectbox("Column", labels, key=f"{prefix}_col")
        values = sorted(joint.obs[col].dropna().astype(str).unique())
        value = cols[2].selectbox("Value", values, key=f"{prefix}_value")
        return (col, value), f"{col} = {value}"
    if group is None or not len(group):
        st.info("Box- or lasso-select cells on a plot (toolbar), or choose **a category value**.",
                icon=":material/select:")  # fmt: skip
        return None
    return np.asarray(group), f"the {len(group):,} selected cells"


def _keep_b() -> None:
    ss.group_b_cells = None if ss.get("group_cells") is None else np.asarray(ss.group_cells).copy()


def _pick_feature(key: str, features: list[str]) -> None:
    rows = ss[key].selection.rows if ss.get(key) is not None else []
    if rows:
        ss.feature_query = features[rows[0]]


def differential_panel(joint) -> None:
    """Top genes / peaks of a selection or category against the rest or a kept second selection: table (a
    click on a row colours the UMAPs), dot plot and CSV."""
    store = feature_store(joint)
    st.markdown("### Differential features")
    d = st.columns([1.7, 1.1, 1.1, 1.3, 1.3, 0.9], vertical_alignment="bottom")
    choice = _group_choice(joint, "diff", d)
    b = ss.get("group_b_cells")
    against = ["all other cells"] + ([f"group B ({len(b):,} kept cells)"] if b is not None and len(b) else [])
    vs = d[3].selectbox("Against", against, key="diff_vs")
    mods = [explore.MODALITY_LABELS[m] for m in store.mods]
    mod = d[5].radio("Features", mods, key="diff_mod", horizontal=True) or mods[0]
    d[4].button("Keep as group B", key="diff_keep_b", on_click=_keep_b,
                disabled=ss.get("group_cells") is None, help="Compare a later selection against this one.")  # fmt: skip
    if choice is None:
        return
    group_a, label = choice
    group_b = b if vs.startswith("group B") else None
    modality = "rna" if mod == "RNA" else "atac"
    key = (_fingerprint(group_a), None if group_b is None else _fingerprint(group_b), modality)
    cache = joint.info.setdefault("differential", {})
    if key not in cache:
        try:
            with st.spinner("Testing every feature (Wilcoxon rank-sum)…"):
                _remember(
                    cache,
                    key,
                    explore.differential_features(store, group_a, group_b=group_b, modality=modality),
                )
        except ScclipError as err:
            common.show_error(err, "Differential features")
            return
    _differential_result(joint, store, cache[key], label, "diff_table_" + _fingerprint(key))


def _differential_result(joint, store, df: pd.DataFrame, label: str, table_key: str) -> None:
    modality = df.attrs["modality"]
    kind = "genes" if modality == "rna" else "peaks"
    mod = explore.MODALITY_LABELS[modality]
    st.markdown(f"**Top {len(df)} {kind}** of {label}: {df.attrs['n_a']:,} {mod} profiles tested against "
                f"{df.attrs['n_b']:,} · click a row to colour the plots by it")  # fmt: skip
    if df.attrs.get("note"):
        st.caption(f"Note: {df.attrs['note']}.")
    t, p = st.columns([1.25, 1], gap="medium")
    with t:
        fmt = {"score": "{:.1f}", "log2 fold change": "{:+.2f}", "adjusted p": "{:.1e}", "fraction A": "{:.0%}",
               "fraction B": "{:.0%}", "mean A": "{:.2f}", "mean B": "{:.2f}"}  # fmt: skip
        pick = functools.partial(_pick_feature, table_key, df["feature"].astype(str).tolist())
        st.dataframe(df.style.format(fmt), key=table_key, on_select=pick, selection_mode="single-row",
                     hide_index=True, height=420,  # long gene symbols and peaks are not cut off
                     column_config={"feature": st.column_config.TextColumn(width="medium")})  # fmt: skip
        st.download_button("Download the table (CSV)", lambda: explore.differential_csv(df), mime="text/csv",
                            file_name=f"scclip_differential_{modality}.csv", icon=":material/download:",
                            on_click="ignore", key="diff_csv")  # fmt: skip
    labels = explore.label_columns(joint)
    if not labels:
        return
    by = explore.default_color_column(labels) if explore.default_color_column(labels) in labels else labels[0]
    try:
        fig = explore.dot_plot(store, df["feature"].head(15).tolist(), modality=modality, groupby=by)
    except ScclipError as err:
        p.caption(f"Dot plot: {err}")
        return
    p.plotly_chart(fig, key="diff_dots", config={"displaylogo": False})


# --------------------------------------------------------------------------- 3. genome view
def genome_panel(joint) -> None:
    """Per-patch integrated-gradients attribution of a group's embedding against the other cells, drawn as a
    genome track (computed on request; cached per group)."""
    store, info = feature_store(joint), joint.info["views"]
    st.markdown("### Genome view: what drives the embedding")
    st.caption("Which genome regions (patch tokens) make the group's cells resemble each other more than the other "
               "cells do: integrated gradients at the patch tokens from empty patches, group mean minus the other "
               f"cells' mean (up to {explore.MAX_ATTRIBUTION_CELLS:,} group and {explore.MAX_REFERENCE_CELLS} other "
               "cells per modality, a random sample above that). Hover a bar for its genes / peaks.")  # fmt: skip
    g = st.columns([1.7, 1.1, 1.1, 1.3, 0.9], vertical_alignment="bottom")
    choice = _group_choice(joint, "attr", g)
    if choice is None:
        return
    group, label = choice
    key = _fingerprint(group)
    cache = joint.info.setdefault("attribution", {})
    if (
        g[3].button("Compute genome view", key="attr_go", type="primary", help="Takes a few seconds.")
        and key not in cache
    ):
        model = _gradient_model(info["model_dir"], info["model_fp"])
        bar = st.progress(0.0, text="Integrated gradients…")
        try:
            df = explore.patch_attribution(model, store, group,
                                           progress=lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))  # fmt: skip
        except (ScclipError, *common.OOM) as err:
            bar.empty()
            common.show_error(err, "Genome view")
            return
        bar.empty()
        _remember(cache, key, df)
    df = cache.get(key)
    if df is None:
        st.caption(f"Press **Compute genome view** for {label}.")
        return
    if df.attrs.get("note"):
        st.caption(f"Note: {df.attrs['note']}.")
    title = f"What makes {label} alike: attribution per patch"
    st.plotly_chart(explore.genome_track(df, genome=store.genome, title=title), key="genome_track",
                    config={"displaylogo": False})  # fmt: skip
    top = df.sort_values("attribution", ascending=False).groupby("modality").head(5)
    st.dataframe(top[["modality", "chrom", "start", "end", "attribution", "top_features"]], hide_index=True,
                 key="attr_top", column_config={"attribution": st.column_config.NumberColumn(format="%+.4f")})  # fmt: skip


# --------------------------------------------------------------------------- 4. hand-off
def handoff_buttons(joint) -> None:
    """``.h5ad`` downloads (joint and per modality) that open as they are in CELLxGENE and scanpy."""
    mdata = joint.info["views"]["mdata"]
    parts = [("joint", "Joint cells (.h5ad)")] + [(m, f"{explore.MODALITY_LABELS[m]} cells with counts (.h5ad)")
                                                   for m in ("rna", "atac") if m in mdata.mod]  # fmt: skip
    st.markdown(
        "**For CELLxGENE / scanpy**: `obsm['X_umap']`, `obsm['X_scclip']`, labels and transferred labels."
    )
    for col, (part, text) in zip(st.columns(3), parts, strict=False):
        col.download_button(text, lambda part=part: explore.h5ad_bytes(joint, part, data=mdata),
                            file_name=f"scclip_{part}.h5ad", mime="application/octet-stream", on_click="ignore",
                            icon=":material/download:", key=f"dl_h5ad_{part}")  # fmt: skip


# --------------------------------------------------------------------------- 5. single-modality data
def _single_joint(model: dict, data: dict):
    """The embedded cells of an RNA-only or ATAC-only dataset as a one-modality :class:`~scclip.explore.Joint`
    (kept with the session's joint views), or None after an error."""
    import torch

    key = (model["fp"], data["fp"])
    if key in ss.joints:
        return ss.joints[key]
    (m,) = [x for x in ("rna", "atac") if x in data["mdata"].mod]
    notes: list[str] = []
    try:
        with st.spinner(f"Embedding the {explore.MODALITY_LABELS[m]} cells with **{model['name']}**…"):
            with torch.inference_mode():
                emb, _ = explore.embed_cached(model["model"], data["mdata"], model_fp=model["fp"], data_fp=data["fp"], notes=notes)  # fmt: skip
            a = emb[m]
            obs = a.obs.reset_index(drop=True).copy()
            obs.insert(0, "modality", pd.Categorical([explore.MODALITY_LABELS[m]] * a.n_obs))
            obs.insert(0, "barcode", a.obs_names.astype(str))
            Z = np.asarray(a.obsm["X_scclip"], dtype=np.float32)
            n_rna = a.n_obs if m == "rna" else 0
            joint = explore.Joint(
                Z, obs, n_rna, False, np.full(a.n_obs, -1, dtype=np.int64), info={"embedded": emb}
            )
            joint.umap, _ = explore.umap_cached(Z, key=f"{model['fp']}-{data['fp']}", notes=notes)
    except (ScclipError, *common.OOM) as err:
        common.show_error(err, "Embedding")
        return None
    ss.joints[key] = joint
    return joint


def single_modality(model: dict, data: dict) -> None:
    """An RNA-only or ATAC-only dataset: its UMAP (coloured by an annotation or a feature; box / lasso selects),
    differential features and the genome view; one line says what needs both modalities."""
    joint = _single_joint(model, data)
    if joint is None:
        return
    attach(joint, data, model)
    mod = explore.MODALITY_LABELS[feature_store(joint).mods[0]]
    st.info(f"**{data['label']}** has only {mod} cells ({joint.n:,}): cross-modal matches, the imputed view and "
            "label transfer need RNA and ATAC (add the other modality on the **Data** page).",
            icon=":material/info:")  # fmt: skip
    _single_fragment(joint)


@st.fragment
def _single_fragment(joint) -> None:
    explore.apply_selection_events(ss, joint, ("umap_single",))
    cols = joint.color_columns()
    color_by = st.selectbox(
        "Colour by", cols, index=cols.index(explore.default_color_column(cols)), key="single_color"
    )
    feature = feature_controls(joint)
    drawn = explore.draw_indices(joint.n)
    style = {"point_size": float(np.clip(9 - 1.3 * np.log10(max(joint.n, 10)), 2, 7)), "opacity": 0.8}
    spec = feature_figures(joint, feature, drawn, style)[0] if feature else None
    spec = spec or explore.umap_spec(joint.umap, joint.obs[color_by], drawn, title=f"Coloured by {color_by}",
                                     hover=explore.hover_text(joint, color_by), colorbar_title=color_by, **style)  # fmt: skip
    group = ss.get("group_cells")
    fig = explore.with_highlight(spec, joint.umap, None, {"group": [] if group is None else group})
    st.plotly_chart(explore.prebuilt(fig), key="umap_single", on_select="rerun", selection_mode=("box", "lasso"),
                    config={"displaylogo": False})  # fmt: skip
    differential_panel(joint)
    genome_panel(joint)


def summary_line(joint, model: dict, data: dict) -> None:
    """The Explore page's one line: dataset, model, cells, pairing and whether the modality gap is closed."""
    gap = (joint.info["embedded"].uns.get("scclip") or {}).get("gap") or {}
    n_rna, n_atac = joint.n_rna, joint.n - joint.n_rna
    st.markdown(
        f"**{data['label']}** &nbsp;·&nbsp; model **{model['name']}** &nbsp;·&nbsp; {n_rna:,} RNA + {n_atac:,} "
        f"ATAC cells &nbsp;·&nbsp; {'paired (same cells in both modalities)' if joint.paired else 'unpaired (different cells)'}"
        + (
            ""
            if not gap
            else f" &nbsp;·&nbsp; modality gap {'closed' if gap.get('closed') else 'not closed'}"
        ),
        unsafe_allow_html=True,
    )


def find_barcode(joint) -> None:
    """The barcode search box's callback: select the cell (RNA first) or say that none has that barcode."""
    text = ss.get("barcode_search", "").strip()
    ss.pop("search_msg", None)
    if not text:
        return
    hits = joint.find(text)
    if hits.size == 0:
        ss.search_msg = f"No cell with barcode {text!r} in this dataset."
    else:
        ss.query_cell = int(hits[0])
        if hits.size > 1:
            ss.search_msg = f"{text!r} exists in both modalities; showing its RNA profile."
