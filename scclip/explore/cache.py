"""Fingerprints of models and datasets, and an on-disk cache of embeddings and UMAP coordinates per
(model, dataset)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import zipfile
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np

from scclip.explore.events import record
from scclip.explore.locations import cache_dir
from scclip.io import atomic_write

logger = logging.getLogger(__name__)

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


#: Start of the note given when the cache folder cannot be used (the app shows it once per session).
CACHE_OFF_NOTE = "cache off: "
_CHECK_KEY = "_checksum"
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def cache_file(*parts: str) -> Path:
    return cache_dir() / ("-".join(parts) + ".npz")


def _key_lock(name: str) -> threading.Lock:
    """One lock per cache entry: sessions asking for the same entry at once compute it once."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(name, threading.Lock())


def _digest(arrays: dict) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _note(notes: list | None, text: str) -> None:
    if notes is None:
        logger.warning(text)
    else:
        notes.append(text)


def _cache_path(notes: list | None, *parts: str) -> Path | None:
    """The entry's path, or None (with a note) when the cache folder cannot be created."""
    try:
        return cache_file(*parts)
    except OSError as err:
        _note(notes, _off_note(err))
        return None


def _off_note(err: OSError) -> str:
    where = os.environ.get("SCCLIP_CACHE_DIR") or "~/.cache/scclip"
    return (
        f"{CACHE_OFF_NOTE}the cache folder {where} cannot be written ({type(err).__name__}: {err}); embeddings and "
        "UMAPs are computed each time instead of being cached (set $SCCLIP_CACHE_DIR to a writable folder)"
    )


def _load_npz(path: Path | None, notes: list | None, what: str) -> dict | None:
    """The arrays of a cache entry whose checksum is right; a missing entry gives None, a truncated or
    corrupt one is deleted and gives None with a note (it is then recomputed)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if _CHECK_KEY not in arrays:  # an entry of an older version, before checksums
            raise ValueError("no checksum: written by an older version")
        stored = str(arrays.pop(_CHECK_KEY))
        if stored != _digest(arrays):
            raise ValueError("checksum mismatch")
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        with contextlib.suppress(OSError):
            path.unlink()
        _note(notes, f"the cached {what} {path.name} was incomplete or corrupt ({err}); recomputed it")
        return None


def _save_npz(path: Path | None, notes: list | None, **arrays) -> None:
    """Write a cache entry atomically (a temporary file, then a rename) with a checksum of its arrays; a
    failure (read-only folder, full disk) leaves no entry and a note."""
    if path is None:
        return
    arrays[_CHECK_KEY] = np.array(_digest(arrays))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try:
        atomic_write(path, write)
    except OSError as err:
        _note(notes, _off_note(err))


def _embedded_from(arrays: dict, mdata: md.MuData) -> md.MuData:
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
    return out


def embed_cached(
    model, mdata: md.MuData, *, model_fp: str, data_fp: str | None = None, notes: list | None = None
) -> tuple[md.MuData, bool]:
    """``scclip.embed(model, mdata)``, cached on disk per (model, dataset): (embedded MuData, from_cache).

    Entries carry a checksum: a truncated or corrupt one is recomputed, and an unusable cache folder means no
    caching; both add a note to ``notes`` (logged when ``notes`` is None). Sessions asking for the same entry
    at once wait for one computation.
    """
    import scclip

    data_fp = data_fp or dataset_fingerprint(mdata)
    path = _cache_path(notes, "emb", model_fp, data_fp)
    with _key_lock(f"emb-{model_fp}-{data_fp}"):
        arrays = _load_npz(path, notes, "embedding")
        if arrays is not None:
            try:
                out = _embedded_from(arrays, mdata)
                record("embed_hit", data_fp)
                return out, True
            except (KeyError, ValueError, TypeError) as err:
                _note(
                    notes, f"the cached embedding {path.name} does not fit these data ({err}); recomputed it"
                )
        out = scclip.embed(model, mdata)
        record("embed_compute", data_fp)
        arrays = {f"{m}/{k}": np.asarray(v) for m in out.mod for k, v in out[m].obsm.items()}
        uns = {
            "modalities": list(out.mod),
            "per_modality": {m: jsonable(out[m].uns.get("scclip", {})) for m in out.mod},
            "info": jsonable(dict(out.uns.get("scclip", {}))),
        }
        _save_npz(path, notes, uns=np.array(json.dumps(uns)), **arrays)
    return out, False


def jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


#: Points above which :func:`compute_umap` fits UMAP on a seeded sample of this many and places the rest.
UMAP_MAX_FIT = 50_000
#: Nearest fitted points (cosine, in the embedding) whose mean position places each of the other points.
UMAP_PLACE_K = 10


def compute_umap(
    Z: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.3,
    seed: int | None = 0,
    max_fit: int = UMAP_MAX_FIT,
) -> np.ndarray:
    """2-D UMAP (umap-learn, cosine metric) of an embedding; float32 (n, 2).

    Above ``max_fit`` points the layout is fitted on a seeded random ``max_fit`` of them and every other point
    is placed at the mean position of its :data:`UMAP_PLACE_K` most cosine-similar fitted points (blocked
    matrix products, linear in the points). A UMAP fit of 754,000 points would take hours on 2 cores and
    ``umap.transform`` places ~140 points/s there (docs/benchmarks.md, section 11); placing by neighbours is
    the same idea without the optimisation step.
    """
    Z = np.asarray(Z, dtype=np.float32)
    n = Z.shape[0]
    if n > max_fit >= 4:
        rng = np.random.default_rng(0 if seed is None else seed)
        fit = np.sort(rng.choice(n, int(max_fit), replace=False))
        coords = np.empty((n, 2), dtype=np.float32)
        coords[fit] = compute_umap(
            Z[fit], n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, max_fit=max_fit
        )
        rest = np.setdiff1d(np.arange(n), fit)
        coords[rest] = place_by_neighbours(Z[rest], Z[fit], coords[fit], k=UMAP_PLACE_K)
        return coords
    if n < 4:
        return np.zeros((n, 2), dtype=np.float32)
    import warnings

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


def place_by_neighbours(query: np.ndarray, ref: np.ndarray, ref_coords: np.ndarray, *, k: int) -> np.ndarray:
    """``(n, 2)``: each ``query`` row at the mean 2-D position of its ``k`` most cosine-similar ``ref`` rows."""
    from scclip.match import topk_partners

    idx, _ = topk_partners(query, ref, k=min(int(k), len(ref)))  # (n, k)
    return ref_coords[idx].mean(axis=1).astype(np.float32)


def umap_cached(Z: np.ndarray, *, key: str, notes: list | None = None, **kw) -> tuple[np.ndarray, bool]:
    """:func:`compute_umap`, cached on disk under ``key`` (e.g. model and dataset fingerprints); checksummed
    and noted like :func:`embed_cached`."""
    zfp = hashlib.blake2b(np.ascontiguousarray(Z).tobytes(), digest_size=8).hexdigest()
    path = _cache_path(notes, "umap", key, zfp)
    with _key_lock(f"umap-{key}-{zfp}"):
        arrays = _load_npz(path, notes, "UMAP")
        if arrays is not None and arrays.get("umap", np.empty(0)).shape == (Z.shape[0], 2):
            record("umap_hit", key)
            return arrays["umap"], True
        coords = compute_umap(Z, **kw)
        record("umap_compute", key)
        _save_npz(path, notes, umap=coords)
    return coords, False
