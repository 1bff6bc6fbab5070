"""The model card (``README.md``) written into every release folder."""

from __future__ import annotations


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


INTENDED_USE = "## Intended use and limits"


def card_name(directory) -> tuple[str, str]:
    """(name, what to pass to ``load_pretrained`` / ``--model``) of a release folder: a training run's
    ``RUN_DIR/model`` is named after the run and loaded as ``RUN_DIR``."""
    from pathlib import Path

    d = Path(directory)
    if d.name == "model":
        return d.parent.name, str(d.parent)
    return d.name, d.name


def _preprocessing_text(prep: dict) -> str:
    rna, atac = prep.get("rna", {}), prep.get("atac", {})
    rna_s = f"{rna.get('method', '?')} (counts per {rna['target_sum']:g})" if "target_sum" in rna else str(rna)
    return f"RNA {rna_s}; ATAC {atac.get('method', '?')}"


def render_model_card(model, *, name: str | None = None, load_ref: str | None = None, notes: str = "") -> str:
    """Markdown model card from a :class:`~scclip.pretrained.ScclipModel` and its training summary.

    ``load_ref`` is what users pass to ``load_pretrained`` (default ``name``); ``notes`` (markdown) is appended,
    and when it has its own "Intended use and limits" section the generic one is left out.
    """
    s = model.summary or {}
    cfg = model.config.to_dict()
    fs = model.feature_space.to_dict()
    ref = load_ref or name or "PATH"
    lines = [
        f"# scCLIP model `{name or model.name or 'unnamed'}`",
        "",
        "Two-tower scCLIP model (genome-sorted patch tokens, one Transformer per modality, CLIP loss) that",
        "embeds scRNA-seq and scATAC-seq cells into one space. Load it with",
        f"`scclip.load_pretrained('{ref}')` or `scclip embed --model {ref} ...`.",
        "",
        "## Feature space",
        f"- genome: `{fs.get('genome')}`",
    ]
    for m, spec in fs.get("modalities", {}).items():
        extra = f", bins of {spec['bin_size']} bp" if spec.get("bin_size") else ""
        lines.append(
            f"- {m}: {spec['kind']}{extra}, {spec['n_features']} features in {spec['n_patches']} patches of "
            f"{spec['patch_size']}"
        )
    lines += [
        f"- preprocessing: {_preprocessing_text(model.preprocessing)}",
        "",
        "## Architecture",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in cfg.items() if not isinstance(v, dict | list)],
        f"| learned temperature | {model.temperature:.4f} |",
        *([f"| feature path | PCA / LSI ({model.feature_path.config['n_components']}) + contrastive MLP, "
           f"fused (embedding width {model.embed_dim}) |"] if getattr(model, "feature_path", None) else []),
        "",
        "## Training",
    ]
    for key in (
        "data",
        "command",
        "n_train_cells",
        "n_val_cells",
        "n_holdout_cells",
        "holdout",
        "epochs_run",
        "best_epoch",
        "train_seconds",
        "device",
        "cells_per_second",
    ):
        if key in s:
            lines.append(f"- {key}: {_fmt(s[key])}")
    for title, key in (
        ("Validation metrics (training libraries)", "validation"),
        ("Held-out metrics (never used for training or early stopping)", "holdout_metrics"),
    ):
        if s.get(key):
            lines += ["", f"## {title}", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in s[key].items() if not isinstance(v, dict | list)]
    if INTENDED_USE not in notes:
        lines += [
            "",
            INTENDED_USE,
            s.get(
            "intended_use",
                "Embedding cells of the same species, tissue and assay as the training data; "
                "other data can be embedded (features are mapped by gene name and peak overlap) but the "
                "coverage report says how much of the model's input is seen, and quality may drop.",
            ),
        ]
    lines.append("")
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)
