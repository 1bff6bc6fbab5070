"""Downloads of an embedding: UMAP coordinates and every cell's top matches as CSV, and the embedded MuData
as ``.h5mu`` bytes."""

from __future__ import annotations

from pathlib import Path

import mudata as md

from scclip.explore.cache import jsonable
from scclip.explore.joint import Joint


def umap_csv(joint: Joint) -> bytes:
    """UMAP coordinates with barcode, modality and obs columns as CSV."""
    df = joint.obs.copy()
    if joint.umap is not None:
        df.insert(2, "umap_1", joint.umap[:, 0])
        df.insert(3, "umap_2", joint.umap[:, 1])
    return df.to_csv(index=False).encode()


def matches_csv(joint: Joint, k: int = 10) -> bytes:
    """The top-``k`` cross-modal matches of every cell (:func:`scclip.match.match_table`) as CSV."""
    from scclip.match import match_table

    b = joint.obs["barcode"].to_numpy()
    df = match_table(joint.Z[: joint.n_rna], joint.Z[joint.n_rna :], rna_names=b[: joint.n_rna],
                     atac_names=b[joint.n_rna :], k=k, paired=False)  # fmt: skip
    return df.to_csv(index=False).encode()


def h5mu_bytes(emb: md.MuData, joint: Joint | None = None) -> bytes:
    """The embedded MuData (with ``obsm['X_umap']`` per modality when known) as ``.h5mu`` bytes."""
    import tempfile

    out = emb.copy()
    if joint is not None and joint.umap is not None:
        out["rna"].obsm["X_umap"] = joint.umap[: joint.n_rna]
        out["atac"].obsm["X_umap"] = joint.umap[joint.n_rna :]
    for m in out.mod:
        out[m].uns = {"scclip": jsonable(out[m].uns.get("scclip", {}))}
    out.uns = {"scclip": jsonable(dict(out.uns.get("scclip", {})))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embedding.h5mu"
        with md.set_options(pull_on_update=False):
            out.write_h5mu(path)
        return path.read_bytes()
