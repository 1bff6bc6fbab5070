"""``embed``: cells of one or both modalities -> the model's shared space (raw and gap-closed), AnnData out."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import mudata as md

from scclip import chunked, gap, stream
from scclip.api import EMBED_KEY, _open_input, prepare_modality
from scclip.errors import ScclipError
from scclip.pretrained import ScclipModel, load_pretrained
from scclip.training import encode_csr, resolve_device

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
        MuData, AnnData, ``{"rna": AnnData, "atac": AnnData}``, :class:`scclip.stream.BackedData`, or the path
        of a file (read with :func:`scclip.io.read`; with ``chunk_size``, an ``.h5ad`` / ``.h5mu`` is opened
        with :func:`scclip.stream.read_backed` and never loaded whole).
    chunk_size
        Cells read, checked, mapped, preprocessed and encoded at a time. Backed data (``read_h5ad(path,
        backed="r")``, ``read_h5mu(path, backed=True)``, :func:`~scclip.stream.read_backed`) always go this way
        (default 10,000 cells): only one chunk of counts is in memory and the embeddings equal the in-memory
        ones. Counts are not copied (``copy_counts=True`` is refused).
    """
    if not isinstance(model, ScclipModel):
        model = load_pretrained(model)
    cells = stream.check_chunk_size(chunk_size)
    mdata, opened = _open_input(data, chunk_size)
    try:
        in_chunks = isinstance(mdata, stream.BackedData)
        mods = [m for m in ("rna", "atac") if m in mdata.mod]
        if not mods:
            msg = (
                f"the data has no 'rna' or 'atac' modality (it has {list(mdata.mod)}); rename the modalities"
            )
            raise ScclipError(msg)
        if in_chunks and copy_counts:
            msg = "copy_counts=True needs the counts in memory; embed backed / chunked data without it"
            raise ScclipError(msg)
        from scclip.io import check_modality_data

        for m in mods:
            (stream.check_chunkable if in_chunks else check_modality_data)(mdata[m], m)
        dev = resolve_device(device)
        model.net.to(dev).eval()
        if paired is None:
            paired = len(mods) == 2 and len(mdata["rna"].obs_names.intersection(mdata["atac"].obs_names)) > 0
        out = {}
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
        raw = {}
        for m in mods:
            if in_chunks:
                raw[m], report = chunked.embed_modality(
                    model, mdata[m], m, genome=genome, chunk_size=cells, batch_size=batch_size, device=dev
                )
            else:
                X, report = prepare_modality(model, mdata[m], m, genome=genome)
                raw[m] = encode_csr(model.net, m, X, batch_size=batch_size, device=dev)
            info["modalities"][m] = report
            found = [*report.get("warnings", []), report["preprocessing"].get("warning")]
            info["warnings"] += [f"{m}: {w}" for w in found if w]
    finally:
        if opened is not None:
            opened.close()
    for w in info["warnings"]:
        logger.warning(w)
    joint, info["gap"] = _joint_embedding(raw, close_gap=close_gap, k=gap_k, device=dev)
    for m in mods:
        adata = mdata[m]
        if copy_counts:
            res = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy())
        else:
            res = ad.AnnData(obs=adata.obs.copy())
        res.obsm[key] = joint[m]
        res.obsm[f"{key}_raw"] = raw[m]
        res.uns["scclip"] = {
            "model": model.name,
            "modality": m,
            "paired": bool(paired),
            "coverage": info["modalities"][m],
            "temperature": model.temperature,
            "gap_closed": bool(info["gap"]["closed"]),
        }
        out[m] = res
    result = md.MuData(out)
    result.uns["scclip"] = info
    return result


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
