"""Gap-closing settings decided by cross-validation: the joint embedding's FOSCTTM and mixing over the 5 folds.

    python benchmarks/gap_cv.py [--runs runs/cv/default] [--suffix _feature_path]

Reads the raw (not gap-closed) test-fold embeddings that ``benchmarks/cv.py --feature-path`` stores per fold and
seed (``{fold}_s{seed}{suffix}.npz``) and closes the gap with each setting: ``k`` predicted partners, their
weight ``w`` against the cell's own embedding (``normalise(own + w * mean(partners))``; ``w = 1`` is
:func:`scclip.gap.close_gap`). Prints mean ± sd over folds (each fold: the mean of its seeds) of FOSCTTM, top-1,
mixing and label transfer. A setting is chosen by these CV means only (the mixing target is >= 0.8).
"""

from __future__ import annotations

import argparse
import sys
from itertools import product
from pathlib import Path

import mudata as md
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.match import topk_partners  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"
LIBRARIES = ("09A", "09B", "09C", "09D", "09E", "09F", "09G", "09H", "09I", "09J")
FOLDS = [LIBRARIES[i : i + 2] for i in range(0, 10, 2)]
KEYS = ("foscttm", "top1", "mixing_entropy", "label_transfer_accuracy")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def closed(r: np.ndarray, a: np.ndarray, *, k: int, w: float) -> tuple[np.ndarray, np.ndarray]:
    """``normalise(own + w * mean of the k nearest cells of the other modality)`` for both modalities."""
    r, a = unit(r.astype(np.float32)), unit(a.astype(np.float32))
    idx_r, _ = topk_partners(r, a, k=k)
    idx_a, _ = topk_partners(a, r, k=k)
    return unit(r + w * a[idx_r].mean(1)), unit(a + w * r[idx_a].mean(1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "cv" / "default")
    p.add_argument("--suffix", default="_feature_path")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, nargs="+", default=[5, 15, 30])
    p.add_argument("--w", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    args = p.parse_args(argv)
    md.set_options(pull_on_update=False)
    obs = md.read_h5mu(DATA)["rna"].obs
    settings = [("raw", None, None)] + [(f"k={k} w={w:g}", k, w) for k, w in product(args.k, args.w)]
    table: dict[str, list[dict]] = {name: [] for name, _, _ in settings}
    for fold in FOLDS:
        labels = obs.loc[obs["batch"].astype(str).isin(fold), "cell_type"].astype(str).to_numpy()
        per = {name: [] for name, _, _ in settings}
        for seed in args.seeds:
            with np.load(args.runs / f"{'_'.join(fold)}_s{seed}{args.suffix}.npz") as z:
                r, a = z["rna"], z["atac"]
            for name, k, w in settings:
                jr, ja = (r, a) if k is None else closed(r, a, k=k, w=w)
                res = evaluate_embeddings(jr, ja, rna_labels=labels, atac_labels=labels, k_mixing=30)
                per[name].append({c: res[c] for c in KEYS})
        for name in per:
            table[name].append({c: float(np.mean([s[c] for s in per[name]])) for c in KEYS})
        print(f"fold {','.join(fold)} done", flush=True)
    print("\n| gap closing | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for name, folds in table.items():
        cells = [
            f"{np.mean([f[c] for f in folds]):.4f} ± {np.std([f[c] for f in folds], ddof=1):.4f}"
            for c in KEYS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
