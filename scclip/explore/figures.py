"""Plotly UMAP figures: one ``Scattergl`` trace whose ``customdata`` is the global cell index, category
colours, hover texts and the subset of cells drawn; the Explore page's similarity histogram and group
composition bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scclip.explore.constants import MISSING_COLOR, MODALITY_COLORS, PALETTE, max_drawn

#: Right margin of a UMAP figure, in pixels, where its legend or colour bar sits. A fixed margin
#: (``autoexpand`` off) spares plotly.js a second layout pass on every draw.
LEGEND_WIDTH = 150


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


def umap_figure(coords: np.ndarray, values: pd.Series, drawn: np.ndarray, **kw):
    """:func:`umap_spec` as a validated ``plotly.graph_objects.Figure`` (to add traces to it; the Explore page
    sends the spec itself, see :func:`prebuilt`)."""
    import plotly.graph_objects as go

    return go.Figure(umap_spec(coords, values, drawn, **kw))


def umap_spec(
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
) -> dict:
    """A UMAP scatter as a plotly figure dict: one ``scattergl`` trace of the ``drawn`` cells, ``customdata``
    = global cell index.

    Every per-cell array is a numpy array (float32 coordinates and colours, int32 indices), which plotly
    sends as a base64 typed array rather than a JSON list. Categorical ``values`` become numeric codes on a
    stepwise colour scale with a legend of empty marker-only entries (show/hide categories by filtering
    ``drawn``; SVG entries, so they add no WebGL work); numeric values use a colour scale. ``highlight`` (see :func:`with_highlight`) is drawn on top.
    The result without ``highlight`` depends only on the arguments, so a page can build it once per
    colouring and add each click's highlight with :func:`with_highlight`.
    """
    drawn = np.asarray(drawn, dtype=np.int64)
    xy = np.asarray(coords, dtype=np.float32)[drawn]
    v = values.iloc[drawn] if isinstance(values, pd.Series) else pd.Series(np.asarray(values)[drawn])
    marker, legend_items = _cell_marker(values, v, colors, point_size=point_size, opacity=opacity,
                                        colorbar_title=colorbar_title)  # fmt: skip
    # a clicked point (plotly's own point selection, drawn in the browser without a redraw): large and dark,
    # the other cells faded but still readable
    clicked = {"selected": {"marker": {"size": max(3.0 * point_size, 12.0), "color": "#111111", "opacity": 1.0}},
               "unselected": {"marker": {"opacity": 0.45}}}  # fmt: skip
    cells = {"type": "scattergl", "name": "cells", "mode": "markers", "showlegend": False,
             "x": np.ascontiguousarray(xy[:, 0]), "y": np.ascontiguousarray(xy[:, 1]),
             "customdata": drawn.astype(np.int32), "marker": marker, **clicked}  # fmt: skip
    if hover is not None:
        cells.update(text=hover[drawn], hovertemplate="%{text}<extra></extra>")
    else:
        cells["hovertemplate"] = "cell %{customdata}<extra></extra>"
    legend = [{"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": name,
               "marker": {"size": 10, "color": col}, "showlegend": True} for name, col in legend_items]  # fmt: skip
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False}
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "height": height, "margin": {"l": 10, "r": LEGEND_WIDTH, "t": 40, "b": 10, "autoexpand": False},
        "plot_bgcolor": "white", "paper_bgcolor": "white", "dragmode": "pan",
        "legend": {"itemsizing": "constant", "itemclick": False, "itemdoubleclick": False, "font": {"size": 11},
                   "bgcolor": "rgba(255,255,255,0.7)", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top"},
        "xaxis": {"title": {"text": "UMAP 1"}, **axis}, "yaxis": {"title": {"text": "UMAP 2"}, **axis},
        "hoverlabel": {"font": {"size": 12}}, "uirevision": "umap",
    }  # fmt: skip
    spec = {"data": [cells, *legend], "layout": layout}
    return with_highlight(spec, coords, hover, highlight, point_size=point_size) if highlight else spec


def with_highlight(spec: dict, coords: np.ndarray, hover, highlight: dict | None, *, point_size: float = 4.0):
    """A copy of a :func:`umap_spec` figure with ``highlight`` drawn on it (the input is not changed).

    ``highlight`` may hold ``query`` (a global index: a star, with lines to its partners), ``partners`` (global
    indices: yellow dots) and ``group`` (global indices: these cells keep their colours, the others fade;
    no rings over the colours). Every added trace carries the global cell index in ``customdata``.
    """
    hl = highlight or {}
    cells, *rest = spec["data"]
    group = np.asarray(hl.get("group", []) if hl.get("group") is not None else [], dtype=np.int64)
    if group.size:
        drawn = np.asarray(cells["customdata"], dtype=np.int64)
        cells = {**cells, "selectedpoints": np.flatnonzero(np.isin(drawn, group)).astype(np.int32),
                 "selected": {"marker": {"opacity": 1.0}}, "unselected": {"marker": {"opacity": 0.1}}}  # fmt: skip
    extra = _highlight_traces(np.asarray(coords), hover, hl, point_size=point_size)
    return {**spec, "data": [cells, *rest, *extra]}


def prebuilt(spec: dict):
    """A ``plotly.graph_objects.Figure`` whose ``to_dict()`` returns ``spec`` with its numeric numpy arrays as
    plotly.js typed arrays (:func:`typed_arrays`).

    ``st.plotly_chart`` turns a dict into a ``Figure`` (validating every property, a second time) and a
    ``Figure`` into a dict (a deep copy); with a spec built by :func:`umap_spec` both steps are skipped and
    only the JSON encoding remains.
    """
    return _prebuilt_class()(typed_arrays(spec))


#: numpy dtype -> plotly.js typed-array name (plotly's ``{"dtype", "bdata"}`` encoding).
_TYPED = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
          "float32": "f4", "float64": "f8"}  # fmt: skip


def typed_arrays(obj):
    """A copy of a plotly figure dict in which every 1-D numeric numpy array is a base64 typed array
    (``{"dtype": "f4", "bdata": ...}``, what plotly itself sends for a ``Figure``): a float32 coordinate
    costs 4 bytes (5.3 in base64) instead of a decimal number in JSON. Other values are kept as they are."""
    if isinstance(obj, dict):
        return {k: typed_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [typed_arrays(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.ndim == 1 and obj.size and str(obj.dtype) in _TYPED:
        import base64

        return {
            "dtype": _TYPED[str(obj.dtype)],
            "bdata": base64.b64encode(np.ascontiguousarray(obj)).decode("ascii"),
        }
    return obj


_PREBUILT: list = []


def _prebuilt_class():
    if not _PREBUILT:
        import plotly.graph_objects as go

        class Prebuilt(go.Figure):
            """A figure that hands back a prebuilt plotly dict (see :func:`prebuilt`)."""

            def __init__(self, spec: dict):
                super().__init__()
                self._prebuilt_spec = spec

            def to_dict(self) -> dict:
                return self._prebuilt_spec

            def to_plotly_json(self) -> dict:
                return self._prebuilt_spec

        _PREBUILT.append(Prebuilt)
    return _PREBUILT[0]


def _cell_marker(values, v: pd.Series, colors, *, point_size: float, opacity: float, colorbar_title: str):
    """The cells' marker (categorical: numeric codes on a stepwise colour scale; numeric: Viridis with a colour
    bar) and the legend entries ``(category, colour)`` of the categories drawn."""
    marker: dict = {"size": point_size, "opacity": opacity, "line": {"width": 0}}
    legend_items: list[tuple[str, str]] = []
    if is_categorical(values):
        colors = colors or category_colors(values)
        # numeric codes + a stepwise colour scale: fast to build and to send (no per-point colour strings)
        names = list(colors)
        lut = pd.Series(np.arange(len(names), dtype=np.float32), index=pd.Index(names, dtype=object))
        keys = v.astype(object).where(v.notna(), None)
        codes = keys.map(lambda x: None if x is None else str(x)).map(lut).fillna(len(names))
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
            _continuous(v.to_numpy(dtype=np.float32)),
            showscale=True,
            colorbar={"title": {"text": colorbar_title, "side": "right"}, "thickness": 12, "len": 0.7},
        )
    return marker, legend_items


#: Share of a continuous colour bar given to the grey of cells without a value (its bottom step).
MISSING_SHARE = 0.04


def _continuous(c: np.ndarray) -> dict:
    """Viridis colours of a numeric column; with NaN values, the NaN cells are set just below the finite range
    and a grey bottom step (:data:`MISSING_SHARE` of the bar) is added to the scale (one trace, no per-point
    colour strings)."""
    nan = np.isnan(c)
    if not nan.any():
        return {"color": c, "colorscale": "Viridis"}
    from plotly.colors import sequential

    finite = c[~nan]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    below = lo - (hi - lo) * MISSING_SHARE / (1 - MISSING_SHARE)
    vir = sequential.Viridis
    scale = [[0.0, MISSING_COLOR], [MISSING_SHARE, MISSING_COLOR]]
    scale += [[MISSING_SHARE + (1 - MISSING_SHARE) * i / (len(vir) - 1), col] for i, col in enumerate(vir)]
    return {"color": np.where(nan, np.float32(below), c).astype(np.float32), "colorscale": scale,
            "cmin": below, "cmax": hi}  # fmt: skip


def _highlight_traces(coords: np.ndarray, hover, hl: dict, *, point_size: float) -> list[dict]:
    """Traces drawn over the cells: lines from the query to its partners, the partners and the query itself;
    each carries the global cell index in ``customdata`` (a selected group is shown by fading the other cells).
    (WebGL traces too: plotly.js draws its WebGL canvas above the SVG layer)."""
    traces: list[dict] = []
    partners = np.asarray(hl.get("partners", []) if hl.get("partners") is not None else [], dtype=np.int64)
    q = hl.get("query")
    if q is not None and partners.size:
        lines = np.full((partners.size, 3, 2), np.nan, dtype=np.float32)
        lines[:, 0], lines[:, 1] = coords[q], coords[partners]
        traces.append({"type": "scattergl", "x": lines[:, :, 0].ravel(), "y": lines[:, :, 1].ravel(), "mode": "lines",
                       "line": {"width": 1, "color": "rgba(20,20,20,0.45)"}, "hoverinfo": "skip", "showlegend": False})  # fmt: skip
    if partners.size:
        traces.append(
            {"type": "scattergl", "x": coords[partners, 0].astype(np.float32), "y": coords[partners, 1].astype(np.float32),
             "mode": "markers", "customdata": partners.astype(np.int32), "name": "top partners", "showlegend": True,
             "marker": {"size": 11, "color": "#FFD400", "symbol": "circle", "line": {"width": 1.5, "color": "#111"}},
             "hovertemplate": "partner: %{text}<extra></extra>", **({} if hover is None else {"text": hover[partners]})}
        )  # fmt: skip
    if q is not None:
        traces.append(
            {"type": "scattergl", "x": [float(coords[q, 0])], "y": [float(coords[q, 1])], "mode": "markers",
             "customdata": [int(q)], "name": "selected cell", "showlegend": True,
             "marker": {"size": 18, "color": "#111", "symbol": "star", "line": {"width": 1.5, "color": "white"}},
             "hovertemplate": "%{text}<extra></extra>", **({} if hover is None else {"text": [str(hover[q])]})}
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

    def vline(x: float, **line) -> dict:
        return {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": x,
            "x1": x,
            "y0": 0,
            "y1": 1,
            "line": line,
        }

    shapes = [vline(kth, dash="dash", color="#d4a000", width=2)]
    if partner is not None:
        shapes.append(vline(partner, color="#111", width=2))
    return go.Figure(
        {
            "data": [{"type": "histogram", "x": np.asarray(sims, dtype=np.float32), "nbinsx": 60,
                      "marker": {"color": "#9bb7d4"}, "name": f"all {other} cells"}],
            "layout": {"height": 300, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "plot_bgcolor": "white",
                       "showlegend": False, "shapes": shapes, "bargap": 0.02,
                       "title": {"text": f"Similarity of {barcode} to every {other} cell", "font": {"size": 13}},
                       "xaxis": {"title": {"text": "cosine similarity"}}, "yaxis": {"title": {"text": "cells"}}},
        }
    )  # fmt: skip


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
