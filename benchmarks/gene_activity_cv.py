"""Does a gene-activity bridge help the feature path? Cross-validated on the stored CV fold models.

The feature path (``scclip.model.fusion``) feeds a contrastive MLP with PCA scores of the RNA input and LSI
scores of the ATAC counts. The bridge gives the ATAC tower a second block: the cell's **gene activity** (ATAC
counts over each model gene's body +- 2 kb, the Signac / ArchR / GLUE recipe), log-normalised as the RNA input is
(CP10k, log1p) and projected on the *RNA* PCA, so both towers see coordinates of one gene space. Each block is
scaled to unit overall standard deviation on the training cells.

For every fold and seed of ``benchmarks/cv.py`` (the fold models in ``runs/cv/<recipe>``, same split, same
seeds), both variants are fitted with 3 members and scored on the fold's held-out libraries: the feature path
alone, and fused with the fold model's raw Transformer embedding (``<fold>_s<seed>.npz``). Decision rule of
docs/quality.md: a change is kept when the mean over folds and seeds improves by at least 0.005 FOSCTTM.

    python benchmarks/gene_activity_cv.py --json out/cv/gene_activity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mudata as md
import numpy as np
import scipy.sparse as sp
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from cv import FOLDS, _scores  # noqa: E402

import scclip  # noqa: E402
from scclip.api import map_modality, prepare_modality, split_cells  # noqa: E402
from scclip.baselines import train_contrastive_mlp  # noqa: E402
from scclip.explore import activity_region  # noqa: E402
from scclip.model.fusion import FeaturePath, fuse, lsi_input  # noqa: E402

SNARE = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def activity_weights(genes, bins) -> sp.csr_matrix:
    """(ATAC features x genes) 0/1: feature overlaps the gene body +- 2 kb (both sides: no strand here)."""
    rows, cols = [], []
    for chrom, b in bins.groupby("chrom", sort=False):
        order = np.argsort(b["start"].to_numpy())
        starts, ends = b["start"].to_numpy()[order], b["end"].to_numpy()[order]
        run_end = np.maximum.accumulate(ends)
        for gi in np.flatnonzero(genes["chrom"].to_numpy() == chrom):
            _, lo, hi = activity_region(chrom, genes["start"].iat[gi], genes["end"].iat[gi])
            j1 = np.searchsorted(starts, hi, side="left")  # features starting before the region ends
            j0 = np.searchsorted(run_end, lo, side="right")  # and ending after it starts
            hit = np.arange(j0, j1)
            hit = hit[ends[hit] > lo]
            rows += b.index.to_numpy()[order[hit]].tolist()
            cols += [gi] * hit.size
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(bins), len(genes)))


def log_cp10k(X: sp.csr_matrix) -> sp.csr_matrix:
    tot = np.asarray(X.sum(axis=1)).ravel()
    X = sp.csr_matrix(sp.diags(np.divide(1e4, tot, out=np.zeros_like(tot), where=tot > 0)) @ X)
    X.data = np.log1p(X.data)
    return X


def fit_variant(X_rna, atac, W, fit_idx, val_idx, *, bridge: bool, seed: int, members: int = 3):
    """The feature path's recipe (3 members), with or without the gene-activity block; returns an encode fn."""
    from sklearn.decomposition import PCA, TruncatedSVD

    df = np.asarray((atac[fit_idx] > 0).sum(axis=0)).ravel()
    idf = (len(fit_idx) / np.maximum(df, 1)).astype(np.float32)
    k = 50
    pca = PCA(n_components=k, svd_solver="arpack", random_state=seed).fit(X_rna[fit_idx])
    svd = TruncatedSVD(n_components=k + 1, random_state=seed).fit(lsi_input(atac, idf)[fit_idx])
    proj = {"rna": {"components": pca.components_.T.astype(np.float32), "mean": pca.mean_.astype(np.float32)},
            "atac": {"components": svd.components_[1:].T.astype(np.float32), "idf": idf}}  # fmt: skip
    path = FeaturePath(proj, [], {"n_components": k, "hidden": 256, "dim": 64})
    rf, af = path.features("rna", X_rna), path.features("atac", atac)
    if bridge:
        ga = log_cp10k(sp.csr_matrix(atac @ W))
        gz = np.asarray(ga @ proj["rna"]["components"]) - proj["rna"]["mean"] @ proj["rna"]["components"]
        gz = gz / gz[fit_idx].std()
        af = np.concatenate([af / af[fit_idx].std(), gz.astype(np.float32)], axis=1)
    runs = []
    vals = [val_idx] + [  # as the product: member i early-stops on its own random cells of fit_idx
        np.sort(np.random.default_rng(seed + i).choice(fit_idx, size=len(val_idx), replace=False))
        for i in range(1, members)
    ]
    for i, val in enumerate(vals):
        fit = np.setdiff1d(fit_idx, val)
        runs.append(train_contrastive_mlp(rf[fit], af[fit], rf[val], af[val], seed=seed + i))

    @torch.inference_mode()
    def encode(rows):
        outs = []
        for r in runs:
            zr = r.model.encode_rna(torch.from_numpy(rf[rows]))
            za = r.model.encode_atac(torch.from_numpy(af[rows]))
            outs.append((zr.numpy(), za.numpy()))
        n = np.sqrt(len(outs))
        return np.concatenate([o[0] for o in outs], 1) / n, np.concatenate([o[1] for o in outs], 1) / n

    return encode, [r.best_val_foscttm for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(REPO / "runs" / "cv" / "default"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=str(REPO / "out" / "cv" / "gene_activity.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs, out = Path(args.runs), Path(args.json)
    records = json.loads(out.read_text()) if out.exists() else {}
    mdata = md.read_h5mu(SNARE)
    labels = mdata["rna"].obs["cell_type"].astype(str).to_numpy()
    batch = mdata["rna"].obs["batch"].astype(str).to_numpy()
    for fold in FOLDS:
        test = np.flatnonzero(np.isin(batch, fold))
        for seed in args.seeds:
            folder, npz = runs / f"{'_'.join(fold)}_s{seed}", runs / f"{'_'.join(fold)}_s{seed}.npz"
            if not (folder / "model" / "config.json").exists() or not npz.exists():
                print(f"skip {fold} s{seed}: no fold model", flush=True)
                continue
            model = scclip.load_pretrained(folder)
            X_rna = sp.csr_matrix(prepare_modality(model, mdata["rna"], "rna")[0], dtype=np.float32)
            atac = sp.csr_matrix(
                map_modality(mdata["atac"], model.feature_space["atac"])[0], dtype=np.float32
            )
            W = activity_weights(
                model.feature_space["rna"].to_frame(), model.feature_space["atac"].to_frame()
            )
            split = split_cells(mdata["rna"].obs, holdout_key="batch", holdout=list(fold), val_key=None,
                                val_values=(), val_size=1000, seed=seed)  # fmt: skip
            fit_idx, val_idx = np.sort(np.r_[split["train"], split["val"]]), np.sort(split["val"])
            t_raw = np.load(npz)
            for bridge in (False, True):
                key = f"{'bridge' if bridge else 'plain'}|{','.join(fold)}|{seed}"
                if key in records:
                    continue
                t0 = time.perf_counter()
                encode, val = fit_variant(X_rna, atac, W, fit_idx, val_idx, bridge=bridge, seed=seed)
                r, a = encode(test)
                rec = {"path": _scores(r, a, labels[test]),
                       "fused_raw": _scores(fuse(t_raw["rna"], r), fuse(t_raw["atac"], a), labels[test]),
                       "val_foscttm": val, "seconds": time.perf_counter() - t0,
                       "genes_with_activity": int((W.sum(axis=0) > 0).sum())}  # fmt: skip
                records[key] = rec
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(records, indent=1))
                print(key, f"path {rec['path']['foscttm']:.4f} fused {rec['fused_raw']['foscttm']:.4f} "
                      f"({rec['seconds']:.0f} s)", flush=True)  # fmt: skip
    for v in ("plain", "bridge"):
        for part in ("path", "fused_raw"):
            xs = [r[part]["foscttm"] for k, r in records.items() if k.startswith(v + "|")]
            if xs:
                print(
                    f"{v:6s} {part:9s} FOSCTTM {np.mean(xs):.4f} +- {np.std(xs, ddof=1) if len(xs) > 1 else 0:.4f} (n={len(xs)})"
                )


if __name__ == "__main__":
    main()
