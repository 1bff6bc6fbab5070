"""Leave-libraries-out cross-validation of scCLIP and the baselines on the ten SNARE-seq development libraries.

Five folds of two libraries each, (09A, 09B), (09C, 09D), ..., (09I, 09J). Each fold trains on the other eight
libraries (1,000 random cells of those eight validate and early-stop) and scores the fold's two libraries once,
at the end. The baselines (``scclip.baselines``: PCA+CCA and the contrastive MLP on PCA / LSI, the documented
recipe) run on the same folds. Method choices are taken on the mean over folds and seeds, never on one fold.

    python benchmarks/cv.py --recipe default --json out/cv/default.json            # scCLIP + baselines, 3 seeds
    python benchmarks/cv.py --recipe own --spec '{"fs": "own"}' --json out/cv/own.json --no-baselines
    python benchmarks/cv.py --table out/cv/default.json out/cv/own.json            # print stored results again

Results are appended to the JSON after every (method, fold, seed), so an interrupted run continues where it
stopped (same ``--json``). Rows:

- ``scCLIP <recipe>``: the gap-closed joint embedding ``X_scclip`` (what the app shows), ``raw``: the model's own;
- ``... 3-seed ensemble``: the seeds' unit raw embeddings concatenated (cosine = the mean of the seeds'
  cosines), then gap-closed;
- ``... + Sinkhorn``: matching-time doubly-stochastic normalisation of the similarities (a separate row, not
  the embedding's own score);
- ``... + MLP (late fusion)``: the baseline MLP's embedding of the same seed fused with scCLIP's;
- ``... + feature path``: the product option ``scclip.train(feature_path=True)`` (PCA / LSI of the model's own
  inputs + contrastive MLP, fused; ``--feature-path``);
- ``fine-type limit``: FOSCTTM of a perfect classifier of the 23 fine cell types with random ties (per fold).

``--spec`` takes the keys of ``benchmarks/quality_variants.py`` (``preset``, ``model``, ``train``, ``fs``, ``atac``).
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
sys.path.insert(0, str(REPO / "benchmarks"))

from quality_variants import train_spec  # noqa: E402

import scclip  # noqa: E402
from scclip import baselines as B  # noqa: E402
from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.gap import close_gap  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"
LIBRARIES = ("09A", "09B", "09C", "09D", "09E", "09F", "09G", "09H", "09I", "09J")
FOLDS = [LIBRARIES[i : i + 2] for i in range(0, 10, 2)]
COLUMNS = {
    "foscttm": "FOSCTTM",
    "top1": "top-1",
    "top5": "top-5",
    "mixing_entropy": "mixing",
    "asw_cell_type_rna": "ASW RNA",
    "asw_cell_type_atac": "ASW ATAC",
    "label_transfer_accuracy": "label transfer",
    "foscttm_sinkhorn": "FOSCTTM Sinkhorn",
    "top1_sinkhorn": "top-1 Sinkhorn",
}


def _scores(rna: np.ndarray, atac: np.ndarray, labels: np.ndarray) -> dict:
    res = evaluate_embeddings(rna, atac, rna_labels=labels, atac_labels=labels, k_mixing=30, sinkhorn=True)
    return {k: res.get(k) for k in COLUMNS}


def fine_type_limit(fine: np.ndarray) -> float:
    """FOSCTTM of a perfect fine-type classifier, ties at random: mean over cells of (n_t - 1) / (2 (n - 1))."""
    _, counts = np.unique(fine, return_counts=True)
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (2 * n * (n - 1)))


class Store:
    """The JSON results file: ``records`` keyed by method, fold and seed; saved after every record."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data = {"records": {}, "meta": {}}
        if path is not None and path.exists():
            self.data = json.loads(path.read_text())

    def has(self, key: str) -> bool:
        return key in self.data["records"]

    def put(self, key: str, record: dict) -> None:
        self.data["records"][key] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)


def run_scclip(mdata, fold, seeds, spec: dict, recipe: str, store: Store, runs: Path, labels, log) -> None:
    """Train one model per seed with ``fold`` held out; score raw, gap-closed, Sinkhorn and the seed ensemble."""
    test = mdata["rna"].obs["batch"].astype(str).isin(fold).to_numpy()
    query = mdata[test].copy()
    raw = {}
    for seed in seeds:
        key = f"scCLIP {recipe}|{','.join(fold)}|{seed}"
        npz = runs / f"{'_'.join(fold)}_s{seed}.npz"
        if store.has(key) and npz.exists():
            with np.load(npz) as z:
                raw[seed] = (z["rna"], z["atac"])
            continue
        t0 = time.perf_counter()
        model = train_spec(mdata, spec, runs / f"{'_'.join(fold)}_s{seed}", seed=seed, holdout=fold)
        emb = scclip.embed(model, query)
        r_raw, a_raw = emb["rna"].obsm["X_scclip_raw"], emb["atac"].obsm["X_scclip_raw"]
        np.savez(npz, rna=r_raw, atac=a_raw)
        raw[seed] = (r_raw, a_raw)
        record = {
            "joint": _scores(emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"], labels),
            "raw": _scores(r_raw, a_raw, labels),
            "train_seconds": model.summary["train_seconds"],
            "best_epoch": model.summary["best_epoch"],
            "val_foscttm": model.summary["validation"]["foscttm"],
            "wall_seconds": time.perf_counter() - t0,
        }
        store.put(key, record)
        log(key, record)
    if len(raw) > 1:
        key = f"scCLIP {recipe} {len(raw)}-seed ensemble|{','.join(fold)}|0"
        if not store.has(key):
            r_ens, a_ens = seed_ensemble(list(raw.values()))
            jr, ja, _ = close_gap(r_ens, a_ens)
            record = {"joint": _scores(jr, ja, labels), "raw": _scores(r_ens, a_ens, labels)}
            store.put(key, record)
            log(key, record)


def seed_ensemble(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several models' raw embeddings as one: each model's unit vectors concatenated and divided by
    sqrt(models), so that the cosine of two cells is the mean of the models' cosines. (Averaging the vectors
    instead mixes coordinate systems: independently trained contrastive models agree only up to a rotation.)"""
    scale = 1 / np.sqrt(len(pairs))
    unit = [(r / np.linalg.norm(r, axis=1, keepdims=True), a / np.linalg.norm(a, axis=1, keepdims=True))
            for r, a in pairs]  # fmt: skip
    return (np.concatenate([u[0] for u in unit], axis=1) * scale,
            np.concatenate([u[1] for u in unit], axis=1) * scale)  # fmt: skip


def run_baselines(mdata, fold, seeds, store: Store, labels, log) -> None:
    """PCA+CCA (components chosen on validation) and the contrastive MLP (one per seed) on ``fold``."""
    from scclip.metrics import foscttm

    if all(
        store.has(f"contrastive MLP|{','.join(fold)}|{s}") and mlp_file(fold, s).exists() for s in seeds
    ) and (store.has(f"PCA+CCA|{','.join(fold)}|0")):
        return
    split = B.snare_split(mdata, test_batches=fold, n_val=1000, seed=0)
    rna_f, atac_f = B.pca_lsi_features(mdata, fit_idx=split.train)
    key = f"PCA+CCA|{','.join(fold)}|0"
    if not store.has(key):
        t0 = time.perf_counter()
        fitted = {nc: B.fit_cca(rna_f[split.fit], atac_f[split.fit], n_components=nc) for nc in (20, 25, 30)}
        val = {
            nc: foscttm(c.embed_rna(rna_f[split.val]), c.embed_atac(atac_f[split.val]))["mean"]
            for nc, c in fitted.items()
        }
        cca = fitted[min(val, key=val.get)]
        r, a = cca.embed_rna(rna_f[split.test]), cca.embed_atac(atac_f[split.test])
        record = {"joint": _scores(r, a, labels), "train_seconds": time.perf_counter() - t0,
                  "components": min(val, key=val.get)}  # fmt: skip
        store.put(key, record)
        log(key, record)
    for seed in seeds:
        key = f"contrastive MLP|{','.join(fold)}|{seed}"
        if store.has(key) and mlp_file(fold, seed).exists():
            continue
        res = B.train_contrastive_mlp(
            rna_f[split.fit],
            atac_f[split.fit],
            rna_f[split.val],
            atac_f[split.val],
            seed=seed,
            max_epochs=300,
        )
        r, a = res.model.embed(rna_f[split.test], atac_f[split.test])
        np.savez(mlp_file(fold, seed), rna=r, atac=a)
        record = {
            "joint": _scores(r, a, labels),
            "train_seconds": res.train_seconds,
            "best_epoch": res.best_epoch,
        }
        store.put(key, record)
        log(key, record)


def run_feature_path(
    mdata, fold, seeds, recipe: str, store: Store, runs: Path, labels, log, *, members=1, gene_activity=False
) -> None:
    """The product recipe ``scclip.train(..., feature_path=True)`` on each fold's trained model: the feature
    path is fitted after the Transformer (its weights are unchanged), on the same split, so the fold's model
    plus :func:`scclip.api.add_feature_path` is exactly what training with the option gives."""
    from scclip.api import add_feature_path, map_modality, prepare_modality, split_cells

    test = mdata["rna"].obs["batch"].astype(str).isin(fold).to_numpy()
    query = mdata[test].copy()
    for seed in seeds:
        tag = "" if members == 1 else f" ({members} members)"
        if gene_activity:
            tag = f" ({members} member{'s' if members > 1 else ''}, gene activity)"
        key = f"scCLIP {recipe} + feature path{tag}|{','.join(fold)}|{seed}"
        folder = runs / f"{'_'.join(fold)}_s{seed}"
        if store.has(key) or not (folder / "model" / "config.json").exists():
            continue
        model = scclip.load_pretrained(folder)
        # as train(feature_path=True): preprocessed RNA, ATAC *counts* on the model's features (the path's LSI
        # applies its own TF-IDF; embed() hands it the same counts)
        X = {"rna": prepare_modality(model, mdata["rna"], "rna")[0],
             "atac": map_modality(mdata["atac"], model.feature_space["atac"])[0]}  # fmt: skip
        split = split_cells(mdata["rna"].obs, holdout_key="batch", holdout=list(fold), val_key=None,
                            val_values=(), val_size=1000, seed=seed)  # fmt: skip
        t0 = time.perf_counter()
        info = add_feature_path(
            model, X["rna"], X["atac"], split, seed=seed, members=members, gene_activity=gene_activity
        )
        seconds = time.perf_counter() - t0
        emb = scclip.embed(model, query)
        r_raw, a_raw = emb["rna"].obsm["X_scclip_raw"], emb["atac"].obsm["X_scclip_raw"]
        np.savez(
            runs / f"{'_'.join(fold)}_s{seed}_feature_path{tag.replace(' ', '_')}.npz", rna=r_raw, atac=a_raw
        )
        record = {
            "joint": _scores(emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"], labels),
            "raw": _scores(r_raw, a_raw, labels),
            "train_seconds": seconds, "feature_path": info,
        }  # fmt: skip
        store.put(key, record)
        log(key, record)


def mlp_file(fold, seed: int) -> Path:
    """The contrastive MLP's test embeddings of one fold and seed (for the late-fusion row)."""
    folder = REPO / "runs" / "cv" / "baselines"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"mlp_{'_'.join(fold)}_s{seed}.npz"


def run_fusion(fold, seeds, recipe: str, store: Store, runs: Path, labels, log) -> None:
    """scCLIP and the MLP of the same seed as one embedding (concatenated unit vectors: the cosine is the mean
    of both methods' cosines), gap-closed: does the Transformer add what the MLP on PCA / LSI misses?"""
    for seed in seeds:
        key = f"scCLIP {recipe} + MLP (late fusion)|{','.join(fold)}|{seed}"
        npz, mlp = runs / f"{'_'.join(fold)}_s{seed}.npz", mlp_file(fold, seed)
        if store.has(key) or not (npz.exists() and mlp.exists()):
            continue
        with np.load(npz) as z, np.load(mlp) as b:
            r, a = seed_ensemble([(z["rna"], z["atac"]), (b["rna"], b["atac"])])
        jr, ja, _ = close_gap(r, a)
        record = {"joint": _scores(jr, ja, labels), "raw": _scores(r, a, labels)}
        store.put(key, record)
        log(key, record)


def rows(records: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{row: {fold: {metric: mean over seeds}}}``; scCLIP records give a gap-closed and a raw row."""
    acc: dict[str, dict[str, list[dict]]] = {}
    for key, rec in records.items():
        method, fold, _seed = key.split("|")
        for part, suffix in (("joint", ""), ("raw", " (raw)")):
            if part in rec and (part == "joint" or method.startswith("scCLIP")):
                acc.setdefault(method + suffix, {}).setdefault(fold, []).append(rec[part])
    return {
        row: {fold: {c: float(np.mean([s[c] for s in scores if s.get(c) is not None] or [np.nan])) for c in COLUMNS}
              for fold, scores in folds.items()}
        for row, folds in acc.items()
    }  # fmt: skip


def print_tables(data: dict) -> None:
    """Per-fold FOSCTTM, then mean +- sd over folds of every metric (each fold: the mean over its seeds)."""
    table = rows(data["records"])
    folds = [",".join(f) for f in FOLDS]
    limits = data.get("meta", {}).get("fine_type_limit", {})
    print("\nFOSCTTM per held-out fold (mean over seeds; lower is better)\n")
    print("| method | " + " | ".join(folds) + " | mean ± sd |")
    print("|---|" + "---|" * (len(folds) + 1))
    for row, per in table.items():
        vals = [per.get(f, {}).get("foscttm", np.nan) for f in folds]
        print(f"| {row} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {_mean_sd(vals)} |")
    if limits:
        vals = [limits.get(f, np.nan) for f in folds]
        print("| fine-type limit | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {_mean_sd(vals)} |")
    print("\nMean ± sd over the 5 folds\n")
    print("| method | " + " | ".join(COLUMNS.values()) + " | folds |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for row, per in table.items():
        cells = [_mean_sd([per[f][c] for f in per]) for c in COLUMNS]
        print(f"| {row} | " + " | ".join(cells) + f" | {len(per)} |")
    if "contrastive MLP" in table:
        print_targets(table)
    times = {}
    for key, rec in data["records"].items():
        if "train_seconds" in rec:
            times.setdefault(key.split("|")[0], []).append(rec["train_seconds"])
    print("\nTraining time per model (mean over folds and seeds): " + "; ".join(
        f"{m} {np.mean(t):.0f} s" for m, t in times.items()))  # fmt: skip


def print_targets(table: dict) -> None:
    """Each scCLIP row against the quality targets: FOSCTTM / MLP, folds worse than the MLP, top-1 / MLP,
    mixing and the per-modality cell-type ASW (fold means)."""
    mlp = table["contrastive MLP"]
    folds = [f for f in mlp if all(f in per for per in table.values())]

    def mean(per, c):
        return float(np.mean([per[f][c] for f in folds]))

    print(f"\nAgainst the contrastive MLP over {len(folds)} folds (targets: FOSCTTM ratio <= 0.90, no fold worse, "
          "top-1 ratio >= 1.3, mixing >= 0.8, ASW not below the MLP's)\n")  # fmt: skip
    print(
        "| method | FOSCTTM / MLP | folds worse | top-1 / MLP | mixing | ASW RNA / ATAC |\n|---|---|---|---|---|---|"
    )
    ref = f"{mean(mlp, 'asw_cell_type_rna'):.3f} / {mean(mlp, 'asw_cell_type_atac'):.3f}"
    print(f"| contrastive MLP | 1.000 | - | 1.00 | {mean(mlp, 'mixing_entropy'):.3f} | {ref} |")
    for row, per in table.items():
        if not row.startswith("scCLIP"):
            continue
        worse = sum(per[f]["foscttm"] > mlp[f]["foscttm"] for f in folds)
        print(f"| {row} | {mean(per, 'foscttm') / mean(mlp, 'foscttm'):.3f} | {worse} | "
              f"{mean(per, 'top1') / mean(mlp, 'top1'):.2f} | {mean(per, 'mixing_entropy'):.3f} | "
              f"{mean(per, 'asw_cell_type_rna'):.3f} / {mean(per, 'asw_cell_type_atac'):.3f} |")  # fmt: skip


def _mean_sd(values) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "-"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if v.size > 1 else f"{v.mean():.4f}"


def main(argv: list[str] | None = None) -> None:
    import mudata as md

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--recipe", default="default", help="name of the scCLIP recipe (row label and run folder)")
    p.add_argument("--spec", default="{}", help="JSON recipe: preset / model / train / fs / atac overrides")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=int, nargs="+", default=list(range(5)), help="fold numbers 0-4")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-scclip", action="store_true")
    p.add_argument(
        "--feature-path",
        action="store_true",
        help="also score each fold's model with the feature path fused (train(feature_path=True))",
    )
    p.add_argument("--feature-path-members", type=int, nargs="+", default=[1],
                   help="MLP members of the feature path; one row per value (default 1, the session-5 row)")  # fmt: skip
    p.add_argument(
        "--gene-activity",
        action="store_true",
        help="the feature path with its gene-activity bridge (the product default since session 7); without "
        "this flag the rows are the plain feature path of sessions 5-6",
    )
    p.add_argument("--json", type=Path, default=None, help="results file (resumed when it exists)")
    p.add_argument("--table", type=Path, nargs="+", default=None, help="only print the tables of these files")
    args = p.parse_args(argv)
    if args.table:
        merged = {"records": {}, "meta": {}}
        for path in args.table:
            d = json.loads(path.read_text())
            merged["records"].update(d["records"])
            merged["meta"].update(d.get("meta", {}))
        print_tables(merged)
        return
    md.set_options(pull_on_update=False)
    mdata = md.read_h5mu(args.data)
    store = Store(args.json)
    spec = json.loads(args.spec)
    store.data["meta"].setdefault("specs", {})[args.recipe] = spec
    runs = REPO / "runs" / "cv" / args.recipe
    runs.mkdir(parents=True, exist_ok=True)
    obs = mdata["rna"].obs
    batch = obs["batch"].astype(str).to_numpy()

    def log(key: str, rec: dict) -> None:
        part = rec.get("joint", {})
        print(f"{key}: FOSCTTM {part.get('foscttm'):.4f} top-1 {part.get('top1'):.4f} "
              f"mixing {part.get('mixing_entropy'):.3f}  ({rec.get('train_seconds', 0):.0f} s)", flush=True)  # fmt: skip

    for k in args.folds:
        fold = FOLDS[k]
        test = np.isin(batch, fold)
        labels = obs["cell_type"].astype(str).to_numpy()[test]
        store.data["meta"].setdefault("fine_type_limit", {})[",".join(fold)] = fine_type_limit(
            obs["cell_type_fine"].astype(str).to_numpy()[test]
        )
        print(
            f"fold {k}: test {fold} ({test.sum()} cells), train {len(batch) - test.sum()} cells", flush=True
        )
        if not args.no_baselines:
            run_baselines(mdata, fold, args.seeds, store, labels, log)
        if not args.no_scclip:
            run_scclip(mdata, fold, args.seeds, spec, args.recipe, store, runs, labels, log)
        run_fusion(fold, args.seeds, args.recipe, store, runs, labels, log)
        if args.feature_path:
            for members in args.feature_path_members:
                run_feature_path(
                    mdata, fold, args.seeds, args.recipe, store, runs, labels, log, members=members,
                    gene_activity=args.gene_activity,
                )  # fmt: skip
    print_tables(store.data)


if __name__ == "__main__":
    main()
