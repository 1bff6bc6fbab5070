"""Turn a trained run into a folder under ``pretrained/``: weights, feature tables, centroids and a model card.

    # the release: trained on all ten libraries (`scclip train --feature-path`), with the CV estimate
    python scripts/release_pretrained.py --run runs/mc_all10 --name mouse-cortex-snareseq \\
        --data ../shared/data/chen2019_snareseq_dev.h5mu --cv docs/cv/default.json \\
        --card-notes docs/cards/mouse-cortex-snareseq.md
    # the zero-shot demo: the CV fold model that held out 09I + 09J, its feature path fitted on the same split
    python scripts/release_pretrained.py --run runs/cv/default/09I_09J_s0 --name mouse-cortex-snareseq-heldout-09IJ \\
        --data ../shared/data/chen2019_snareseq_dev.h5mu --exclude-batches 09I,09J --add-feature-path \\
        --cv docs/cv/default.json --zero-shot out/zero_shot.json \\
        --card-notes docs/cards/mouse-cortex-snareseq-heldout-09IJ.md

Per-cell-type centroids (mean gap-closed embedding of the training cells of each type, ``centroids.json``) let
the app and ``scclip.explore`` assign cell types to new data without the reference cells. The model card gets the
training summary, the libraries the model saw, the cross-validation estimate of ``benchmarks/cv.py --json``
(``--cv``: mean +- sd over the five leave-two-libraries-out folds, the expected quality on new libraries), the
held-out/zero-shot figures of ``benchmarks/zero_shot.py --json`` and the notes file. ``--add-feature-path`` fits
the feature path on the run's own split (what ``scclip train --feature-path`` does) for a run trained without it.
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


CV_ROWS = {
    "scCLIP default + feature path (3 members, gene activity)": "this recipe (scCLIP + feature path of 3 MLPs "
    "with the gene-activity bridge)",
    "scCLIP default + feature path (3 members)": "scCLIP + feature path of 3 MLPs, no bridge (session 6)",
    "scCLIP default + feature path": "scCLIP + feature path of 1 MLP (session 5)",
    "scCLIP default": "scCLIP without the feature path",
    "contrastive MLP": "contrastive MLP on PCA / LSI (baseline)",
    "PCA+CCA": "PCA + CCA (baseline)",
}
CV_METRICS = {"foscttm": "FOSCTTM", "top1": "top-1", "label_transfer_accuracy": "label transfer",
              "mixing_entropy": "mixing"}  # fmt: skip


def cv_estimate(records: dict) -> dict:
    """``{row: {metric: (mean, sd)}}`` over folds (each fold: the mean of its seeds) of ``benchmarks/cv.py``
    records, gap-closed embedding, for the rows of :data:`CV_ROWS`."""
    per: dict = {}
    for key, rec in records.items():
        method, fold, _seed = key.split("|")
        if method in CV_ROWS and "joint" in rec:
            per.setdefault(method, {}).setdefault(fold, []).append(rec["joint"])
    out = {}
    for method, folds in per.items():
        fold_means = {c: [np.mean([s[c] for s in scores]) for scores in folds.values()] for c in CV_METRICS}
        out[method] = {
            c: (float(np.mean(v)), float(np.std(v, ddof=1)), len(v)) for c, v in fold_means.items()
        }
    return out


def cv_section(estimate: dict) -> str:
    """Markdown: the CV estimate as the expected quality on new libraries."""
    rows = [
        "## Expected quality on new libraries (cross-validation estimate)",
        "Leave-two-libraries-out cross-validation over the ten SNARE-seq libraries (5 folds, 3 seeds each; each",
        "fold trained on 8 libraries, scored once on the 2 it never saw): mean ± sd over folds, gap-closed",
        "`X_scclip`. Command: `python benchmarks/cv.py --recipe default --feature-path --feature-path-members 3",
        "--gene-activity --json out/cv/default.json`",
        "(docs/quality.md). These are estimates for *new* libraries of this kind of data: the figures of the",
        "released model on its own training libraries would be optimistic and are not reported.",
        "",
        "| method | " + " | ".join(CV_METRICS.values()) + " | folds |",
        "|---|" + "---|" * (len(CV_METRICS) + 1),
    ]
    for method, label in CV_ROWS.items():
        if method in estimate:
            cells = [f"{m:.4f} ± {sd:.4f}" for m, sd, _ in estimate[method].values()]
            n = next(iter(estimate[method].values()))[2]
            rows.append(f"| {label} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(rows) + "\n"


def libraries_section(seen: list[str], held_out: list[str]) -> str:
    """Markdown: which libraries trained (or chose the epoch of) the model, and which it never saw."""
    text = ["## Libraries seen", f"- trained on (and validated on cells of): {', '.join(seen)}"]
    if held_out:
        text.append(f"- never seen in training or early stopping: {', '.join(held_out)}")
    else:
        text.append("- none of the ten development libraries is held out: no held-out library is left inside the "
                    "shipped data, so its quality on new data is the cross-validation estimate of the next section.")  # fmt: skip
    return "\n".join(text) + "\n"


def fit_feature_path(model, mdata, *, seed: int) -> dict:
    """Fit the feature path on the run's own split (holdout and validation cells as in training) and re-score
    the held-out cells with it (``summary['holdout_metrics']``, as ``scclip train --feature-path`` does)."""
    from scclip.api import add_feature_path, map_modality, prepare_modality, split_cells
    from scclip.metrics import foscttm, topk_accuracy

    s = model.summary
    held = s.get("holdout") or {}
    X_rna = prepare_modality(model, mdata["rna"], "rna")[0]
    X_atac = prepare_modality(model, mdata["atac"], "atac")[0]
    atac_counts = map_modality(mdata["atac"], model.feature_space["atac"])[
        0
    ]  # the path's LSI input, as train()
    split = split_cells(mdata["rna"].obs, holdout_key=held.get("key"), holdout=list(held.get("values", [])),
                        val_key=None, val_values=(), val_size=s.get("n_val_cells", 1000), seed=seed)  # fmt: skip
    info = add_feature_path(model, X_rna, atac_counts, split, seed=seed)
    h = split["holdout"]
    if len(h) > 1:
        zr, za = model.encode("rna", X_rna[h]), model.encode("atac", X_atac[h], counts=atac_counts[h])
        s["holdout_metrics"] = {"n_cells": len(h), "foscttm": float(foscttm(zr, za)["mean"]),
                                "top1": float(topk_accuracy(zr, za, k=1)["mean"])}  # fmt: skip
    return info


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
    p.add_argument(
        "--cv", type=Path, default=None, help="benchmarks/cv.py --json output (CV estimate on the card)"
    )
    p.add_argument("--add-feature-path", action="store_true", help="fit the feature path on the run's split")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (its split and the feature path)")
    args = p.parse_args(argv)

    model = scclip.load_pretrained(args.run)
    model.name = args.name
    model.summary = dict(model.summary)
    model.summary.setdefault("hardware", f"{platform.machine()} CPU, 2 cores, no GPU")
    notes = ""
    if args.data is not None:
        md.set_options(pull_on_update=False)
        mdata = md.read_h5mu(args.data)
        if not model.summary.get("data"):
            model.summary["data"] = f"../shared/data/{args.data.name}"
        if args.add_feature_path:
            model.summary["feature_path"] = fit_feature_path(model, mdata, seed=args.seed)
            model.summary["command"] = model.summary.get("command") or (
                f"benchmarks/cv.py fold model (seed {args.seed}), then scripts/release_pretrained.py "
                "--add-feature-path: the same as scclip train --feature-path with this run's split"
            )
        libraries = sorted(mdata["rna"].obs["batch"].astype(str).unique())
        held = sorted(set((model.summary.get("holdout") or {}).get("values", [])) & set(libraries))
        model.summary["libraries_seen"] = [b for b in libraries if b not in held]
        model.summary["libraries_held_out"] = held
        drop = {b for b in args.exclude_batches.split(",") if b}
        if drop:
            keep = ~mdata["rna"].obs["batch"].astype(str).isin(drop).to_numpy()
            mdata = md.MuData({m: mdata[m][keep].copy() for m in ("rna", "atac")})
        model.centroids = cell_type_centroids(model, mdata, label_key=args.label_key)
        notes += libraries_section(model.summary["libraries_seen"], held) + "\n"
    if args.cv is not None:
        model.summary["cv_estimate"] = cv_estimate(json.loads(args.cv.read_text())["records"])
        notes += cv_section(model.summary["cv_estimate"]) + "\n"
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
