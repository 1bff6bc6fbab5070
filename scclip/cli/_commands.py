"""The ``scclip train | embed | match | evaluate | convert-checkpoint`` commands, one function each."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from scclip.cli._results import run_evaluate, run_match
from scclip.errors import ScclipError


def _check_positive(args, *names) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            msg = f"--{name.replace('_', '-')} must be positive, got {value}"
            raise ScclipError(msg)


def _progress_bar():
    from tqdm.auto import tqdm

    bar = {"pbar": None}

    def cb(ev: dict) -> None:
        if ev["event"] == "epoch":
            if bar["pbar"] is None:
                bar["pbar"] = tqdm(total=ev["epochs"], desc="epochs", unit="epoch", file=sys.stderr)
            bar["pbar"].update(1)
            bar["pbar"].set_postfix(
                loss=f"{ev['loss']:.3f}",
                val_foscttm=f"{ev['val_foscttm']:.4f}",
                val_top1=f"{ev['val_top1']:.3f}",
            )
        elif ev["event"] == "done" and bar["pbar"] is not None:
            bar["pbar"].close()

    return cb


def _train_settings(args) -> dict:
    """The :class:`~scclip.training.TrainConfig` fields given on the command line (the rest keep defaults)."""
    return {
        k: v
        for k, v in dict(
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_steps=args.max_steps,
            lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
            precision=args.precision,
            activation_checkpointing=args.activation_checkpointing or None,
            compile=args.compile or None,
            ema_decay=args.ema_decay,
            structure_weight=args.structure_weight,
            intra_negatives=args.intra_negatives,
        ).items()
        if v is not None
    }


def cmd_train(args) -> int:
    from scclip.api import train
    from scclip.io import read

    _check_positive(args, "epochs", "batch_size", "lr", "patience", "chunk_size", "max_steps")
    if args.val_size < 0:
        msg = f"--val-size must be >= 0 (a fraction below 1 or a number of cells), got {args.val_size}"
        raise ScclipError(msg)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        msg = f"--out {out} is a file; the run folder must be a new or empty folder"
        raise ScclipError(msg)
    if out.exists() and any(out.iterdir()) and not args.resume:
        msg = f"run folder {out} exists and is not empty; choose a new --out, or add --resume to continue it"
        raise ScclipError(msg)
    # with --chunk-size, train opens the file on disk itself (and closes it) and maps N cells at a time
    mdata = args.data if args.chunk_size is not None else read(args.data)
    tc = _train_settings(args)
    mc = args.config
    if args.skip_empty_patches is not None:  # the switch on top of the preset / JSON config
        from scclip.model import get_preset

        mc = get_preset(args.config, skip_empty_patches=args.skip_empty_patches)
    model = train(
        mdata,
        out_dir=out,
        model_config=mc,
        train_config=tc,
        feature_space=args.feature_space,
        genome=args.genome,
        atac_method=args.atac,
        holdout_key=args.holdout_key,
        holdout=args.holdout,
        val_key=args.val_key,
        val_values=args.val,
        val_size=args.val_size,
        within_chromosome=args.within_chromosome,
        resume=args.resume,
        chunk_size=args.chunk_size,
        feature_path=args.feature_path,
        out_of_core=args.out_of_core,
        progress=_progress_bar(),
        command="scclip " + shlex.join(sys.argv[1:]),
        data_name=str(args.data),
    )
    s = model.summary
    from scclip.training import is_main_process

    if not is_main_process():  # under torchrun the summary is printed once, by rank 0
        return 0
    print(
        json.dumps(
            {
                "model": str(out / "model"),
                "epochs_run": s["epochs_run"],
                "best_epoch": s["best_epoch"],
                "validation": s["validation"],
                "holdout_metrics": s.get("holdout_metrics"),
            },
            indent=2,
        )
    )
    return 0


def _embed_fragments(args, model) -> int:
    """``scclip embed --fragments`` (+ optional ``--rna``): count the fragments onto the model's ATAC features."""
    import mudata as md

    from scclip.fragments import atac_from_fragments
    from scclip.io import read

    if "atac" not in model.feature_space.modalities:
        msg = f"model {args.model} has no ATAC features to count fragments onto"
        raise ScclipError(msg)
    mods = {}
    barcodes = None
    if args.rna:
        mods["rna"] = read(args.rna, modality="rna")["rna"]
        barcodes = mods["rna"].obs_names
    mods["atac"] = atac_from_fragments(
        args.fragments,
        model.feature_space["atac"],
        barcodes=barcodes,
        min_count=None if barcodes is not None else args.min_fragments,
    )
    return _finish_embed(args, model, md.MuData(mods), paired=barcodes is not None)


def cmd_embed(args) -> int:
    from scclip.io import read, read_pair
    from scclip.pretrained import load_pretrained

    _check_positive(args, "batch_size", "chunk_size")
    if args.data and (args.rna or args.atac or args.fragments):
        msg = "give either --data FILE, or --rna/--atac/--fragments files, not both"
        raise ScclipError(msg)
    if args.atac and args.fragments:
        msg = "give ATAC either as --atac FILE or as --fragments FILE, not both"
        raise ScclipError(msg)
    if not (args.data or args.rna or args.atac or args.fragments):
        msg = "nothing to embed: give --data FILE, or --rna FILE and/or --atac FILE (or --fragments FILE)"
        raise ScclipError(msg)
    if args.paired and not (args.rna and args.atac):
        msg = "--paired needs both --rna and --atac"
        raise ScclipError(msg)
    if args.chunk_size is not None and args.fragments:
        msg = (
            "--chunk-size reads .h5mu/.h5ad files in chunks; --fragments are counted in memory: leave one out"
        )
        raise ScclipError(msg)
    model = load_pretrained(args.model)
    if args.fragments:
        return _embed_fragments(args, model)
    if args.chunk_size is not None:
        return _embed_chunked(args, model)
    if args.data:
        mdata = read(args.data)
        paired = None
    elif args.rna and args.atac:
        mdata, _ = read_pair(args.rna, args.atac, paired=args.paired)
        paired = args.paired
    else:
        mdata = read(args.rna, modality="rna") if args.rna else read(args.atac, modality="atac")
        paired = False
    return _finish_embed(args, model, mdata, paired=paired)


def _embed_chunked(args, model) -> int:
    """``scclip embed --chunk-size N``: .h5mu/.h5ad files read on disk, N cells at a time."""
    from scclip.io import BackedData, paired_cells, read_backed

    paths = (
        {"data": args.data}
        if args.data
        else {m: getattr(args, m) for m in ("rna", "atac") if getattr(args, m)}
    )
    opened = []
    try:
        for name, path in paths.items():
            opened.append(read_backed(path, modality=None if name == "data" else name))
        if args.data:
            return _finish_embed(args, model, opened[0], paired=None)
        data = BackedData({m: d.mod[m] for m, d in zip(paths, opened, strict=True)})
        paired = args.paired and len(paths) == 2
        return _finish_embed(args, model, paired_cells(data) if paired else data, paired=paired)
    finally:
        for d in opened:
            d.close()


def _finish_embed(args, model, mdata, *, paired) -> int:
    """Embed, write the .h5mu atomically, print warnings and the coverage summary."""
    from scclip.api import embed
    from scclip.io import write_h5mu

    result = embed(
        model,
        mdata,
        genome=args.genome,
        batch_size=args.batch_size,
        device=args.device,
        paired=paired,
        chunk_size=getattr(args, "chunk_size", None),
    )
    write_h5mu(result, args.out)
    for w in result.uns["scclip"].get("warnings", []):
        print(f"scclip embed: warning: {w}", file=sys.stderr)
    summary = {
        m: {
            k: v
            for k, v in rep.items()
            if k in ("method", "frac_model_hit", "frac_query_used", "count_coverage")
        }
        for m, rep in result.uns["scclip"]["modalities"].items()
    }
    print(
        json.dumps(
            {
                "out": args.out,
                "paired": result.uns["scclip"]["paired"],
                "cells": {m: result[m].n_obs for m in result.mod},
                "coverage": summary,
            },
            indent=2,
        )
    )
    return 0


def cmd_match(args) -> int:
    return run_match(args)


def cmd_evaluate(args) -> int:
    return run_evaluate(args)


def cmd_convert(args) -> int:
    from scclip.pretrained import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.out, like=args.like)
    meta = json.loads((out / "checkpoint.json").read_text())
    print(json.dumps({"out": str(out), "tensors": len(meta["tensors"]), "release_folder": bool(args.like)}))
    return 0
