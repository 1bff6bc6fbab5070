"""The ``scclip`` argument parser: the sub-commands ``train | embed | match | evaluate | convert-checkpoint``
and their options (used by :func:`scclip.cli.main`)."""

from __future__ import annotations

import argparse

EPILOG = (
    "Models: a bare name resolves in $SCCLIP_PRETRAINED_DIR, then in the repository's pretrained/ folder."
)


def csv_list(value: str) -> list[str]:
    """``a, b,c`` -> ``['a', 'b', 'c']`` (an argparse ``type``)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The whole ``scclip`` parser: global options, then one sub-parser per command."""
    p = argparse.ArgumentParser(
        prog="scclip",
        description="scCLIP Explorer: embed scRNA-seq and scATAC-seq cells in one space (train, embed, match, evaluate).",
        epilog=EPILOG,
    )
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks on errors"
    )
    t = _add_train(sub, common)
    _add_train_data_options(t)
    _add_embed(sub, common)
    _add_match_evaluate(sub, common)
    _add_convert(sub, common)
    return p


def _add_train(sub, common) -> argparse.ArgumentParser:
    """``scclip train`` and its optimisation options."""
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model on paired RNA+ATAC cells",
        epilog=EPILOG,
        description="Train scCLIP on paired cells. RUN_DIR/model is the release folder (load it with "
        "--model RUN_DIR); RUN_DIR/checkpoints holds best/last training checkpoints for --resume.",
    )
    t.add_argument(
        "--data",
        required=True,
        help="paired data: .h5mu (rna + atac) or 10x ARC filtered_feature_bc_matrix.h5",
    )
    t.add_argument(
        "--out", required=True, help="run folder to create (default location convention: ./runs/NAME)"
    )
    t.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default 20; early stopping may end sooner)"
    )
    t.add_argument("--batch-size", type=int, default=None, help="cells per step (default 256)")
    t.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop after N gradient steps in all (benchmarks)",
    )
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 8)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--precision",
        default=None,
        choices=["auto", "bf16", "fp32"],
        help="auto (default) = bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU needs native bf16 "
        "(AVX512_BF16 or AMX; faster for big presets there) and is refused elsewhere (emulated: ~17x slower)",
    )
    t.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute Transformer blocks in the backward pass: less memory, ~1/3 more compute",
    )
    t.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="per-step moving average of the weights, validated and released (default 0.98; 0 = off)",
    )
    t.add_argument(
        "--structure-weight",
        type=float,
        default=None,
        help="weight of the within-modality structure term (similarities kept close to PCA / LSI; default 1; "
        "0 = plain CLIP)",
    )
    t.add_argument(
        "--intra-negatives",
        type=float,
        default=None,
        help="weight of same-modality negatives in the CLIP loss (a training-time gap fix; default 0)",
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the encoders (GPU; slower to start)")
    t.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cuda when present"
    )
    return t


def _add_train_data_options(t: argparse.ArgumentParser) -> None:
    """``scclip train``: model, features, data split and resumption."""
    t.add_argument(
        "--config", default=None, help="preset name (default, paper, paper-per-patch, tiny) or a JSON file"
    )
    t.add_argument(
        "--feature-space",
        default="own",
        help="'own' (the data's features), 'mm10'/'hg38' (gene table + 5 kb bins; 'mm10:2000' sets bin bp), "
        "or a model folder to reuse its features",
    )
    t.add_argument(
        "--genome", default=None, help="genome assembly of the data (mm10, hg38); inferred when possible"
    )
    t.add_argument(
        "--atac", default="tfidf", choices=["binary", "tfidf"], help="ATAC preprocessing (default tfidf)"
    )
    t.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="files larger than memory: read the .h5mu/.h5ad on disk and map N cells at a time onto the model's "
        "features (the compact training matrices stay in memory; same model)",
    )
    t.add_argument(
        "--out-of-core",
        action="store_true",
        help="with --chunk-size: map once to an on-disk cache in the run folder and stream shuffled chunks "
        "from it (memory independent of the number of cells; same seed, same model; no --feature-path)",
    )
    t.add_argument("--holdout-key", default=None, help="obs column naming groups to hold out (e.g. batch)")
    t.add_argument(
        "--holdout",
        type=csv_list,
        default=[],
        help="comma-separated values of --holdout-key never trained on",
    )
    t.add_argument("--val-key", default=None, help="obs column for validation cells (default: random cells)")
    t.add_argument(
        "--val", type=csv_list, default=[], help="values of --val-key used for validation / early stopping"
    )
    t.add_argument(
        "--val-size", type=float, default=0.1, help="random validation fraction (or count if >= 1)"
    )
    t.add_argument("--within-chromosome", action="store_true", help="never let a patch span two chromosomes")
    t.add_argument(
        "--skip-empty-patches",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop tokens of patches without any non-zero feature in the cell from attention (less work, a "
        "different model; saved in config.json); default: the preset's / config's value",
    )
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last")
    t.add_argument(
        "--feature-path",
        action="store_true",
        help="also fit the feature path (PCA / LSI + contrastive MLP on the same inputs) and fuse its embedding "
        "with the Transformer's (docs/quality.md: cross-validated)",
    )


def _add_embed(sub, common) -> None:
    """``scclip embed``."""
    e = sub.add_parser(
        "embed",
        parents=[common],
        help="embed cells with a trained model",
        epilog=EPILOG,
        description="Embed RNA and/or ATAC cells; writes an .h5mu with obsm['X_scclip'] per modality "
        "and the input's obs (counts are not copied). An .h5mu or 10x .h5 is paired when its modalities "
        "share barcodes; two files are unpaired unless --paired.",
    )
    e.add_argument("--model", required=True, help="pretrained name, release folder or run folder")
    e.add_argument(
        "--data", help="one file with rna and/or atac (.h5mu, 10x .h5, .h5ad, Matrix Market folder/.tar.gz)"
    )
    e.add_argument("--rna", help="RNA file")
    e.add_argument("--atac", help="ATAC file")
    e.add_argument(
        "--fragments",
        help="ATAC from a 10x fragments.tsv.gz, counted onto the model's ATAC features (with --rna: the RNA cells)",
    )
    e.add_argument(
        "--min-fragments", type=int, default=500, help="--fragments without --rna: keep cells with this many"
    )
    e.add_argument(
        "--paired", action="store_true", help="--rna and --atac hold the same cells (match by barcode)"
    )
    e.add_argument("--genome", default=None, help="declared genome of the data (checked against the model's)")
    e.add_argument("--batch-size", type=int, default=1024)
    e.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="files larger than memory: read the .h5mu/.h5ad on disk and embed N cells at a time "
        "(e.g. 10000); only one chunk of counts is in memory, results are the same",
    )
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--out", required=True, help="output .h5mu")


def _add_match_evaluate(sub, common) -> None:
    """``scclip match`` and ``scclip evaluate`` (on an embedded .h5mu)."""
    m = sub.add_parser("match", parents=[common], help="top-k cross-modal partners of every cell")
    m.add_argument("--data", required=True, help="embedded .h5mu (from scclip embed)")
    m.add_argument("--k", type=int, default=10)
    m.add_argument("--out", required=True, help="matches.csv or .parquet")
    m.add_argument("--one-to-one", action="store_true", help="also write a one-to-one assignment table")
    m.add_argument(
        "--sinkhorn",
        action="store_true",
        help="rank partners by a Sinkhorn (doubly-stochastic) normalisation of the similarities, which damps "
        "hub cells (the one-to-one table then uses method sinkhorn); similarities stay cosine",
    )

    v = sub.add_parser(
        "evaluate", parents=[common], help="integration and matching metrics of an embedded .h5mu (JSON)"
    )
    v.add_argument("--data", required=True, help="embedded .h5mu (from scclip embed)")
    v.add_argument("--label-key", default=None, help="obs column with cell types (e.g. cell_type)")
    v.add_argument(
        "--sinkhorn",
        action="store_true",
        help="also score matching after a Sinkhorn (doubly-stochastic) normalisation of the similarities "
        "(foscttm_sinkhorn, top1_sinkhorn, top5_sinkhorn; a matching-time method, reported separately)",
    )


def _add_convert(sub, common) -> None:
    """``scclip convert-checkpoint``."""
    c = sub.add_parser(
        "convert-checkpoint",
        parents=[common],
        help="convert a TRUSTED PyTorch .pt/.ckpt checkpoint into safetensors + JSON",
        epilog=EPILOG,
        description="scclip never loads pickle files (.pt, .ckpt, .pkl, .bin) as models: unpickling can run "
        "code. For a checkpoint you trust, this command reads it with torch.load(weights_only=True) "
        "(tensors and plain values only) and writes OUT/model.safetensors + OUT/checkpoint.json. With "
        "--like MODEL it copies MODEL's config.json, feature tables and card, checks the weights against "
        "that config, and OUT becomes a release folder usable as --model OUT.",
    )
    c.add_argument("checkpoint", metavar="IN.pt", help="the trusted checkpoint (.pt, .pth, .ckpt, .bin)")
    c.add_argument("--out", required=True, help="new folder to write")
    c.add_argument(
        "--like",
        default=None,
        help="release folder or pretrained name with the same architecture (makes OUT a loadable model)",
    )
