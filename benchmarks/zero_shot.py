"""Zero-shot demonstration on the real SNARE-seq test libraries 09I + 09J (never seen by the models).

1. Embed the held-out cells with each model: FOSCTTM, top-1, ASW, mixing, label transfer (raw and gap-closed).
2. The same cells after re-defining their ATAC peaks so that names no longer match and many peaks hit another
   model feature: each peak shifted by a random offset of up to half a bin width, widened, and close
   neighbours merged (counts summed) -- mapped back by interval overlap only.
3. The same cells as *unpaired* uploads: RNA and ATAC with shuffled, renamed barcodes, matched one-to-one.
4. Fragments path: the real PBMC fragments file counted onto an hg38 bin feature space, checked against the
   Cell Ranger peak matrix of the same cells aggregated onto the same bins.

    python benchmarks/zero_shot.py --model pretrained/mouse-cortex-snareseq --own-peaks-model runs/snare-own \\
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scclip  # noqa: E402
from scclip.evaluate import evaluate_embeddings  # noqa: E402
from scclip.features import var_intervals  # noqa: E402
from scclip.match import one_to_one  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TEST = ("09I", "09J")
FRAGMENTS = SHARED / "formats" / "pbmc10x_multiome_1k_subset_fragments.tsv.gz"
KEYS = ("foscttm", "top1", "top5", "asw_cell_type", "mixing_entropy", "label_transfer_accuracy")


def perturb_peaks(atac: ad.AnnData, *, max_shift: int, seed: int = 0) -> tuple[ad.AnnData, dict]:
    """Shift each peak by U(-max_shift, max_shift), widen it by up to 300 bp per side, merge neighbours that then
    lie within 500 bp (their counts summed), and name them ``chrom-start-end``."""
    rng = np.random.default_rng(seed)
    chrom, start, end, _ = var_intervals(atac)
    shift = rng.integers(-max_shift, max_shift + 1, size=len(start))
    s = np.maximum(start + shift - rng.integers(0, 301, size=len(start)), 0)
    e = np.maximum(end + shift + rng.integers(0, 301, size=len(start)), s + 1)
    order = np.lexsort((s, chrom))
    group = np.zeros(len(order), dtype=np.int64)
    g, last_chrom, last_end = -1, None, -1
    for rank, i in enumerate(order):
        if chrom[i] != last_chrom or s[i] > last_end + 500:
            g += 1
            last_chrom, last_end = chrom[i], e[i]
        else:
            last_end = max(last_end, e[i])
        group[rank] = g
    n_new = g + 1
    agg = sparse.csr_matrix(
        (np.ones(len(order), dtype=np.float32), (order, group)), shape=(len(order), n_new)
    )
    X = (sparse.csr_matrix(atac.X) @ agg).tocsr()
    frame = pd.DataFrame({"chrom": chrom[order], "s": s[order], "e": e[order], "g": group})
    spans = frame.groupby("g").agg(chrom=("chrom", "first"), start=("s", "min"), end=("e", "max"))
    names = [f"{c}-{a}-{b}" for c, a, b in zip(spans["chrom"], spans["start"], spans["end"], strict=True)]
    out = ad.AnnData(X=X, obs=atac.obs.copy(), var=pd.DataFrame(index=pd.Index(names)))
    out.uns["genome"] = "mm10"
    info = {"peaks_before": int(atac.n_vars), "peaks_after": int(n_new), "max_shift_bp": int(max_shift)}
    return out, info


def _scores(emb: md.MuData, key: str) -> dict:
    labels = emb["rna"].obs["cell_type"].astype(str).to_numpy()
    res = evaluate_embeddings(
        emb["rna"].obsm[key], emb["atac"].obsm[key], rna_labels=labels, atac_labels=labels
    )
    return {k: res[k] for k in KEYS}


def zero_shot(model_dir: str, test: md.MuData, *, seed: int = 0) -> dict:
    model = scclip.load_pretrained(model_dir)
    out: dict = {"model": model.name}
    t0 = time.perf_counter()
    emb = scclip.embed(model, test)
    out["embed_seconds"] = time.perf_counter() - t0
    out["coverage"] = {m: emb.uns["scclip"]["modalities"][m].get("frac_query_used") for m in ("rna", "atac")}
    out["as_is"] = {"raw": _scores(emb, "X_scclip_raw"), "gap-closed": _scores(emb, "X_scclip")}

    bin_size = model.feature_space["atac"].bin_size or 5000
    atac2, info = perturb_peaks(test["atac"], max_shift=bin_size // 2, seed=seed)
    info["model_features"] = int(model.feature_space["atac"].n_features)
    emb2 = scclip.embed(model, md.MuData({"rna": test["rna"], "atac": atac2}))
    info["atac_coverage"] = emb2.uns["scclip"]["modalities"]["atac"].get("frac_query_used")
    info["atac_count_coverage"] = emb2.uns["scclip"]["modalities"]["atac"].get("count_coverage")
    out["perturbed_peaks"] = {
        "info": info,
        "raw": _scores(emb2, "X_scclip_raw"),
        "gap-closed": _scores(emb2, "X_scclip"),
    }
    out["perturbed_peaks"]["foscttm_change"] = (
        out["perturbed_peaks"]["raw"]["foscttm"] - out["as_is"]["raw"]["foscttm"]
    )

    # unpaired uploads: shuffled, renamed barcodes; one-to-one matching by the model's similarity
    rng = np.random.default_rng(seed)
    pr, pa = rng.permutation(test.n_obs), rng.permutation(test.n_obs)
    rna_u = test["rna"][pr].copy()
    atac_u = test["atac"][pa].copy()
    truth = dict(
        zip(
            [f"r{i}" for i in range(len(pr))],
            [f"a{int(np.flatnonzero(pa == p)[0])}" for p in pr],
            strict=True,
        )
    )
    rna_u.obs_names = [f"r{i}" for i in range(len(pr))]
    atac_u.obs_names = [f"a{i}" for i in range(len(pa))]
    emb_u = scclip.embed(model, md.MuData({"rna": rna_u, "atac": atac_u}))
    unpaired = {"paired_detected": bool(emb_u.uns["scclip"]["paired"]), "chance": 1.0 / test.n_obs}
    for key in ("X_scclip_raw", "X_scclip"):
        pairs = one_to_one(
            emb_u["rna"].obsm[key],
            emb_u["atac"].obsm[key],
            rna_names=rna_u.obs_names,
            atac_names=atac_u.obs_names,
        )
        unpaired[key] = {
            "method": pairs.attrs.get("method"),
            "fraction_true_pairs": float(
                np.mean([truth[r] == a for r, a in zip(pairs["rna"], pairs["atac"], strict=True)])
            ),
        }
    out["unpaired"] = unpaired
    return out


def fragments_check() -> dict:
    """Count PBMC fragments onto hg38 5 kb bins and compare with the peak matrix aggregated onto the same bins."""
    from scclip.features import align_features, bin_features
    from scclip.fragments import count_fragments, covered_by_fragments

    pbmc = md.read_h5mu(SHARED / "formats" / "pbmc10x_multiome_1k_subset.h5mu")
    atac = pbmc["atac"]
    bins = bin_features("hg38", bin_size=5000, n_patches=64)
    peaks_on_bins = align_features(atac, bins, overlap="best").matrix.tocsr()
    # bins whose peaks lie entirely inside them: there both counts must agree
    chrom, start, end, _ = var_intervals(atac)
    # the file covers windows around 45 genes only: a peak is covered when no 3 kb gap in fragments touches it
    covered = covered_by_fragments(FRAGMENTS, chrom, start, end)
    inside = ((start // 5000) == ((end - 1) // 5000)) & covered
    used = np.unique(peaks_on_bins[inside].indices)
    spill = np.unique(peaks_on_bins[~inside].indices)
    clean = np.setdiff1d(used, spill)
    from_peaks = (sparse.csr_matrix(atac.X) @ peaks_on_bins)[:, clean].toarray()
    t0 = time.perf_counter()
    counted = count_fragments(
        FRAGMENTS,
        bins.chrom[clean],
        bins.start[clean],
        bins.end[clean],
        barcodes=atac.obs_names,
    )
    seconds = time.perf_counter() - t0
    frag = sparse.csr_matrix(counted.X).toarray()
    # a bin also holds cuts outside the called peaks; restricted to the peaks themselves the two must agree
    on_peaks = count_fragments(
        FRAGMENTS,
        chrom,
        start,
        end,
        barcodes=atac.obs_names,
    )
    via_peaks = (sparse.csr_matrix(on_peaks.X) @ peaks_on_bins)[:, clean].toarray()
    r = float(np.corrcoef(frag.ravel(), from_peaks.ravel())[0, 1])
    return {
        "identical_entries_peaks_then_bins": float(np.mean(via_peaks == from_peaks)),
        "pearson_r_peaks_then_bins": float(np.corrcoef(via_peaks.ravel(), from_peaks.ravel())[0, 1]),
        "cells": int(atac.n_obs),
        "bins_compared": len(clean),
        "pearson_r": r,
        "fragment_counts_total": float(frag.sum()),
        "peak_counts_total": float(from_peaks.sum()),
        "fraction_of_fragment_cuts_in_peaks": float(from_peaks.sum() / max(frag.sum(), 1)),
        "count_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "chen2019_snareseq_dev.h5mu")
    p.add_argument(
        "--model", action="append", default=[], help="model folder or pretrained name (repeatable)"
    )
    p.add_argument("--own-peaks-model", action="append", default=[], help="a model trained on its own peaks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    md.set_options(pull_on_update=False)
    full = md.read_h5mu(args.data)
    keep = full["rna"].obs["batch"].astype(str).isin(TEST).to_numpy()
    test = md.MuData({m: full[m][keep].copy() for m in ("rna", "atac")})
    print(f"test cells (libraries {', '.join(TEST)}): {test.n_obs}", flush=True)
    results = {"models": {}, "fragments": None}
    for model_dir in args.model + args.own_peaks_model:
        res = zero_shot(model_dir, test, seed=args.seed)
        results["models"][model_dir] = res
        print(json.dumps(res, indent=1), flush=True)
    if (FRAGMENTS).exists():
        results["fragments"] = fragments_check()
        print(json.dumps(results["fragments"], indent=1), flush=True)
    print()
    print(
        "| model | ATAC peaks | FOSCTTM | top-1 | ASW | mixing | label transfer | unpaired 1:1 true pairs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for _name, res in results["models"].items():
        for tag, block in (("as is", res["as_is"]), ("perturbed", res["perturbed_peaks"])):
            raw, joint = block["raw"], block["gap-closed"]
            pairs = res["unpaired"]["X_scclip_raw"]["fraction_true_pairs"] if tag == "as is" else None
            print(
                f"| {res['model']} | {tag} | {raw['foscttm']:.4f} | {raw['top1']:.4f} | {joint['asw_cell_type']:.3f} | "
                f"{joint['mixing_entropy']:.3f} | {joint['label_transfer_accuracy']:.3f} | "
                + ("-" if pairs is None else f"{pairs:.3f} (chance {res['unpaired']['chance']:.4f})")
                + " |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
