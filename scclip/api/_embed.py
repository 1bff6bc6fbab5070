"""``embed``: cells of one or both modalities -> the model's shared space (raw and gap-closed), AnnData out."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import mudata as md

from scclip import gap
from scclip._constants import EMBED_KEY, UNS_KEY, raw_key
from scclip.api._chunked import embed_modality
from scclip.api._inputs import map_modality, open_input, preprocess_modality
from scclip.errors import ScclipError
from scclip.io import BackedData, check_chunk_size, check_chunkable, check_modality_data
from scclip.model.encode import resolve_device
from scclip.pretrained import ScclipModel, load_pretrained

logger = logging.getLogger(__name__)


def embed(
    model: ScclipModel | str | Path,
    data,
    *,
    genome: str | None = None,
    batch_size: int = 1024,
    device: str = "auto",
    paired: bool | None = None,
    key: str = EMBED_KEY,
    copy_counts: bool = False,
    close_gap: bool = True,
    gap_k: int = gap.DEFAULT_K,
    chunk_size: int | None = None,
) -> md.MuData:
    """Embed RNA and/or ATAC cells; returns a MuData whose modalities carry ``.obsm[key]`` (float32, unit norm).

    Works for RNA only, ATAC only, or both. Features are mapped onto the model's feature space (genes by id /
    name, peaks by overlap) and the coverage is recorded in ``.uns['scclip']`` of each modality and of the
    MuData, with the model name and whether the cells are paired (both modalities share ``obs_names``).

    Parameters
    ----------
    data
        MuData, AnnData, ``{"rna": AnnData, "atac": AnnData}``, :class:`scclip.io.BackedData`, or the path
        of a file (read with :func:`scclip.io.read`; with ``chunk_size``, an ``.h5ad`` / ``.h5mu`` is opened
        with :func:`scclip.io.read_backed` and never loaded whole).
    chunk_size
        Cells read, checked, mapped, preprocessed and encoded at a time. Backed data (``read_h5ad(path,
        backed="r")``, ``read_h5mu(path, backed=True)``, :func:`~scclip.io.read_backed`) always go this way
        (default 10,000 cells): only one chunk of counts is in memory and the embeddings equal the in-memory
        ones. Counts are not copied (``copy_counts=True`` is refused).
    """
    if not isinstance(model, ScclipModel):
        model = load_pretrained(model)
    cells = check_chunk_size(chunk_size)
    mdata, opened = open_input(data, chunk_size)
    try:
        in_chunks = isinstance(mdata, BackedData)
        mods = _checked_modalities(mdata, in_chunks=in_chunks, copy_counts=copy_counts)
        dev = resolve_device(device)
        model.net.to(dev).eval()
        if paired is None:
            paired = len(mods) == 2 and len(mdata["rna"].obs_names.intersection(mdata["atac"].obs_names)) > 0
        info: dict = {
            "model": model.name,
            "genome": model.feature_space.genome,
            "paired": bool(paired),
            "temperature": model.temperature,
            "key": key,
            "modalities": {},
            "warnings": [],
            **({"chunk_size": cells} if in_chunks else {}),
        }
        chunking = cells if in_chunks else None
        raw = {
            m: _encode_modality(model, mdata[m], m, info, genome=genome, chunk_size=chunking, batch_size=batch_size, device=dev)
            for m in mods
        }
    finally:
        if opened is not None:
            opened.close()
    for w in info["warnings"]:
        logger.warning(w)
    joint, info["gap"] = _joint_embedding(raw, close_gap=close_gap, k=gap_k, device=dev)
    out = {m: _embedded_modality(mdata[m], joint[m], raw[m], info, m, key=key, copy_counts=copy_counts) for m in mods}
    result = md.MuData(out)
    result.uns[UNS_KEY] = info
    return result


def _embedded_modality(adata, joint, raw, info: dict, m: str, *, key: str, copy_counts: bool) -> ad.AnnData:
    """One modality of ``embed``'s result: ``obs`` (and counts when asked), both embeddings, ``uns`` record."""
    if copy_counts:
        res = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy())
    else:
        res = ad.AnnData(obs=adata.obs.copy())
    res.obsm[key] = joint
    res.obsm[raw_key(key)] = raw
    res.uns[UNS_KEY] = {
        "model": info["model"],
        "modality": m,
        "paired": info["paired"],
        "coverage": info["modalities"][m],
        "temperature": info["temperature"],
        "gap_closed": bool(info["gap"]["closed"]),
    }
    return res


def _checked_modalities(mdata, *, in_chunks: bool, copy_counts: bool) -> list[str]:
    """The modalities to embed (``rna`` and / or ``atac``), their metadata and (in memory) values checked."""
    mods = [m for m in ("rna", "atac") if m in mdata.mod]
    if not mods:
        msg = f"the data has no 'rna' or 'atac' modality (it has {list(mdata.mod)}); rename the modalities"
        raise ScclipError(msg)
    if in_chunks and copy_counts:
        msg = "copy_counts=True needs the counts in memory; embed backed / chunked data without it"
        raise ScclipError(msg)
    for m in mods:
        (check_chunkable if in_chunks else check_modality_data)(mdata[m], m)
    return mods


def _encode_modality(model, adata, m: str, info: dict, *, genome, chunk_size, batch_size, device):
    """Map, preprocess and encode one modality (chunk by chunk when ``chunk_size``); its coverage report and
    warnings go into ``info``."""
    if chunk_size is not None:
        raw, report = embed_modality(
            model, adata, m, genome=genome, chunk_size=chunk_size, batch_size=batch_size, device=device
        )
    else:
        counts, report = map_modality(adata, model.feature_space[m], genome=genome)
        X, prep = preprocess_modality(model, counts, m)
        report = {**report, "preprocessing": prep}
        raw = model.encode(m, X, counts=counts, batch_size=batch_size, device=device)
    info["modalities"][m] = report
    found = [*report.get("warnings", []), report["preprocessing"].get("warning")]
    info["warnings"] += [f"{m}: {w}" for w in found if w]
    return raw


def _joint_embedding(raw: dict, *, close_gap: bool, k: int, device) -> tuple[dict, dict]:
    """Gap-closed embeddings per modality (or the raw ones with the reason) and the record for ``uns``."""
    if not close_gap:
        return dict(raw), {"closed": False, "reason": "close_gap=False was asked for"}
    if set(raw) != {"rna", "atac"}:
        why = "cross-modal completion needs both modalities; only " + ", ".join(raw) + " was given"
        return dict(raw), {"closed": False, "reason": why}
    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    jr, ja, rec = gap.close_gap(raw["rna"], raw["atac"], k=k, device=dev)
    return {"rna": jr, "atac": ja}, {"closed": True, **rec}
