"""From a plotly selection event (click, box, lasso) back to cells, computed for all cells on the server, and
the Explore page's handling of new selection events."""

from __future__ import annotations

import json

import numpy as np


def _as_index(cd) -> int | None:
    if isinstance(cd, list | tuple):
        cd = cd[0] if cd else None
    if cd is None:
        return None
    try:
        return int(cd)
    except (TypeError, ValueError):
        return None


def points_in_polygon(xy: np.ndarray, poly_x, poly_y) -> np.ndarray:
    """Boolean mask of points inside a polygon (even-odd ray casting, vectorised over points)."""
    px, py = np.asarray(poly_x, dtype=float), np.asarray(poly_y, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        xi, yi, xj, yj = px[i], py[i], px[j], py[j]
        if yi != yj:
            crosses = ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
            inside ^= crosses
        j = i
    return inside


def selection_to_cells(
    selection, coords: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Global cell indices of a ``st.plotly_chart`` selection.

    Box and lasso selections are recomputed on the server from their geometry over *all* cells in ``coords``
    (including cells not drawn because of subsampling), restricted to ``mask`` (e.g. visible categories).
    Clicked points map through ``customdata`` (the global index), never through per-trace point indices.
    """
    if not selection:
        return np.array([], dtype=np.int64)
    sel = selection.get("selection", selection) if isinstance(selection, dict) else selection
    boxes, lassos = list(sel.get("box") or []), list(sel.get("lasso") or [])
    if coords is not None and (boxes or lassos):
        hit = np.zeros(len(coords), dtype=bool)
        for b in boxes:
            x0, x1 = sorted(map(float, b["x"][:2]))
            y0, y1 = sorted(map(float, b["y"][:2]))
            hit |= (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
        for lasso in lassos:
            hit |= points_in_polygon(coords, lasso["x"], lasso["y"])
        if mask is not None:
            hit &= mask
        return np.flatnonzero(hit)
    idx = [_as_index(p.get("customdata")) for p in sel.get("points") or []]
    return np.unique(np.array([i for i in idx if i is not None], dtype=np.int64))


def selection_signature(sel) -> str:
    """A short fingerprint of a ``st.plotly_chart`` selection (clicked points, boxes, lasso sizes).

    The Explore page acts on a selection only when its signature changes, so a rerun does not re-apply it.
    """
    s = sel.get("selection", {}) if isinstance(sel, dict) else {}
    return json.dumps(
        {
            "p": [p.get("customdata") for p in s.get("points", [])][:50],
            "b": s.get("box", []),
            "l": [len(lasso.get("x", [])) for lasso in s.get("lasso", [])],
        },
        default=str,
    )


def apply_selection_events(state, joint, charts=("umap_mod", "umap_col")) -> None:
    """Turn new selections on the UMAP charts into the query cell or the selected group.

    One clicked cell becomes ``state["query_cell"]``; a box, a lasso (over all cells shown by
    ``state["_visible_mask"]``) or several clicked cells become ``state["group_cells"]``. A selection whose
    :func:`selection_signature` equals ``state["sel_sig_<chart>"]`` was handled already and is skipped.

    Parameters
    ----------
    state
        A mutable mapping such as ``st.session_state``, holding each chart's selection under its key.
    joint
        The :class:`~scclip.explore.joint.Joint` table the charts show (``n``, ``umap``).
    charts
        Keys of the ``st.plotly_chart`` widgets.
    """
    for chart in charts:
        sel = state.get(chart)
        if not sel:
            continue
        sig = selection_signature(sel)
        if sig == state.get(f"sel_sig_{chart}"):
            continue
        state[f"sel_sig_{chart}"] = sig
        s = sel.get("selection", {})
        if s.get("box") or s.get("lasso"):
            mask = state.get("_visible_mask", np.ones(joint.n, dtype=bool))
            cells = selection_to_cells(sel, joint.umap, mask=mask)
            state["group_cells"] = cells if cells.size else None
        else:
            cells = selection_to_cells(sel)
            cells = cells[cells < joint.n]
            if cells.size == 1:
                state["query_cell"] = int(cells[0])
            elif cells.size > 1:
                state["group_cells"] = cells
