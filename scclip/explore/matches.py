"""Cross-modal partners of a cell or a group, one-to-one matching and label transfer tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scclip.errors import ScclipError
from scclip.explore.figures import is_categorical
from scclip.explore.joint import Joint


def label_columns(joint: Joint, max_cats: int = 200) -> list[str]:
    """Categorical obs columns (cell type, batch, ...) suitable as labels."""
    out = []
    for c in joint.obs.columns:
        if c in ("barcode", "modality"):
            continue
        s = joint.obs[c]
        if is_categorical(s) and 1 <= s.nunique(dropna=True) <= max_cats:
            out.append(c)
    return out


#: Cells of a selected group whose partners are searched at most (a seeded random subset of larger groups).
GROUP_PARTNER_CELLS = 2_000


def other_slice(joint: Joint, i: int) -> slice:
    """The global indices of the other modality than cell ``i``, as a slice (RNA cells come first)."""
    return slice(joint.n_rna, joint.n) if i < joint.n_rna else slice(0, joint.n_rna)


def _inv_norms(joint: Joint) -> np.ndarray:
    """``1 / |z|`` of every cell, computed once per joint view (``joint.info["inv_norm"]``)."""
    inv = joint.info.get("inv_norm")
    if inv is None or len(inv) != joint.n:
        inv = 1.0 / np.maximum(np.linalg.norm(joint.Z, axis=1), 1e-12).astype(np.float32)
        joint.info["inv_norm"] = inv
    return inv


def partners_table(
    joint: Joint, i: int, *, k: int = 10, labels: list[str] | None = None, sims: np.ndarray | None = None
) -> pd.DataFrame:
    """Top-``k`` partners of cell ``i`` in the other modality, best first (the ranking of
    :func:`scclip.match.topk_partners`), from one product of the cell with the other modality's embeddings
    (or from ``sims``, :func:`similarities` of cell ``i``, when given)."""
    sl = other_slice(joint, i)
    sims = similarities(joint, i) if sims is None else sims
    kk = min(int(k), sims.size)
    top = np.argpartition(-sims, kk - 1)[:kk] if kk < sims.size else np.arange(sims.size)
    top = top[np.argsort(-sims[top], kind="stable")]
    g = sl.start + top
    df = pd.DataFrame(
        {
            "rank": np.arange(1, len(g) + 1),
            "barcode": joint.obs["barcode"].to_numpy()[g],
            "modality": joint.modality[g],
            "similarity": sims[top].astype(float),
        }
    )
    for c in labels if labels is not None else label_columns(joint):
        df[c] = joint.obs[c].to_numpy()[g]
    if joint.paired:
        df["true partner"] = g == joint.partner[i]
    df["cell_index"] = g
    return df


def similarities(joint: Joint, i: int) -> np.ndarray:
    """Cosine similarity of cell ``i`` to every cell of the other modality (in global index order), float32."""
    sl = other_slice(joint, i)
    inv = _inv_norms(joint)
    return (joint.Z[sl] @ (joint.Z[i] * inv[i])) * inv[sl]


def true_partner_rank(joint: Joint, i: int, sims: np.ndarray | None = None) -> int | None:
    """1 + the number of other-modality cells more similar to cell ``i`` than its own partner (paired data)."""
    p = int(joint.partner[i])
    if p < 0:
        return None
    sims = similarities(joint, i) if sims is None else sims
    pos = p - other_slice(joint, i).start
    return int((sims > sims[pos]).sum()) + 1


def group_sample(
    cells: np.ndarray, max_cells: int | None = GROUP_PARTNER_CELLS, *, seed: int = 0
) -> np.ndarray:
    """``cells``, or a seeded random ``max_cells`` of them (sorted) when there are more."""
    cells = np.asarray(cells, dtype=np.int64)
    if max_cells is None or cells.size <= max_cells:
        return cells
    return np.sort(np.random.default_rng(seed).choice(cells, size=max_cells, replace=False))


def group_partners(
    joint: Joint, cells: np.ndarray, *, k: int = 1, max_cells: int | None = GROUP_PARTNER_CELLS
) -> np.ndarray:
    """Global indices of the top-``k`` other-modality partners of every cell in ``cells`` (flattened).

    A group larger than ``max_cells`` is summarised by the partners of a seeded random ``max_cells`` of its
    cells (:func:`group_sample`), which keeps a box over 100k cells interactive; ``None``: every cell.
    """
    from scclip.match import topk_partners

    cells = group_sample(cells, max_cells)
    out = []
    for mask in (cells < joint.n_rna, cells >= joint.n_rna):
        sel = cells[mask]
        if sel.size == 0:
            continue
        sl = other_slice(joint, int(sel[0]))
        idx, _ = topk_partners(joint.Z[sel], joint.Z[sl], k=k)
        out.append(sl.start + idx.ravel())
    return np.concatenate(out) if out else np.array([], dtype=np.int64)


def composition(joint: Joint, cells: np.ndarray, partners: np.ndarray, label: str) -> pd.DataFrame:
    """Label composition of a selected group and of where its partners land (fractions)."""
    lab = joint.obs[label].astype(object).where(joint.obs[label].notna(), "(missing)").to_numpy()
    a = pd.Series(lab[cells]).value_counts(normalize=True)
    b = pd.Series(lab[partners]).value_counts(normalize=True)
    df = pd.DataFrame({"selected cells": a, "their partners": b}).fillna(0.0)
    df.index.name = label
    return df.sort_values("their partners", ascending=False)


def transfer(joint: Joint, label: str, *, source: str, k: int = 15) -> pd.DataFrame:
    """Label transfer from the ``source`` modality's cells ('RNA'/'ATAC') to the other modality's cells.

    Returns a frame over the query cells: ``cell_index``, ``barcode``, ``transferred``, ``confidence`` and,
    when the query cells carry ``label`` too, ``true`` and ``correct``.
    """
    from scclip.match import transfer_labels

    src = np.flatnonzero(joint.modality == source)
    qry = np.flatnonzero(joint.modality != source)
    ref_lab = joint.obs[label].to_numpy(dtype=object)[src]
    ok = pd.notna(ref_lab)
    if not ok.any():
        raise ScclipError(f"the {source} cells have no {label!r} labels to transfer")
    pred, conf = transfer_labels(joint.Z[src][ok], ref_lab[ok], joint.Z[qry], k=k)
    df = pd.DataFrame(
        {
            "cell_index": qry,
            "barcode": joint.obs["barcode"].to_numpy()[qry],
            "modality": joint.modality[qry],
            "transferred": pred,
            "confidence": conf.astype(float),
        }
    )
    true = joint.obs[label].to_numpy(dtype=object)[qry]
    if pd.notna(true).any():
        df["true"] = true
        df["correct"] = np.where(pd.notna(true), df["transferred"].to_numpy() == true, np.nan)
    return df


def one_to_one_table(joint: Joint, *, method: str = "auto") -> pd.DataFrame:
    """One-to-one RNA-ATAC pairing (:func:`scclip.match.one_to_one`) with barcodes; ``attrs['method']``."""
    from scclip.match import one_to_one

    b = joint.obs["barcode"].to_numpy()
    df = one_to_one(
        joint.Z[: joint.n_rna],
        joint.Z[joint.n_rna :],
        method=method,
        rna_names=b[: joint.n_rna],
        atac_names=b[joint.n_rna :],
    )
    if joint.paired:
        df["true pair"] = (
            joint.partner[df["rna_index"].to_numpy()] == joint.n_rna + df["atac_index"].to_numpy()
        )
    return df


def partners_display(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`partners_table` for display: indexed by rank, without the index columns, similarity as text
    and the true partner marked."""
    show = table.drop(columns=["cell_index", "modality"]).copy()
    show["similarity"] = show["similarity"].map(lambda x: f"{x:.3f}")
    if "true partner" in show:
        show["true partner"] = show["true partner"].map({True: "✓ same cell", False: ""})
    return show.set_index("rank")


def store_transfer(joint: Joint, label: str, source: str, table: pd.DataFrame) -> None:
    """Keep a :func:`transfer` result on the joint view.

    Sets ``joint.info["transfer"]`` and the obs columns ``transferred <label>`` (the other cells keep their
    own label) and ``transfer confidence`` (1 for the other cells), and drops the cached hover texts and figures.
    """
    joint.info["transfer"] = {"label": label, "source": source, "table": table}
    obs = joint.obs
    col = obs[label].astype(object).copy()
    col.iloc[table["cell_index"].to_numpy()] = table["transferred"].to_numpy()
    obs[f"transferred {label}"] = pd.Categorical(col)
    conf = np.ones(joint.n)
    conf[table["cell_index"].to_numpy()] = table["confidence"].to_numpy()
    obs["transfer confidence"] = conf
    joint.info.pop("hover", None)
    joint.info.pop("figures", None)
