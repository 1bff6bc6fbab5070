"""Reading uploaded or server-side files into one MuData, and the validation summary shown before
embedding."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np

from scclip.errors import ScclipError
from scclip.explore.constants import MODALITY_LABELS
from scclip.explore.input_size import check_memory

UPLOAD_SUFFIXES = (".h5mu", ".h5ad", ".h5", ".tsv.gz", ".tar.gz", ".tgz")
#: Prefix of the reading notes that name a file left out because it could not be read.
SKIPPED_NOTE = "not used: "
#: Streamlit's own default upload limit (``server.maxUploadSize``); ``$SCCLIP_MAX_UPLOAD_MB`` changes ours.
DEFAULT_MAX_UPLOAD_MB = 200.0


def max_upload_bytes() -> int:
    """The largest upload (all files together) read by :func:`read_uploads`: ``$SCCLIP_MAX_UPLOAD_MB`` or 200 MB."""
    try:
        mb = float(os.environ.get("SCCLIP_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB))
    except ValueError:
        mb = DEFAULT_MAX_UPLOAD_MB
    return int(mb * 1024**2)


def read_uploads(
    files: list[tuple[str, bytes]],
    *,
    model=None,
    paired: bool | None = None,
    max_bytes: int | None = None,
) -> tuple[md.MuData, list[str]]:
    """Read uploaded files (``(name, content)`` pairs) like :func:`read_files`, in a private temporary folder.

    The folder (mode 0700, one per call, so no other session sees the files) is deleted before returning, also
    on errors: the data are read into memory. Uploads above ``max_bytes`` (default :func:`max_upload_bytes`)
    are refused with a pointer to the server-path field.
    """
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    total = sum(len(data) for _, data in files)
    if total > limit:
        msg = (
            f"the upload is {total / 1024**2:,.1f} MB, above this server's limit of {limit / 1024**2:,.1f} MB: "
            "copy the file to the server and give its path in the 'Server path' tab instead"
        )
        raise ScclipError(msg)
    tmp = Path(tempfile.mkdtemp(prefix="scclip_upload_"))  # private: created with mode 0700
    try:
        paths = []
        for name, data in files:
            p = tmp / Path(str(name).replace("\\", "/")).name  # no folders, no escape
            if p.name in ("", ".", ".."):
                msg = f"invalid upload file name {name!r}"
                raise ScclipError(msg)
            p.write_bytes(data)
            paths.append(p)
        mdata, notes = read_files(paths, model=model, paired=paired)
        return mdata, [_without(tmp, n) for n in notes]
    except ScclipError as err:  # say the uploaded file's own name, not the server's temporary path
        raise type(err)(_without(tmp, str(err))) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _without(tmp: Path, text: str) -> str:
    """``text`` with the private temporary folder of an upload removed from its paths."""
    return text.replace(f"{tmp}{os.sep}", "").replace(str(tmp), "the upload")


def _is_fragments(name: str) -> bool:
    n = name.lower()
    return "fragments" in n and n.endswith((".tsv.gz", ".tsv", ".bed.gz"))


def read_files(
    paths: list[Path], *, model=None, paired: bool | None = None, max_bytes: int | None = None
) -> tuple[md.MuData, list[str]]:
    """Read uploaded or server-side files into one MuData: (mdata, notes).

    One multi-modal file (``.h5mu``, 10x ARC ``.h5``), or one RNA and one ATAC file, or RNA + a 10x
    ``fragments.tsv.gz`` (counted onto the ``model``'s ATAC features for the RNA barcodes). ``paired=None``
    decides from the barcodes: paired when most cells of the smaller modality occur in both. A file that cannot
    be read is left out when others can be, with a note starting with :data:`SKIPPED_NOTE` saying why.
    Files whose declared size needs more memory than ``max_bytes`` (default ``$SCCLIP_APP_MAX_GB``, see
    :func:`~scclip.explore.input_size.check_memory`) are refused before any of them is read.
    """
    from scclip.io import paired_cells, pairing_report, read

    notes: list[str] = []
    paths = [Path(p) for p in paths]
    if not paths:
        raise ScclipError("no file given: upload a file or type a server path")
    for p in paths:
        if not p.exists():
            raise ScclipError(f"{p} does not exist on the server: check the path")
    frags = [p for p in paths if _is_fragments(p.name)]
    others = [p for p in paths if p not in frags]
    bad = [p.name for p in others if not p.is_dir() and not p.name.lower().endswith(UPLOAD_SUFFIXES)]
    if bad:
        raise ScclipError(
            f"unsupported file {bad[0]!r}: upload .h5mu, .h5ad, a 10x .h5, a 10x .tar.gz or a fragments.tsv.gz"
        )
    check_memory(others, max_bytes=max_bytes)  # from the declared shapes, before anything is read
    mods: dict[str, ad.AnnData] = {}
    readable, skipped = [], []
    for p in others:  # a bad file among good ones is left out (and named), not fatal to the others
        try:
            readable.append((p, read(p)))
        except ScclipError as err:
            skipped.append((p, err))
    if skipped and not readable and not frags:
        raise skipped[0][1]
    notes += [f"{SKIPPED_NOTE}{p.name}: {err}" for p, err in skipped]
    for p, mdata in readable:
        notes += [f"{p.name}: {n}" for n in mdata.uns.get("scclip_read", {}).get("notes", [])]
        for m in mdata.mod:
            if m in mods:
                raise ScclipError(
                    f"two files hold {MODALITY_LABELS.get(m, m)} data ({p.name} and an earlier one); give at "
                    "most one RNA and one ATAC source"
                )
            mods[m] = mdata.mod[m]
    if frags:
        if len(frags) > 1 or "atac" in mods:
            raise ScclipError("give one fragments file and no other ATAC file")
        if model is None:
            raise ScclipError("counting a fragments file needs a model (its ATAC features are the intervals)")
        from scclip.fragments import count_fragments

        f = model.feature_space["atac"]
        keep = f.chrom != ""
        bc = mods["rna"].obs_names if "rna" in mods else None
        atac = count_fragments(
            frags[0], f.chrom[keep], f.start[keep], f.end[keep], barcodes=bc, feature_names=f.names[keep]
        )
        atac.var["chrom"], atac.var["start"], atac.var["end"] = f.chrom[keep], f.start[keep], f.end[keep]
        mods["atac"] = atac
        notes.append(
            f"{frags[0].name}: counted cut sites of {atac.n_obs} cells onto the model's {int(keep.sum())} ATAC features"
        )
    if not mods:
        raise ScclipError("the files hold no RNA or ATAC data")
    mdata = md.MuData(mods)
    if len(mods) == 2:
        rep = pairing_report(mdata)
        auto = rep["n_shared"] >= 0.5 * min(rep["n_rna"], rep["n_atac"])
        use_paired = auto if paired is None else paired
        if use_paired:
            mdata = paired_cells(mdata)
            notes.append(f"paired: {rep['n_shared']:,} barcodes occur in both modalities; kept those cells")
        else:
            notes.append(
                f"unpaired: RNA and ATAC share {rep['n_shared']:,} barcodes; treated as different cells"
            )
    return mdata, notes


def data_genome(mdata: md.MuData) -> tuple[str | None, str]:
    """The data's own assembly and how it is known: declared (``uns['genome']``, 10x ``var['genome']``) or
    inferred from chromosome names, interval ends and gene symbols; ``(None, "unknown")`` when unsure. Never the
    model's: the summary compares the two."""
    from scclip.features import var_intervals
    from scclip.genome import declared_genomes, genome_alias, infer_genome

    if genome_alias(mdata.uns.get("genome")):
        return genome_alias(mdata.uns["genome"]), "declared in uns['genome']"
    for m in ("atac", "rna"):
        if m in mdata.mod:
            for source, value in declared_genomes(mdata[m]):
                if genome_alias(value):
                    return genome_alias(value), f"declared in {m} {source}"
    chroms = ends = genes = None
    if "atac" in mdata.mod:
        chrom, _, end, _ = var_intervals(mdata["atac"], errors="coerce")
        keep = chrom != ""
        chroms, ends = chrom[keep], np.asarray(end)[keep]
    if "rna" in mdata.mod:
        genes = np.asarray(mdata["rna"].var_names)
    guess = infer_genome(chroms, genes, ends=ends)
    return (guess, "inferred from the features") if guess else (None, "unknown")


def refusal(summary: dict, model=None) -> dict | None:
    """Why a read dataset cannot be used with ``model`` (``summary`` from :func:`validation_summary`), in plain
    words, or None when it can: ``{"errors", "species_mismatch", "data_genome", "model_genome", "advice"}``."""
    from scclip.genome import SPECIES

    if not summary["errors"]:
        return None
    data_g = summary.get("genome")
    model_g = model.feature_space.genome if model is not None else None
    data_sp, model_sp = SPECIES.get(data_g or ""), SPECIES.get(model_g or "")
    species = bool(data_sp and model_sp and data_sp != model_sp)
    if species:
        advice = (
            f"These data are {data_sp} ({data_g}) and the model is {model_sp} ({model_g}): a model can only embed "
            f"cells of the species it was trained on. Train a model on these data ({data_g} genes and genome "
            f"bins), or choose a {data_sp} model on the Model page."
        )
    else:
        advice = (
            f"the model cannot embed them ({summary['errors'][0]}). Choose a model that fits these data on the "
            "Model page, or train one on them on the Train page."
        )
    return {"errors": list(summary["errors"]), "species_mismatch": species, "data_genome": data_g,
            "model_genome": model_g, "advice": advice}  # fmt: skip


def validation_summary(mdata: md.MuData, model=None) -> dict:
    """What the app shows before embedding: cells, features, pairing, genome and coverage against ``model``.

    Returns ``{"modalities": {m: {...}}, "pairing": {...}, "genome": ..., "warnings": [...], "errors": [...]}``;
    coverage problems (no overlap, wrong genome) are collected as readable errors, never raised.
    """
    from scclip.io import pairing_report
    from scclip.preprocess import diagnose

    out: dict = {"modalities": {}, "warnings": [], "errors": []}
    out["pairing"] = pairing_report(mdata) if len(mdata.mod) == 2 else None
    out["genome"], out["genome_source"] = data_genome(mdata)
    for m in ("rna", "atac"):
        if m not in mdata.mod:
            continue
        a = mdata[m]
        X = a.X
        nnz = X.nnz if hasattr(X, "nnz") else int(np.count_nonzero(X))
        row = {
            "cells": int(a.n_obs),
            "features": int(a.n_vars),
            "non-zeros per cell": float(nnz / max(a.n_obs, 1)),
            "obs columns": [str(c) for c in a.obs.columns],
        }
        if m == "rna":
            looks_normalized, why = diagnose(X)
            if looks_normalized:
                out["warnings"].append(
                    f"RNA: the values look already normalised ({why}); they are used as they are, "
                    "not normalised again (upload raw counts for the model's own normalisation)"
                )
        if model is not None:
            try:
                from scclip.api import map_modality

                _, rep = map_modality(a, model.feature_space[m])
                row["coverage"] = rep
                out["warnings"] += [f"{MODALITY_LABELS[m]}: {w}" for w in rep.get("warnings", [])]
            except ScclipError as err:
                out["errors"].append(f"{MODALITY_LABELS[m]}: {err}")
        out["modalities"][m] = row
    if len(mdata.mod) < 2:
        out["warnings"].append(
            "only one modality: cells can be embedded, but the joint RNA + ATAC views need both"
        )
    return out
