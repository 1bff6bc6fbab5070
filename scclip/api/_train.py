"""``train``: paired cells -> a trained model, its release folder and its checkpoints.

The training loop itself (:mod:`scclip.training`: DDP, EMA, checkpoints) is imported only when :func:`train`
runs, so that embedding and the app never load it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import mudata as md
import numpy as np
import torch

from scclip.api._chunked import map_all
from scclip.api._inputs import map_modality, open_input, preprocess_modality
from scclip.api._train_stream import cache_counts, check_out_of_core, fit_streamed
from scclip.errors import ScclipError
from scclip.features import FeatureSpace, align_features, make_feature_space, restrict_to_observed
from scclip.io import (
    BackedData,
    check_chunk_size,
    check_chunkable,
    check_modality_data,
    paired_cells,
    pairing_report,
)
from scclip.model import ModelConfig, get_preset
from scclip.model.encode import resolve_device
from scclip.model.init import svd_init_
from scclip.model.structure import resolve_structure_weight
from scclip.preprocess import tfidf_fit
from scclip.pretrained import ScclipModel, load_pretrained

if TYPE_CHECKING:
    from scclip.training import TrainConfig

logger = logging.getLogger(__name__)


def build_feature_space(
    mdata: md.MuData,
    spec: str | FeatureSpace,
    *,
    n_patches: int,
    genome: str | None,
    within_chromosome: bool = False,
) -> tuple[FeatureSpace, dict]:
    """The feature space to train on.

    ``own`` (the training data's features, as in the paper); ``GENOME[:BIN_SIZE[:SCOPE]]`` (the bundled gene
    table + fixed-width genome bins, 5 kb by default; SCOPE ``observed`` (default) keeps the reference features
    the training data touch, ``all`` keeps the whole grid); or the feature space of an existing model folder.
    """
    if isinstance(spec, FeatureSpace):
        return spec, {}
    layout = {"n_patches": n_patches, "within_chromosome": within_chromosome}
    if spec == "own":
        return make_feature_space(rna=mdata["rna"], atac=mdata["atac"], genome=genome, **layout)
    head, _, tail = spec.partition(":")
    if head.lower() in ("mm10", "hg38", "grcm38", "grch38"):
        size, _, scope = tail.partition(":")
        try:
            bin_size = int(size) if size else 5000
        except ValueError:
            msg = f"--feature-space {spec!r}: the bin size after ':' must be an integer number of bp"
            raise ScclipError(msg) from None
        if scope not in ("", "observed", "all"):
            msg = (
                f"--feature-space {spec!r}: the part after the bin size must be 'observed' (default) or 'all'"
            )
            raise ScclipError(msg)
        space, reports = make_feature_space(
            genome=head, rna_kind="genes", atac_kind="bins", bin_size=bin_size, **layout
        )
        if scope == "all":
            return space, reports
        return _observed_space(mdata, space, genome=genome), reports
    try:
        return load_pretrained(spec).feature_space, {}
    except ScclipError:
        msg = (
            f"unknown --feature-space {spec!r}: use 'own', a genome ('mm10', 'hg38', optionally ':BIN_SIZE'), "
            "or a model folder whose feature space to reuse"
        )
        raise ScclipError(msg) from None


def _observed_space(mdata: md.MuData, space: FeatureSpace, *, genome: str | None) -> FeatureSpace:
    """Restrict a reference feature space to the features the training data touch (same alignment as users)."""
    kept = {}
    for m in space.modalities:
        if m not in mdata.mod:
            kept[m] = space[m]
            continue
        matrix = align_features(mdata[m], space[m], genome=genome).matrix
        kept[m] = restrict_to_observed(space[m], np.diff(matrix.tocsc().indptr) > 0)
    return FeatureSpace(space.genome, **kept)


def split_cells(
    obs,
    *,
    holdout_key: str | None,
    holdout,
    val_key: str | None,
    val_values,
    val_size: float | int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Row indices of train / validation / held-out cells. Held-out cells never reach training or early stopping."""
    n = obs.shape[0]
    held = np.zeros(n, dtype=bool)
    for key, values, what in ((holdout_key, holdout, "--holdout-key"), (val_key, val_values, "--val-key")):
        if key is not None and key not in obs.columns:
            msg = f"{what} {key!r} is not a column of obs; available: {list(obs.columns)[:20]}"
            raise ScclipError(msg)
        if key is not None and values:
            unknown = sorted(set(values) - set(obs[key].astype(str)))
            if unknown:
                msg = (
                    f"{what} {key!r} has no values {unknown}; it has {sorted(set(obs[key].astype(str)))[:20]}"
                )
                raise ScclipError(msg)
    if holdout_key is not None and holdout:
        held = obs[holdout_key].astype(str).isin(list(holdout)).to_numpy()
    rest = np.flatnonzero(~held)
    if val_key is not None and val_values:
        is_val = obs[val_key].astype(str).isin(list(val_values)).to_numpy()
        val = np.intersect1d(rest, np.flatnonzero(is_val))
    else:
        n_val = int(val_size if val_size >= 1 else round(val_size * len(rest)))
        n_val = min(n_val, max(len(rest) - 2, 0))
        val = np.sort(np.random.default_rng(seed).choice(rest, n_val, replace=False))
    train = np.setdiff1d(rest, val)
    if len(train) < 2:
        msg = f"only {len(train)} training cells remain after hold-out and validation; hold out fewer cells"
        raise ScclipError(msg)
    return {"train": train, "val": val, "holdout": np.flatnonzero(held)}


def train(
    mdata: md.MuData | BackedData | str | Path,
    *,
    out_dir: str | Path,
    model_config: str | dict | ModelConfig | None = None,
    train_config: TrainConfig | dict | None = None,
    feature_space: str | FeatureSpace = "own",
    genome: str | None = None,
    atac_method: str = "tfidf",
    holdout_key: str | None = None,
    holdout: tuple[str, ...] | list[str] = (),
    val_key: str | None = None,
    val_values: tuple[str, ...] | list[str] = (),
    val_size: float | int = 0.1,
    within_chromosome: bool = False,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    command: str | None = None,
    data_name: str | None = None,
    chunk_size: int | None = None,
    feature_path: bool = False,
    out_of_core: bool = False,
) -> ScclipModel:
    """Train scCLIP on paired cells and write ``out_dir/model`` (release folder) and ``out_dir/checkpoints``.

    Parameters
    ----------
    mdata
        Paired cells: modalities ``rna`` and ``atac`` sharing ``obs_names`` (the intersection is used); a
        backed MuData, :class:`scclip.io.BackedData` or a file path (see ``chunk_size``) works too.
    model_config, train_config
        A preset name / JSON path / dict / :class:`ModelConfig`, and :class:`TrainConfig` overrides. The defaults
        (``default`` preset, 20 epochs, lr 1e-3, weight averaging 0.98) are the configuration validated in
        ``docs/quality.md``.
    feature_space
        ``"own"`` (the data's own genes and peaks) or ``"mm10"`` / ``"hg38"`` (``[:BIN[:observed|all]]``): genes of
        the bundled table and fixed genome bins, which any later peak set maps onto (see ``docs/zero_shot.md``).
    atac_method
        ``"tfidf"`` (default; idf fitted on the training cells and stored with the model) or ``"binary"``.
        TF-IDF lowered validation FOSCTTM from 0.099 to 0.086 on SNARE-seq.
    holdout_key, holdout
        Cells whose ``obs[holdout_key]`` is in ``holdout`` are excluded from training and early stopping and
        scored only at the end (``summary['holdout_metrics']``).
    val_key, val_values, val_size
        Validation (early stopping) cells: by column values, else a seeded random ``val_size`` (fraction or count).
    feature_path
        Also fit the feature path (:mod:`scclip.model.fusion`): PCA / LSI of the same inputs and a contrastive
        MLP on the same split, whose embedding is fused with the Transformer's (cosine = the mean of both).
    chunk_size
        Build the training matrices ``chunk_size`` cells at a time (backed MuData, :func:`scclip.io.read_backed`
        or an ``.h5mu`` path always go this way, default 10,000): the raw file is never loaded whole, only the
        matrices on the model's features (compact, sparse) are in memory. Same seed, same model as in memory.
    out_of_core
        Needs ``chunk_size``: nothing of the size of the data stays in memory (:mod:`scclip.api._train_stream`).
        One pass maps the cells to an on-disk cache in ``out_dir`` (deleted at the end); batches are read from
        it in a shuffled chunk order (the same for the same seed: same seed, same model); validation cells and
        a sample of 20,000 training cells (SVD initialisation) and held-out cells (scored) are kept in memory.
        Not the in-memory model (other batches, SVD of a sample); no feature path.
    """
    t_start = time.perf_counter()
    mcfg, tcfg = _configs(model_config, train_config)
    split_kwargs = dict(holdout_key=holdout_key, holdout=holdout, val_key=val_key, val_values=val_values,
                        val_size=val_size, seed=tcfg.seed)  # fmt: skip
    cells = check_chunk_size(chunk_size)
    cache = check_out_of_core(out_of_core, chunk_size, feature_path, out_dir)
    mdata, opened = open_input(mdata, chunk_size)
    try:
        pairing, fs, fs_report, split, counts = _training_counts(
            mdata, feature_space, mcfg.n_patches, genome, within_chromosome, atac_method, cells, split_kwargs,
            cache,
        )  # fmt: skip
    finally:
        if opened is not None:
            opened.close()
    run_kw = dict(atac_method=atac_method, resume=resume, out_dir=out_dir, progress=progress)
    fitter = fit_streamed if out_of_core else _fit_in_memory
    model, result, reports, (matrices, summary_split), extra = fitter(fs, mcfg, tcfg, counts, split, **run_kw)
    path_info = (
        add_feature_path(model, matrices[0], matrices[2], split, seed=tcfg.seed) if feature_path else None
    )
    run = _run_summary(result, summary_split, model, matrices, (holdout_key, holdout), tcfg, mcfg)
    model.summary = {
        "data": data_name,
        "command": command,
        "pairing": pairing,
        "feature_space_report": {**reports, **({"build": fs_report} if fs_report else {})},
        **run,
        "n_holdout_cells": len(split["holdout"]),
        **({"feature_path": path_info} if path_info else {}),
        **extra,
        "total_seconds": time.perf_counter() - t_start,
    }
    from scclip.training import is_main_process

    model.net.to("cpu")
    if is_main_process():  # under torchrun only rank 0 writes the release folder
        model.save_pretrained(Path(out_dir) / "model")
    return model


def _fit_in_memory(fs, mcfg, tcfg, counts, split, *, atac_method, resume, out_dir, progress):
    """Preprocess the in-memory matrices and :func:`scclip.training.fit`: (model, fit result, reports,
    (the matrices and split for the summary), nothing extra)."""
    from scclip.training import fit

    model, prepared = _new_model(fs, mcfg, tcfg, counts, split, atac_method=atac_method, resume=resume)
    (X_rna, rep_rna), (X_atac, rep_atac) = prepared["rna"], prepared["atac"]
    model.net.to(resolve_device(tcfg.device))
    result = fit(
        model.net, X_rna, X_atac, train_idx=split["train"], val_idx=split["val"], cfg=tcfg, out_dir=out_dir,
        resume=resume, progress=progress,
    )  # fmt: skip
    matrices = (X_rna, X_atac, counts["atac"][0])
    return model, result, {"rna": rep_rna, "atac": rep_atac}, (matrices, split), {}


def add_feature_path(
    model: ScclipModel,
    X_rna,
    atac_counts,
    split: dict,
    *,
    seed: int,
    members: int | None = None,
    gene_activity: bool = True,
) -> dict:
    """Fit the feature path on the same split (projections on training + validation cells, ``members`` MLPs
    early-stopped on the validation cells, as the baseline recipe) and attach it to ``model``; returns its record.

    ``X_rna``: the preprocessed RNA matrix; ``atac_counts``: ATAC counts on the model's features; ``members``:
    default :data:`scclip.model.fusion.DEFAULT_MEMBERS`; ``gene_activity``: add the gene-activity bridge when
    the model's genes and ATAC features have coordinates (cross-validated: docs/quality.md).
    """
    from scclip.features import gene_activity_weights
    from scclip.model.fusion import DEFAULT_MEMBERS, fit_feature_path

    fs = model.feature_space
    activity = gene_activity_weights(fs["rna"].to_frame(), fs["atac"].to_frame()) if gene_activity else None
    train_val = np.union1d(split["train"], split["val"])
    model.feature_path, info = fit_feature_path(
        X_rna, atac_counts, fit_idx=train_val, val_idx=split["val"], seed=seed,
        members=DEFAULT_MEMBERS if members is None else members, activity=activity,
    )  # fmt: skip
    info["gene_activity"] = bool(model.feature_path.config.get("gene_activity", False))
    return info


def _configs(model_config, train_config) -> tuple[ModelConfig, TrainConfig]:
    """The model configuration and the training settings (structure weight resolved for the summary and the
    checkpoints; ``None`` = automatic, see :class:`~scclip.training.TrainConfig`)."""
    from scclip.training import TrainConfig

    mcfg = model_config if isinstance(model_config, ModelConfig) else get_preset(model_config)
    tcfg = (
        train_config if isinstance(train_config, TrainConfig) else TrainConfig.from_dict(train_config or {})
    )
    return mcfg, replace(tcfg, structure_weight=resolve_structure_weight(tcfg.structure_weight, mcfg))


def _new_model(fs, mcfg, tcfg, counts, split, *, atac_method: str, resume: bool):
    """A seeded new model on ``fs`` (idf from the training cells only), the preprocessed matrices
    ``{modality: (CSR, report)}``, and unless resuming the SVD initialisation of the patch embeddings."""
    prep = {"rna": {"method": "log1p", "target_sum": 1e4}, "atac": {"method": atac_method}}
    idf = tfidf_fit(counts["atac"][0][split["train"]]) if atac_method == "tfidf" else None
    torch.manual_seed(tcfg.seed)  # seeded initial weights: a fixed seed reproduces the run (and its resume)
    model = ScclipModel.create(fs, mcfg, preprocessing=prep, idf=idf)
    prepared = {}
    for m, (X, report) in counts.items():
        X, done = preprocess_modality(model, X, m)
        prepared[m] = (X, {**report, "preprocessing": done})
    if mcfg.embedding_init == "svd" and not resume:
        for m in ("rna", "atac"):
            X = prepared[m][0]
            svd_init_(model.net.encoders[m].embed, X[split["train"]], seed=tcfg.seed, skip=mcfg.svd_skip)
    return model, prepared


def _training_counts(
    mdata, feature_space, n_patches, genome, within_chromosome, atac_method, chunk_cells, split_kwargs, cache
):
    """The inputs of :func:`train`: check the paired data (MuData, or :class:`scclip.io.BackedData` mapped
    ``chunk_cells`` cells at a time), build the feature space, split the cells (``split_kwargs`` go to
    :func:`split_cells`) and map both modalities onto the features.

    Returns (pairing report, feature space, its build report, split, ``{modality: (counts, report)}``, or
    with a ``cache`` folder the :class:`~scclip.api._train_stream.StreamedCounts` of the out-of-core path).
    """
    in_chunks = isinstance(mdata, BackedData)
    for m in ("rna", "atac"):
        if m not in mdata.mod:
            msg = f"training needs paired rna and atac; the data has only {list(mdata.mod)}"
            raise ScclipError(msg)
        (check_chunkable if in_chunks else check_modality_data)(mdata[m], m)
    pairing = pairing_report(mdata)
    mdata = paired_cells(mdata)
    fs, fs_report = build_feature_space(
        mdata, feature_space, n_patches=n_patches, genome=genome, within_chromosome=within_chromosome
    )
    if atac_method not in ("binary", "tfidf"):
        msg = f"atac_method must be 'binary' or 'tfidf', got {atac_method!r}"
        raise ScclipError(msg)
    split = split_cells(mdata["rna"].obs, **split_kwargs)
    if cache is not None:
        seed = split_kwargs["seed"]
        counts = cache_counts(
            mdata, fs, split, genome=genome, chunk_size=chunk_cells, folder=cache, seed=seed
        )
    elif in_chunks:
        counts = {
            m: map_all(mdata[m], fs[m], m, genome=genome, chunk_size=chunk_cells) for m in ("rna", "atac")
        }
    else:
        counts = {m: map_modality(mdata[m], fs[m], genome=genome) for m in ("rna", "atac")}
    return pairing, fs, fs_report, split, counts


def _run_summary(result, split, model, matrices, held, tcfg, mcfg) -> dict:
    """The part of ``model.summary`` on the split, the configurations and the :func:`fit` run, and with more
    than one held-out cell, their FOSCTTM and top-1 matching (``holdout_metrics``). ``matrices``: the
    preprocessed RNA and ATAC and the ATAC counts; ``held``: (holdout key, values)."""
    X_rna, X_atac, atac_counts = matrices
    holdout_key, holdout = held
    out = {
        "n_train_cells": len(split["train"]),
        "n_val_cells": len(split["val"]),
        "n_holdout_cells": len(split["holdout"]),
        "holdout": {"key": holdout_key, "values": list(holdout)},
        "train_config": tcfg.to_dict(),
        "model_config": mcfg.to_dict(),
        **{
            k: result[k]
            for k in ("epochs_run", "best_epoch", "stopped_early", "train_seconds", "device", "history")
        },
        "cells_per_second": len(split["train"]) * result["epochs_run"] / max(result["train_seconds"], 1e-9),
        "validation": {
            "foscttm": result["best_val_foscttm"],
            "top1": next(
                (h["val_top1"] for h in result["history"] if h["epoch"] == result["best_epoch"]), None
            ),
        },
    }
    if len(split["holdout"]) > 1:
        from scclip.metrics import foscttm, topk_accuracy

        h = split["holdout"]
        zr = model.encode("rna", X_rna[h])
        za = model.encode("atac", X_atac[h], counts=None if atac_counts is None else atac_counts[h])
        out["holdout_metrics"] = {
            "n_cells": len(h),
            "foscttm": float(foscttm(zr, za)["mean"]),
            "top1": float(topk_accuracy(zr, za, k=1)["mean"]),
        }
    return out
