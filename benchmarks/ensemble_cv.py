"""Ensembles with the feature path, decided by cross-validation: which parts are worth averaging over seeds?

    python benchmarks/ensemble_cv.py [--runs runs/cv/default]

Uses the raw test-fold embeddings ``benchmarks/cv.py --feature-path`` stores per fold and seed: the Transformer's
(``{fold}_s{seed}.npz``) and the fused one (``{fold}_s{seed}_feature_path.npz``, whose second half is the feature
path's unit embedding / sqrt 2, see :func:`scclip.model.fusion.fuse`). Rows, each gap-closed with the default
:func:`scclip.gap.close_gap` and scored on the fold's cells:

* ``single`` -- one Transformer + its feature path (the product; mean over the 3 seeds);
* ``path ensemble`` -- one Transformer + the 3 seeds' feature paths (cosines averaged; +2 feature-path fits,
  about 20 s of training);
* ``full ensemble`` -- the 3 Transformers + the 3 feature paths (3x the training).

Prints mean ± sd over folds of gap-closed FOSCTTM, top-1 and mixing, and the ratio to the contrastive MLP (from
``--cv-json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scclip.gap import close_gap  # noqa: E402
from scclip.metrics import foscttm, modality_mixing, topk_accuracy  # noqa: E402

LIBRARIES = ("09A", "09B", "09C", "09D", "09E", "09F", "09G", "09H", "09I", "09J")
FOLDS = [LIBRARIES[i : i + 2] for i in range(0, 10, 2)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mean_cosine(parts: list[np.ndarray]) -> np.ndarray:
    """Unit embeddings concatenated / sqrt(n): the cosine of two cells is the mean of the parts' cosines."""
    return np.concatenate([unit(p) for p in parts], axis=1) / np.sqrt(len(parts))


def score(r: np.ndarray, a: np.ndarray) -> dict:
    jr, ja, _ = close_gap(r, a)
    return {
        "foscttm": float(foscttm(jr, ja)["mean"]),
        "top1": float(topk_accuracy(jr, ja, k=1)["mean"]),
        "mixing": float(modality_mixing(jr, ja, k=30)),
    }


def fold_rows(runs: Path, fold, seeds) -> dict[str, dict]:
    """The three rows' scores on one fold."""
    t, p = {}, {}
    for s in seeds:
        with np.load(runs / f"{'_'.join(fold)}_s{s}.npz") as z:
            t[s] = (z["rna"], z["atac"])
        with np.load(runs / f"{'_'.join(fold)}_s{s}_feature_path.npz") as z:
            half = z["rna"].shape[1] // 2
            p[s] = (z["rna"][:, half:], z["atac"][:, half:])
    rows: dict[str, list[dict]] = {"single": [], "path ensemble": []}
    for s in seeds:
        rows["single"].append(score(*(mean_cosine([t[s][m], p[s][m]]) for m in (0, 1))))
        paths = [mean_cosine([p[q][m] for q in seeds]) for m in (0, 1)]
        rows["path ensemble"].append(score(*(mean_cosine([t[s][m], paths[m]]) for m in (0, 1))))
    trans = [mean_cosine([t[q][m] for q in seeds]) for m in (0, 1)]
    paths = [mean_cosine([p[q][m] for q in seeds]) for m in (0, 1)]
    rows["full ensemble"] = [score(*(mean_cosine([trans[m], paths[m]]) for m in (0, 1)))]
    return {name: {c: float(np.mean([v[c] for v in vals])) for c in vals[0]} for name, vals in rows.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "cv" / "default")
    p.add_argument("--cv-json", type=Path, default=REPO / "docs" / "cv" / "default.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    per_fold = [fold_rows(args.runs, fold, args.seeds) for fold in FOLDS]
    records = json.loads(args.cv_json.read_text())["records"]
    mlp = np.mean([np.mean([records[f"contrastive MLP|{','.join(f)}|{s}"]["joint"]["foscttm"]
                            for s in args.seeds]) for f in FOLDS])  # fmt: skip
    print("| row | FOSCTTM | top-1 | mixing | FOSCTTM / MLP |\n|---|---|---|---|---|")
    for name in per_fold[0]:
        vals = {c: [f[name][c] for f in per_fold] for c in ("foscttm", "top1", "mixing")}
        cells = [f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" for v in vals.values()]
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(vals['foscttm']) / mlp:.3f} |")


if __name__ == "__main__":
    main()
