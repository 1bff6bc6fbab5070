"""Plotly figures of the feature views: the dot plot of top features across cell types and the genome track of
patch attributions (one lane per modality, x = cumulative genome position)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_COLORS, MODALITY_LABELS
from scclip.explore.feature_values import FeatureStore
from scclip.explore.markers import store_obs
from scclip.genome import chrom_sizes, chrom_sort_key


def dot_plot(
    store: FeatureStore,
    features: Sequence[str],
    *,
    modality: str = "rna",
    groupby: str = "cell_type",
    max_groups: int = 40,
):
    """Dot plot of features across the categories of ``groupby`` (size = fraction of cells expressing,
    colour = mean value: RNA log1p CP10k, ATAC counts).

    Parameters
    ----------
    store
        The dataset's :class:`~scclip.explore.FeatureStore`.
    features
        Feature names as in a :func:`~scclip.explore.differential_features` table (gene symbols / peak names).
    modality
        Whose cells and matrix.
    groupby
        A categorical obs column; the ``max_groups`` largest categories are drawn.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    store.require(modality, what="the dot plot")
    obs = store_obs(store)
    if groupby not in obs.columns:
        raise ScclipError(f"no obs column {groupby!r} to group the dot plot by")
    names = (store.genes["symbol"] if modality == "rna" else store.peaks["name"]).astype(str)
    index = pd.Index(names.to_numpy())
    cols = index.get_indexer(list(features))
    if (cols < 0).any():
        raise ScclipError(
            f"unknown {MODALITY_LABELS[modality]} features: {list(np.asarray(features)[cols < 0][:5])}"
        )
    labels = obs[groupby].astype(object).to_numpy()[store.cells(modality)]
    ok = pd.notna(labels)
    dense = store.csc(modality)[:, cols].toarray()[ok]
    groups = pd.Series(labels[ok].astype(str))
    top = groups.value_counts().index[:max_groups].sort_values()
    mean = pd.DataFrame(dense).groupby(groups.to_numpy()).mean().reindex(top)
    frac = pd.DataFrame(dense > 0).groupby(groups.to_numpy()).mean().reindex(top)
    xs, ys = np.meshgrid(np.asarray(features, dtype=str), np.asarray(top, dtype=str))
    size = frac.to_numpy().ravel()
    fig = go.Figure(
        go.Scatter(
            x=xs.ravel(),
            y=ys.ravel(),
            mode="markers",
            marker={
                "size": 4 + 18 * np.sqrt(size),
                "color": mean.to_numpy().ravel(),
                "colorscale": "Viridis",
                "colorbar": {"title": "mean"},
                "line": {"width": 0},
            },
            customdata=np.c_[size, mean.to_numpy().ravel()],
            hovertemplate="%{y}<br>%{x}<br>expressing: %{customdata[0]:.0%}<br>mean: %{customdata[1]:.3f}"
            "<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{MODALITY_LABELS[modality]} features by {groupby} (size: fraction expressing)",
        xaxis={"tickangle": -45},
        height=max(300, 22 * len(top) + 160),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def chromosome_offsets(chroms: Sequence[str], ends: Sequence[int], genome: str | None) -> dict[str, int]:
    """Cumulative start of each chromosome (natural order) on a concatenated genome axis: the assembly's
    sizes when known, else the largest end seen per chromosome."""
    seen = pd.Series(np.asarray(ends, dtype=np.int64)).groupby(np.asarray(chroms, dtype=str)).max().to_dict()
    sizes = {}
    if genome is not None:
        try:
            sizes = chrom_sizes(genome)
        except ScclipError:
            sizes = {}
    order = sorted(seen, key=chrom_sort_key)
    out, pos = {}, 0
    for c in order:
        out[c] = pos
        pos += int(max(sizes.get(c, 0), seen[c]))
    out["__end__"] = pos
    return out


def genome_track(table: pd.DataFrame, *, genome: str | None = None, title: str | None = None):
    """Genome track of a :func:`~scclip.explore.patch_attribution` table: x = genomic position (chromosomes
    concatenated, boundaries and labels marked), y = attribution, one lane (row) per modality; hovering a
    patch lists its top features and their contributions.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if table.empty:
        raise ScclipError("the attribution table is empty")
    placed = table[table["chrom"].astype(str) != ""]
    offsets = chromosome_offsets(placed["chrom"], placed["end"], genome)
    mods = [m for m in ("rna", "atac") if (table["modality"] == m).any()]
    fig = make_subplots(
        rows=len(mods),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[f"{MODALITY_LABELS[m]} patches" for m in mods],
    )
    for row, m in enumerate(mods, start=1):
        t = placed[placed["modality"] == m]
        base = t["chrom"].astype(str).map(offsets).to_numpy(np.int64)
        mid = base + (t["start"].to_numpy(np.int64) + t["end"].to_numpy(np.int64)) // 2
        width = np.maximum(t["end"].to_numpy(np.int64) - t["start"].to_numpy(np.int64), 1)
        hover = [
            f"patch {p} · {c}:{s:,}-{e:,}<br>attribution {a:+.4f}<br>{f}"
            for p, c, s, e, a, f in zip(
                t["patch"],
                t["chrom"],
                t["start"],
                t["end"],
                t["attribution"],
                t["top_features"].str.replace("; ", "<br>"),
                strict=True,
            )
        ]
        fig.add_trace(
            go.Bar(
                x=mid,
                y=t["attribution"],
                width=np.maximum(width, offsets["__end__"] / 1500),
                marker_color=MODALITY_COLORS.get(MODALITY_LABELS[m], None),
                name=MODALITY_LABELS[m],
                hovertext=hover,
                hoverinfo="text",
                customdata=t["patch"],
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text="attribution", row=row, col=1, zeroline=True)
    chroms = [c for c in offsets if c != "__end__"]
    starts = [offsets[c] for c in chroms]
    for x in starts[1:]:
        fig.add_vline(x=x, line_width=0.5, line_color="#bbbbbb")
    ends = [*starts[1:], offsets["__end__"]]
    ticks = [(s + e) / 2 for s, e in zip(starts, ends, strict=True)]
    fig.update_xaxes(
        tickvals=ticks, ticktext=[c.replace("chr", "") for c in chroms], range=[0, offsets["__end__"]]
    )
    fig.update_layout(
        title=title or "What drives the embedding: attribution per patch",
        showlegend=False,
        height=220 + 200 * len(mods),
        margin={"l": 10, "r": 10, "t": 60, "b": 30},
        bargap=0,
    )
    return fig
