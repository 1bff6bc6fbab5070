"""The model card (``README.md``) written into every release folder."""

from __future__ import annotations

import json


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render_model_card(model, *, name: str | None = None) -> str:
    """Markdown model card from a :class:`~scclip.pretrained.ScclipModel` and its training summary."""
    s = model.summary or {}
    cfg = model.config.to_dict()
    fs = model.feature_space.to_dict()
    lines = [
        f"# scCLIP model `{name or model.name or 'unnamed'}`",
        "",
        "Two-tower scCLIP model (genome-sorted patch tokens, one Transformer per modality, CLIP loss) that",
        "embeds scRNA-seq and scATAC-seq cells into one space. Load it with",
        f"`scclip.load_pretrained('{name or 'PATH'}')` or `scclip embed --model {name or 'PATH'} ...`.",
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
        f"- preprocessing: `{json.dumps(model.preprocessing)}`",
        "",
        "## Architecture",
        "```json",
        json.dumps(cfg, indent=1),
        "```",
        f"Learned temperature: {model.temperature:.4f}",
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
    lines += [
        "",
        "## Intended use and limits",
        s.get(
            "intended_use",
            "Embedding cells of the same species, tissue and assay as the training data; "
            "other data can be embedded (features are mapped by gene name and peak overlap) but the "
            "coverage report says how much of the model's input is seen, and quality may drop.",
        ),
        "",
    ]
    return "\n".join(lines)
