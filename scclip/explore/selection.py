"""From a plotly selection event (click, box, lasso) back to cells, computed for all cells on the server."""

from __future__ import annotations

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
