"""Fingerprints of models and datasets, and an on-disk cache of embeddings and UMAP coordinates per
(model, dataset)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np

from scclip.explore.locations import cache_dir

_MODEL_FP: dict[tuple, str] = {}


def model_fingerprint(model_dir: str | Path) -> str:
    """Content hash of a release folder's config and weights (memoised by path, size and mtime)."""
    d = Path(model_dir)
    files = [d / "config.json", d / "model.safetensors"]
    stat = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    if stat not in _MODEL_FP:
        h = hashlib.blake2b(digest_size=12)
        for f in files:
            if f.is_file():
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(chunk)
        _MODEL_FP[stat] = h.hexdigest()
    return _MODEL_FP[stat]


def dataset_fingerprint(mdata: md.MuData) -> str:
    """Content hash of a MuData's modalities (cell and feature names, counts)."""
    import scipy.sparse as sp

    h = hashlib.blake2b(digest_size=12)
    for m in sorted(mdata.mod):
        a = mdata.mod[m]
        h.update(m.encode())
        h.update("\n".join(map(str, a.obs_names)).encode())
        h.update("\n".join(map(str, a.var_names)).encode())
        X = a.X
        if sp.issparse(X):
            X = X.tocsr()
            for arr in (X.indptr, X.indices, X.data):
                h.update(np.ascontiguousarray(arr).tobytes())
        elif X is not None:
            h.update(np.ascontiguousarray(np.asarray(X)).tobytes())
    return h.hexdigest()


def cache_file(*parts: str) -> Path:
    return cache_dir() / ("-".join(parts) + ".npz")


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def embed_cached(
    model, mdata: md.MuData, *, model_fp: str, data_fp: str | None = None
) -> tuple[md.MuData, bool]:
    """``scclip.embed(model, mdata)``, cached on disk per (model, dataset): (embedded MuData, from_cache)."""
    import scclip

    data_fp = data_fp or dataset_fingerprint(mdata)
    path = cache_file("emb", model_fp, data_fp)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            uns = json.loads(str(arrays.pop("uns")))
            mods = {}
            for m in uns["modalities"]:
                a = ad.AnnData(obs=mdata[m].obs.copy())
                for k, v in arrays.items():
                    if k.startswith(f"{m}/"):
                        a.obsm[k.split("/", 1)[1]] = v
                a.uns["scclip"] = uns["per_modality"][m]
                mods[m] = a
            out = md.MuData(mods)
            out.uns["scclip"] = uns["info"]
            return out, True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    out = scclip.embed(model, mdata)
    arrays = {f"{m}/{k}": np.asarray(v) for m in out.mod for k, v in out[m].obsm.items()}
    uns = {
        "modalities": list(out.mod),
        "per_modality": {m: jsonable(out[m].uns.get("scclip", {})) for m in out.mod},
        "info": jsonable(dict(out.uns.get("scclip", {}))),
    }
    _save_npz(path, uns=np.array(json.dumps(uns)), **arrays)
    return out, False


def jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def compute_umap(
    Z: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.3, seed: int | None = 0
) -> np.ndarray:
    """2-D UMAP (umap-learn, cosine metric) of an embedding; float32 (n, 2)."""
    import warnings

    Z = np.asarray(Z, dtype=np.float32)
    n = Z.shape[0]
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(
            n_neighbors=min(n_neighbors, n - 1),
            min_dist=min_dist,
            metric="cosine",
            random_state=seed if n <= 20_000 else None,
            low_memory=n > 50_000,
        )
        return reducer.fit_transform(Z).astype(np.float32)


def umap_cached(Z: np.ndarray, *, key: str, **kw) -> tuple[np.ndarray, bool]:
    """:func:`compute_umap`, cached on disk under ``key`` (e.g. model and dataset fingerprints)."""
    path = cache_file(
        "umap", key, hashlib.blake2b(np.ascontiguousarray(Z).tobytes(), digest_size=8).hexdigest()
    )
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["umap"], True
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    coords = compute_umap(Z, **kw)
    _save_npz(path, umap=coords)
    return coords, False
