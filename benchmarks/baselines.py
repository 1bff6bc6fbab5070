"""Reproduce the integration baselines on the real SNARE-seq development split and print markdown tables.

Train on libraries 09A-09H (model selection on a random 1,000 of those cells), test on 09I + 09J, which are never
fitted on or selected on. Methods: a random 64-d floor, PCA+CCA, and the contrastive MLP (mean over seeds).

    python benchmarks/baselines.py [--data ../shared/data/chen2019_snareseq_dev.h5mu] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scclip import baselines as B  # noqa: E402
from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.metrics import foscttm, topk_accuracy  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"
REFERENCE = {"random 64-d": 0.500, "PCA+CCA": 0.182, "contrastive MLP": 0.084}
COLUMNS = [
    "foscttm",
    "top1",
    "top5",
    "match_probability",
    "asw_cell_type",
    "mixing_entropy",
    "label_transfer_accuracy",
]


def _scores(rna: np.ndarray, atac: np.ndarray, labels: np.ndarray) -> dict:
    res = evaluate_embeddings(rna, atac, rna_labels=labels, atac_labels=labels, k_mixing=30)
    return {c: res[c] for c in COLUMNS}


def _scaling(rna: np.ndarray, atac: np.ndarray, sizes: list[int], draws: int = 5) -> dict:
    out = {}
    for size in sizes:
        fos, top1 = [], []
        for d in range(draws if size < len(rna) else 1):
            idx = np.sort(np.random.default_rng(d).choice(len(rna), size=size, replace=False))
            fos.append(foscttm(rna[idx], atac[idx])["mean"])
            top1.append(topk_accuracy(rna[idx], atac[idx], k=1)["mean"])
        out[size] = (float(np.mean(fos)), float(np.mean(top1)))
    return out


def _mean(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def run_baselines(
    mdata, split, *, seeds: int = 3, max_epochs: int = 300, cca_components=(20, 25, 30)
) -> dict:
    """Fit the random floor, PCA+CCA and the contrastive MLP on ``split``; scores on the test cells."""
    labels_all = mdata["rna"].obs["cell_type"].astype(str).to_numpy()
    test_labels = labels_all[split.test]
    t0 = time.perf_counter()
    rna_f, atac_f = B.pca_lsi_features(mdata, fit_idx=split.train)
    feat_s = time.perf_counter() - t0
    print(f"features (PCA 50 + LSI 50, fitted on training cells): {feat_s:.1f} s", flush=True)

    rows, scaling, timings, extra = {}, {}, {}, {}
    sizes = test_sizes(len(split.test))

    # random floor
    per_seed = [B.random_embedding(len(split.test), dim=64, seed=s) for s in range(seeds)]
    rows["random 64-d"] = _mean([_scores(r, a, test_labels) for r, a in per_seed])
    scaling["random 64-d"] = _mean_scaling([_scaling(r, a, sizes) for r, a in per_seed])
    timings["random 64-d"] = 0.0

    # PCA + CCA: pick n_components on the validation cells, fitted on the fit cells
    t0 = time.perf_counter()
    val_fos = {}
    fitted = {}
    for nc in cca_components:
        cca = B.fit_cca(rna_f[split.fit], atac_f[split.fit], n_components=nc)
        val_fos[nc] = foscttm(cca.embed_rna(rna_f[split.val]), cca.embed_atac(atac_f[split.val]))["mean"]
        fitted[nc] = cca
        print(f"CCA {nc} components: validation FOSCTTM {val_fos[nc]:.4f}", flush=True)
    best_nc = min(val_fos, key=val_fos.get)
    cca = fitted[best_nc]
    timings["PCA+CCA"] = time.perf_counter() - t0
    r, a = cca.embed_rna(rna_f[split.test]), cca.embed_atac(atac_f[split.test])
    rows["PCA+CCA"] = _scores(r, a, test_labels)
    scaling["PCA+CCA"] = _scaling(r, a, sizes)
    extra["cca"] = {"val_foscttm": {str(k): v for k, v in val_fos.items()}, "chosen": best_nc}

    # contrastive MLP, one model per seed
    seed_scores, seed_scaling, seed_times, seed_info = [], [], [], []
    for s in range(seeds):
        res = B.train_contrastive_mlp(
            rna_f[split.fit],
            atac_f[split.fit],
            rna_f[split.val],
            atac_f[split.val],
            seed=s,
            max_epochs=max_epochs,
        )
        r, a = res.model.embed(rna_f[split.test], atac_f[split.test])
        sc = _scores(r, a, test_labels)
        seed_scores.append(sc)
        seed_scaling.append(_scaling(r, a, sizes))
        seed_times.append(res.train_seconds)
        seed_info.append(
            {
                "seed": s,
                "best_epoch": res.best_epoch,
                "epochs": len(res.history),
                "val_foscttm": res.best_val_foscttm,
                "test_foscttm": sc["foscttm"],
            }
        )
        print(
            f"MLP seed {s}: best epoch {res.best_epoch}/{len(res.history)}, val FOSCTTM {res.best_val_foscttm:.4f}, "
            f"test FOSCTTM {sc['foscttm']:.4f}, {res.train_seconds:.0f} s",
            flush=True,
        )
    rows["contrastive MLP"] = _mean(seed_scores)
    scaling["contrastive MLP"] = _mean_scaling(seed_scaling)
    timings["contrastive MLP"] = float(np.mean(seed_times))
    extra["mlp"] = seed_info
    extra["features_seconds"] = feat_s
    notes = [
        f"random and MLP: mean over {seeds} seeds; CCA with {best_nc} components (chosen on validation)",
        f"train time: CCA = all {len(cca_components)} selection fits; MLP = mean per seed "
        f"(PCA/LSI features, {feat_s:.1f} s, not included)",
    ]
    return {"rows": rows, "scaling": scaling, "train_seconds": timings, "extra": extra, "notes": notes}


def test_sizes(n_test: int) -> list[int]:
    """Candidate-set sizes for the matching-vs-candidates table."""
    return [s for s in (500, 1000) if s < n_test] + [n_test]


def print_tables(results: dict, n_test: int, reference: dict | None = None) -> None:
    """One markdown table of all methods, then FOSCTTM / top-1 as the number of candidates grows."""
    reference = REFERENCE if reference is None else reference
    sizes = test_sizes(n_test)
    print()
    print(f"Test libraries 09I + 09J ({n_test} cells). " + "; ".join(results.get("notes", [])))
    print()
    print(
        "| method | FOSCTTM | top-1 | top-5 | match prob (T=0.05) | ASW | mixing | label transfer | train time | reference FOSCTTM |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, sc in results["rows"].items():
        cells = " | ".join("-" if sc[c] is None else f"{sc[c]:.3f}" for c in COLUMNS)
        ref = reference.get(name)
        ref_s = "-" if ref is None else f"{ref:.3f}"
        print(f"| {name} | {cells} | {results['train_seconds'][name]:.1f} s | {ref_s} |")
    print()
    print(
        f"FOSCTTM / top-1 as the number of candidate cells grows (random subsets of the test cells, mean of 5 draws below {n_test})"
    )
    print()
    print("| method | " + " | ".join(f"{n} cells" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, sc in results["scaling"].items():
        print(f"| {name} | " + " | ".join(f"{sc[n][0]:.3f} / {sc[n][1]:.3f}" for n in sizes) + " |")


def to_json(results: dict) -> dict:
    out = dict(results)
    out["scaling"] = {k: {str(n): v for n, v in d.items()} for k, d in results["scaling"].items()}
    return out


def from_json(obj: dict) -> dict:
    out = dict(obj)
    out["scaling"] = {k: {int(n): tuple(v) for n, v in d.items()} for k, d in obj["scaling"].items()}
    return out


def main(argv: list[str] | None = None) -> None:
    import mudata as md

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--cca-components", type=int, nargs="+", default=[20, 25, 30])
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(args.data)
    split = B.snare_split(mdata)
    print(
        f"cells: train {len(split.train)} (fit {len(split.fit)}, val {len(split.val)}), test {len(split.test)}"
    )
    results = run_baselines(
        mdata, split, seeds=args.seeds, max_epochs=args.max_epochs, cca_components=args.cca_components
    )
    print_tables(results, len(split.test))
    if args.json:
        args.json.write_text(json.dumps(to_json(results), indent=2))


def _mean_scaling(items: list[dict]) -> dict:
    return {n: tuple(float(np.mean([it[n][j] for it in items])) for j in range(2)) for n in items[0]}


if __name__ == "__main__":
    main()
