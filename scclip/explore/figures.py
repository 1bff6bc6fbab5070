"""Plotly UMAP figures: one ``Scattergl`` trace whose ``customdata`` is the global cell index, category
colours, hover texts and the subset of cells drawn; the Explore page's similarity histogram and group
composition bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scclip.explore.constants import MISSING_COLOR, MODALITY_COLORS, PALETTE, max_drawn


def draw_indices(
    n: int, max_points: int | None = None, *, seed: int = 0, mask: np.ndarray | None = None
) -> np.ndarray:
    """Global indices to draw: all (visible) cells, or a fixed random subset of ``max_points`` of them
    (default :func:`~scclip.explore.constants.max_drawn`: ``$SCCLIP_MAX_DRAWN`` or 150,000).

    The cells come in a seeded random order, which is also the drawing order: RNA and ATAC cells (stacked one
    modality after the other) interleave, so neither is painted over the other and mixing stays visible. The
    subset and the order are the same for every colouring (a fixed permutation), so recolouring never
    reshuffles cells. Only drawing is limited: selections resolve to every cell
    (:func:`scclip.explore.selection_to_cells`).
    """
    max_points = max_drawn() if max_points is None else max_points
    order = np.random.default_rng(seed).permutation(n)
    if mask is not None:
        order = order[mask[order]]
    return order[:max_points]


def category_colors(values: pd.Series) -> dict[str, str]:
    """A stable colour per category (modality gets its own two colours)."""
    cats = (
        values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else pd.unique(values.dropna())
    )
    cats = [str(c) for c in cats]
    if set(cats) <= set(MODALITY_COLORS):
        return {c: MODALITY_COLORS[c] for c in cats}
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(cats, key=_natural_key))}


def _natural_key(s: str):
    import re

    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)


def umap_figure(
    coords: np.ndarray,
    values: pd.Series,
    drawn: np.ndarray,
    *,
    hover: np.ndarray | None = None,
    title: str = "",
    point_size: float = 4.0,
    opacity: float = 0.8,
    highlight: dict | None = None,
    colors: dict[str, str] | None = None,
    height: int = 560,
    colorbar_title: str = "",
):
    """A UMAP scatter: one ``Scattergl`` trace of the ``drawn`` cells, ``customdata`` = global cell index.

    Categorical ``values`` become per-point colours with a legend of empty marker-only entries (the legend is
    informative only; show/hide categories by filtering ``drawn``); numeric values use a colour scale.
    ``highlight`` may hold ``query`` (a global index), ``partners`` (global indices) and ``group`` (global
    indices) drawn on top, each also carrying ``customdata``.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    xy = coords[drawn]
    v = values.iloc[drawn] if isinstance(values, pd.Series) else pd.Series(np.asarray(values)[drawn])
    marker, legend_items = _cell_marker(values, v, colors, point_size=point_size, opacity=opacity,
                                        colorbar_title=colorbar_title)  # fmt: skip
    text = hover[drawn] if hover is not None else None
    fig.add_trace(
        go.Scattergl(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            marker=marker,
            customdata=drawn,
            text=text,
            hovertemplate="%{text}<extra></extra>"
            if text is not None
            else "cell %{customdata}<extra></extra>",
            showlegend=False,
            name="cells",
        )
    )
    for name, col in legend_items:
        fig.add_trace(
            go.Scattergl(
                x=[None],
                y=[None],
                mode="markers",
                marker={"size": 10, "color": col},
                name=name,
                showlegend=True,
            )
        )
    group = np.asarray((highlight or {}).get("group", []), dtype=np.int64)
    if group.size:  # the selected cells keep their colours, the others fade (no rings over the colours)
        fig.data[0].update(selectedpoints=np.flatnonzero(np.isin(drawn, group)),
                           selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 0.1}})  # fmt: skip
    for trace in _highlight_traces(coords, hover, highlight or {}, point_size=point_size):
        fig.add_trace(trace)
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="white",
        paper_bgcolor="white",
        dragmode="pan",
        legend={"itemsizing": "constant", "itemclick": False, "itemdoubleclick": False, "font": {"size": 11},
                "bgcolor": "rgba(255,255,255,0.7)"},
        xaxis={"title": "UMAP 1", "showgrid": False, "zeroline": False, "showticklabels": False},
        yaxis={"title": "UMAP 2", "showgrid": False, "zeroline": False, "showticklabels": False},
        hoverlabel={"font_size": 12},
        uirevision="umap",
    )  # fmt: skip
    return fig


def _cell_marker(values, v: pd.Series, colors, *, point_size: float, opacity: float, colorbar_title: str):
    """The cells' marker (categorical: numeric codes on a stepwise colour scale; numeric: Viridis with a colour
    bar) and the legend entries ``(category, colour)`` of the categories drawn."""
    marker: dict = {"size": point_size, "opacity": opacity, "line": {"width": 0}}
    legend_items: list[tuple[str, str]] = []
    if is_categorical(values):
        colors = colors or category_colors(values)
        # numeric codes + a stepwise colour scale: fast to build and to send (no per-point colour strings)
        names = list(colors)
        lut = {c: i for i, c in enumerate(names)}
        codes = pd.Series(v.astype(object).where(v.notna(), None)).map(
            lambda x: lut.get(str(x), len(names)) if x is not None else len(names)
        )
        palette = [*colors.values(), MISSING_COLOR]
        k = len(palette)
        scale = []
        for i, col in enumerate(palette):
            scale += [[i / k, col], [(i + 1) / k, col]]
        marker.update(
            color=codes.to_numpy(dtype=np.float32), colorscale=scale, cmin=-0.5, cmax=k - 0.5, showscale=False
        )
        present = set(map(str, v.dropna().unique()))
        legend_items = [(c, col) for c, col in colors.items() if c in present]
        if v.isna().any():
            legend_items.append(("(missing)", MISSING_COLOR))
    else:
        marker.update(
            color=v.to_numpy(dtype=float),
            colorscale="Viridis",
            showscale=True,
            colorbar={"title": {"text": colorbar_title, "side": "right"}, "thickness": 12, "len": 0.7},
        )
    return marker, legend_items


def _highlight_traces(coords: np.ndarray, hover, hl: dict, *, point_size: float) -> list:
    """Traces drawn over the cells: lines from the query to its partners, the partners and the query itself;
    each carries the global cell index in ``customdata`` (a selected group is shown by fading the other cells)."""
    import plotly.graph_objects as go

    traces = []
    partners = np.asarray(hl.get("partners", []), dtype=np.int64)
    q = hl.get("query")
    if q is not None and partners.size:
        lx, ly = [], []
        for p in partners:
            lx += [coords[q, 0], coords[p, 0], None]
            ly += [coords[q, 1], coords[p, 1], None]
        traces.append(
            go.Scattergl(x=lx, y=ly, mode="lines", line={"width": 1, "color": "rgba(20,20,20,0.45)"},
                         hoverinfo="skip", showlegend=False)
        )  # fmt: skip
    if partners.size:
        ptext = hover[partners] if hover is not None else None
        traces.append(
            go.Scattergl(
                x=coords[partners, 0], y=coords[partners, 1], mode="markers", customdata=partners, name="top partners",
                marker={"size": 11, "color": "#FFD400", "symbol": "circle", "line": {"width": 1.5, "color": "#111"}},
                text=ptext, hovertemplate="partner: %{text}<extra></extra>", showlegend=True,
            )
        )  # fmt: skip
    if q is not None:
        traces.append(
            go.Scattergl(
                x=[coords[q, 0]], y=[coords[q, 1]], mode="markers", customdata=[q], name="selected cell",
                marker={"size": 18, "color": "#111", "symbol": "star", "line": {"width": 1.5, "color": "white"}},
                text=None if hover is None else [hover[q]], hovertemplate="%{text}<extra></extra>", showlegend=True,
            )
        )  # fmt: skip
    return traces


def hover_text(joint, col: str) -> np.ndarray:
    """Hover text per cell: ``barcode · modality``, plus ``col``'s value unless ``col`` is ``"modality"``.

    Cached in ``joint.info["hover"]`` (drop that key when obs columns change).
    """
    cache = joint.info.setdefault("hover", {})
    if col not in cache:
        cache[col] = _hover(joint.obs, col)
    return cache[col]


def _hover(obs: pd.DataFrame, col: str) -> np.ndarray:
    hover_base = obs["barcode"].astype(str) + " · " + obs["modality"].astype(str)
    if col == "modality":
        return hover_base.to_numpy()
    v = obs[col]
    txt = (
        v.map(lambda x: f"{x:.3g}" if isinstance(x, float) else str(x))
        if not is_categorical(v)
        else v.astype(str)
    )
    return (hover_base + f"<br>{col}: " + txt.astype(str)).to_numpy()


def similarity_histogram(sims: np.ndarray, *, kth: float, partner: float | None, barcode: str, other: str):
    """Histogram of one cell's similarity to every cell of the ``other`` modality.

    A dashed line marks ``kth`` (the k-th best match), a black line ``partner`` (the true partner's
    similarity, paired data only).
    """
    import plotly.graph_objects as go

    hist = go.Figure(go.Histogram(x=sims, nbinsx=60, marker_color="#9bb7d4", name=f"all {other} cells"))
    hist.add_vline(x=kth, line_dash="dash", line_color="#d4a000", line_width=2)
    if partner is not None:
        hist.add_vline(x=partner, line_color="#111", line_width=2)
    hist.update_layout(
        height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, plot_bgcolor="white", showlegend=False,
        title={"text": f"Similarity of {barcode} to every {other} cell", "font": {"size": 13}},
        xaxis_title="cosine similarity", yaxis_title="cells", bargap=0.02,
    )  # fmt: skip
    return hist


def composition_figure(comp: pd.DataFrame, label: str):
    """Grouped bars of a :func:`~scclip.explore.matches.composition` table: ``label`` of the selected cells
    and of their partners."""
    import plotly.graph_objects as go

    bars = go.Figure()
    for name, color in (("selected cells", "#7f8c8d"), ("their partners", "#e4572e")):
        bars.add_trace(go.Bar(x=comp.index.astype(str), y=comp[name], name=name, marker_color=color))
    bars.update_layout(
        barmode="group", height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, plot_bgcolor="white",
        yaxis={"title": "fraction", "tickformat": ".0%"},
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.01},
        title={"text": f"{label} of the group and of where its partners land", "font": {"size": 13}, "y": 0.97},
    )  # fmt: skip
    return bars
