"""Turn a trained run into a folder under ``pretrained/``: weights, feature tables, centroids and a model card.

    python scripts/release_pretrained.py --run runs/snare-mm10 --name mouse-cortex-snareseq \\
        --data ../shared/data/chen2019_snareseq_dev.h5mu --exclude-batches 09I,09J \\
        --zero-shot out/zero_shot.json --card-notes docs/cards/mouse-cortex-snareseq.md

Per-cell-type centroids (mean gap-closed embedding of the training cells of each type, ``centroids.json``) let
the app and ``scclip.explore`` assign cell types to new data without the reference cells. The model card gets the
training summary, the held-out/zero-shot figures of ``benchmarks/zero_shot.py --json`` and the notes file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402
from scclip.pretrained import render_model_card  # noqa: E402


def cell_type_centroids(model, mdata, *, label_key: str) -> dict:
    """Mean gap-closed embedding of each label over both modalities' cells (unit norm), as JSON."""
    emb = scclip.embed(model, mdata)
    Z = np.concatenate([emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"]])
    labels = np.concatenate([emb[m].obs[label_key].astype(str).to_numpy() for m in ("rna", "atac")])
    out = {}
    for lab in sorted(set(labels)):
        c = Z[labels == lab].mean(0)
        out[lab] = [round(float(x), 6) for x in c / np.linalg.norm(c)]
    counts = {lab: int((labels == lab).sum() // 2) for lab in out}
    return {"key": "X_scclip", "label_key": label_key, "n_cells": counts, "centroids": out}


def zero_shot_section(res: dict) -> str:
    """Markdown table of one model's block of ``benchmarks/zero_shot.py --json``."""
    rows = [
        "## Zero-shot figures (libraries 09I + 09J, never seen in training or early stopping)",
        "Measured with `python benchmarks/zero_shot.py` (see docs/zero_shot.md). FOSCTTM/top-1 from the raw",
        "cross-modal similarity; ASW, mixing and label transfer on the gap-closed joint embedding.",
        "",
        "| input | FOSCTTM | top-1 | ASW | mixing | label transfer |",
        "|---|---|---|---|---|---|",
    ]
    for tag, block in (
        ("peaks as called", res["as_is"]),
        ("peaks shifted/widened/merged", res["perturbed_peaks"]),
    ):
        raw, joint = block["raw"], block["gap-closed"]
        rows.append(
            f"| {tag} | {raw['foscttm']:.4f} | {raw['top1']:.4f} | {joint['asw_cell_type']:.3f} | "
            f"{joint['mixing_entropy']:.3f} | {joint['label_transfer_accuracy']:.3f} |"
        )
    un = res["unpaired"]
    rows += [
        "",
        f"Unpaired uploads (shuffled, renamed barcodes): one-to-one matching recovers "
        f"{un['X_scclip_raw']['fraction_true_pairs']:.1%} of the true pairs (chance {un['chance']:.2%}; "
        f"method: {un['X_scclip_raw']['method']}).",
        f"Perturbed peaks: {res['perturbed_peaks']['info']['peaks_before']} peaks -> "
        f"{res['perturbed_peaks']['info']['peaks_after']} after merging, FOSCTTM change "
        f"{res['perturbed_peaks']['foscttm_change']:+.4f}.",
        "",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    import mudata as md

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out-root", type=Path, default=REPO / "pretrained")
    p.add_argument("--data", type=Path, default=None, help="training data for the cell-type centroids")
    p.add_argument("--label-key", default="cell_type")
    p.add_argument("--exclude-batches", default="", help="libraries left out of the centroids (test set)")
    p.add_argument("--zero-shot", type=Path, default=None, help="benchmarks/zero_shot.py --json output")
    p.add_argument("--zero-shot-key", default=None, help="model key inside that JSON (default: the only one)")
    p.add_argument("--card-notes", type=Path, default=None, help="markdown appended to the model card")
    args = p.parse_args(argv)

    model = scclip.load_pretrained(args.run)
    model.name = args.name
    model.summary = dict(model.summary)
    model.summary.setdefault("hardware", f"{platform.machine()} CPU, 2 cores, no GPU")
    if args.data is not None:
        md.set_options(pull_on_update=False)
        mdata = md.read_h5mu(args.data)
        drop = {b for b in args.exclude_batches.split(",") if b}
        if drop:
            keep = ~mdata["rna"].obs["batch"].astype(str).isin(drop).to_numpy()
            mdata = md.MuData({m: mdata[m][keep].copy() for m in ("rna", "atac")})
        model.centroids = cell_type_centroids(model, mdata, label_key=args.label_key)
    notes = ""
    if args.zero_shot is not None:
        blocks = json.loads(args.zero_shot.read_text())["models"]
        key = args.zero_shot_key or (next(iter(blocks)) if len(blocks) == 1 else None)
        if key is None:
            raise SystemExit(f"--zero-shot holds several models {list(blocks)}; pass --zero-shot-key")
        model.summary["zero_shot"] = blocks[key]
        notes += zero_shot_section(blocks[key]) + "\n"
    if args.card_notes is not None:
        notes += args.card_notes.read_text()
    card = render_model_card(model, name=args.name, notes=notes)
    out = model.save_pretrained(args.out_root / args.name, card=card)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
