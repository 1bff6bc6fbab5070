"""Hand-off to CELLxGENE and scanpy: ``.h5ad`` bytes per modality, or one joint file, that open as they are.

Each file holds the counts when given (``X``, CSR float32; else an empty matrix), ``obs`` with the labels and the
transferred labels (strings as categoricals, no mixed types), ``obsm['X_umap']`` and ``obsm['X_scclip']``
(float32), and ``uns['scclip']`` as plain JSON-safe values. CELLxGENE (desktop / cellxgene-gateway) needs
``obsm['X_umap']`` with two columns and unique ``obs_names``; both are guaranteed here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclip._constants import EMBED_KEY
from scclip.errors import ScclipError
from scclip.explore.cache import jsonable
from scclip.explore.joint import Joint

#: Which cells :func:`h5ad_bytes` writes.
PARTS = ("rna", "atac", "joint")


def _clean_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """obs that h5ad writers and CELLxGENE accept: text / mixed columns as string categoricals."""
    out = obs.copy()
    for c in out.columns:
        s = out[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s):
            out[c] = pd.Categorical(s.astype(object).where(s.notna(), None).astype("string").fillna("nan"))
        elif pd.api.types.is_bool_dtype(s):
            out[c] = s.astype(bool)
    out.columns = [str(c) for c in out.columns]
    return out


def handoff_anndata(joint: Joint, part: str = "joint", *, data: md.MuData | None = None) -> ad.AnnData:
    """The AnnData that :func:`h5ad_bytes` writes (see there); handy for tests and notebooks."""
    if part not in PARTS:
        raise ScclipError(f"part must be one of {PARTS}, not {part!r}")
    if joint.umap is None:
        raise ScclipError("compute the UMAP first (joint.umap is empty): the file needs obsm['X_umap']")
    rows = {
        "rna": np.arange(joint.n_rna),
        "atac": np.arange(joint.n_rna, joint.n),
        "joint": np.arange(joint.n),
    }[part]
    obs = _clean_obs(joint.obs.iloc[rows].reset_index(drop=True))
    names = obs["barcode"].astype(str).to_numpy()
    if part == "joint" or pd.Index(names).has_duplicates:
        names = np.char.add(
            np.char.add(names.astype(str), "-"), obs["modality"].astype(str).to_numpy().astype(str)
        )
    obs.index = pd.Index(names).astype(str)
    X, var = sp.csr_matrix((rows.size, 0), dtype=np.float32), None
    if data is not None and part in data.mod:
        X = data[part].X
        X = (X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))).astype(np.float32)
        var = data[part].var.copy()
        if X.shape[0] != rows.size:
            raise ScclipError(f"the {part} counts have {X.shape[0]} cells, the joint table {rows.size}")
    out = ad.AnnData(X=X, obs=obs, var=var)
    out.var_names_make_unique()
    out.obsm["X_umap"] = np.asarray(joint.umap[rows], dtype=np.float32)
    out.obsm[EMBED_KEY] = np.asarray(joint.Z[rows], dtype=np.float32)
    info = {k: v for k, v in joint.info.items() if k not in ("transfer", "hover")}
    out.uns["scclip"] = jsonable({**info, "part": part, "paired": bool(joint.paired)})
    return out


def h5ad_bytes(joint: Joint, part: str = "joint", *, data: md.MuData | None = None) -> bytes:
    """``.h5ad`` bytes of one modality (``part="rna"`` / ``"atac"``) or all cells (``"joint"``).

    Parameters
    ----------
    joint
        The joint table with its UMAP (``joint.umap``); its obs carry the labels and, after
        :func:`~scclip.explore.store_transfer`, ``transferred <label>`` and ``transfer confidence``.
    part
        ``"rna"``, ``"atac"`` or ``"joint"`` (obs_names ``<barcode>-RNA`` / ``<barcode>-ATAC``).
    data
        The counts MuData; when given (and ``part`` is a modality) its ``X`` and ``var`` go into the file, so
        CELLxGENE can colour by genes / peaks. Without it ``X`` has no columns.

    Returns
    -------
    bytes of an ``.h5ad`` file (``anndata.read_h5ad`` reads it back).
    """
    adata = handoff_anndata(joint, part, data=data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scclip_{part}.h5ad"
        adata.write_h5ad(path, compression="gzip")
        return path.read_bytes()
