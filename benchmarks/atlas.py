"""Atlas scale end to end: generate a paired atlas on disk, train out of core, embed, close the gap, match, UMAP,
click -> matches. Every stage runs in a fresh process; its wall time and peak RSS (``os.wait4``) are printed.

    nice -n 19 python benchmarks/atlas.py run --cells 20000 --out out/atlas/20k        # a small run (minutes)
    nice -n 19 python benchmarks/atlas.py run --out out/atlas/full                     # the paper's 377k atlas

Defaults are the paper's atlas: 377,000 cells, 36,000 genes (real hg38 genes and coordinates, bundled table),
1,000,000 ATAC peaks spread genome-wide on hg38, 10 batches, 20 cell types, ~2,000 genes and ~4,000 peaks per
cell (10x multiome levels; ``--rna-per-cell`` / ``--atac-per-cell``). Cell types have real structure: each type
draws a share of its non-zeros from its own feature programme (``benchmarks/atlas_gen.py``). Stages:

1. ``generate``: the ``.h5mu``, ``--gen-chunk`` cells at a time, CSR appended with h5py (never the whole matrix);
2. ``train``: ``scclip train --chunk-size C --out-of-core --max-steps S`` (map once to an on-disk cache, stream);
3. ``embed``: ``scclip.embed(model, path, chunk_size=C, close_gap=False)`` of all cells (``scclip embed
   --chunk-size`` = this stage + the next);
4. ``gap``: ``scclip.gap.close_gap`` (cross-modal completion, k = 15) of all cells;
5. ``match``: top-10 partners, top-10 accuracy and FOSCTTM on the first ``--match-cells`` cells (100,000);
6. ``umap``: the app's UMAP (:func:`scclip.explore.compute_umap`: umap-learn, cosine, 15 neighbours, min_dist
   0.3) of all 2 x N points; above ``--umap-fit`` points its scalable path: fit on a seeded sample, place every
   other point at the mean of its nearest fitted points (blocked top-k, linear);
7. ``click``: the app's joint view (``scclip.explore.joint_from_embedded``) and click -> matches
   (``scclip.explore.partners_table``) for 20 cells: first and median latency.

Files go under ``--out`` (gitignored ``out/``) and are deleted at the end unless ``--keep``. Prints a markdown
table: stage | wall s | peak RSS GB | cells/s, and writes it with the details to ``--out/stages.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAGES = ("generate", "train", "embed", "gap", "match", "umap", "click")


def _run_stage(name: str, cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in a fresh process (output to ``log``); its wall time and peak RSS."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=HERE.parent)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    rec = {"stage": name, "wall_s": wall, "peak_rss_gb": usage.ru_maxrss / 2**20, "rc": rc, "cmd": cmd}
    print(f"{name:9s} rc={rc} wall {wall:8.1f} s  peak RSS {rec['peak_rss_gb']:6.2f} GB  ({log})", flush=True)
    if rc != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return rec


def _stage_cmds(a, out: Path) -> dict[str, list[str]]:
    py, me = sys.executable, str(Path(__file__).resolve())
    data, run = str(out / "atlas.h5mu"), str(out / "run")
    gen = [py, str(HERE / "atlas_gen.py"), "--out", data, "--cells", str(a.cells), "--genes", str(a.genes),
           "--peaks", str(a.peaks), "--rna-per-cell", str(a.rna_per_cell), "--atac-per-cell",
           str(a.atac_per_cell), "--batches", str(a.batches), "--types", str(a.types), "--chunk",
           str(a.gen_chunk), "--seed", str(a.seed)]  # fmt: skip
    train = [py, "-m", "scclip.cli", "train", "--data", data, "--out", run, "--chunk-size", str(a.chunk_size),
             "--out-of-core", "--max-steps", str(a.max_steps), "--epochs", "1", "--batch-size",
             str(a.batch_size), "--val-size", str(a.val_size), "--seed", str(a.seed)]  # fmt: skip
    stage = [py, me, "stage", "--out", str(out), "--chunk-size", str(a.chunk_size)]
    return {
        "generate": gen,
        "train": train,
        "embed": [*stage, "embed"],
        "gap": [*stage, "gap"],
        "match": [*stage, "match", "--match-cells", str(a.match_cells)],
        "umap": [*stage, "umap", "--umap-fit", str(a.umap_fit)],
        "click": [*stage, "click"],
    }


def run_all(a) -> list[dict]:
    """All stages (or ``--stages``) one after the other; stops at the first failure."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmds = _stage_cmds(a, out)
    if "train" in a.stages:
        shutil.rmtree(out / "run", ignore_errors=True)
    records = []
    for name in a.stages:
        rec = _run_stage(name, cmds[name], out / f"{name}.log")
        rec.update(_details(name, out, a))
        records.append(rec)
        (out / "stages.json").write_text(json.dumps({"args": vars(a), "stages": records}, indent=2))
        if rec["rc"] != 0:
            break
    print(table(records))
    if not a.keep:
        for p in ("atlas.h5mu", "run", "emb"):
            path = out / p
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return records


def _details(name: str, out: Path, a) -> dict:
    """The throughput of a stage (cells / s) and what it reported."""
    extra = out / "emb" / f"{name}.json"
    rec = json.loads(extra.read_text()) if extra.is_file() else {}
    if name == "generate" and (out / "atlas.json").is_file():
        rec = json.loads((out / "atlas.json").read_text())
    if name == "train" and (out / "run" / "model" / "summary.json").is_file():
        s = json.loads((out / "run" / "model" / "summary.json").read_text())
        ooc = s.get("out_of_core", {})
        steps = (
            s["train_config"]["max_steps"]
            or s["n_train_cells"] // s["train_config"]["batch_size"] * s["epochs_run"]
        )
        rec = {
            "cache_seconds": ooc.get("cache_seconds"),
            "svd_init_seconds": ooc.get("init_seconds"),
            "cache_gb": ooc.get("cache_bytes", 0) / 1e9,
            "train_seconds": s["train_seconds"],
            "steps": steps,
            "train_cells_per_s": steps * s["train_config"]["batch_size"] / max(s["train_seconds"], 1e-9),
            "val_foscttm": s["validation"]["foscttm"],
            "n_train_cells": s["n_train_cells"],
        }
    return rec


def _rate(r: dict, n_cells: int) -> str:
    name = r["stage"]
    if name == "train" and "cache_seconds" in r:
        return f"map+cache {n_cells / r['cache_seconds']:,.0f}; steps {r['train_cells_per_s']:,.0f}"
    cells = {"match": r.get("n_cells"), "umap": r.get("n_points"), "click": None}.get(name, n_cells)
    return f"{cells / r['wall_s']:,.0f}" if cells else "-"


def table(records: list[dict]) -> str:
    n = next((r.get("n_cells") for r in records if r["stage"] == "generate"), None) or _ARGS.cells
    rows = ["| stage | wall s | peak RSS GB | cells/s | notes |", "|---|---|---|---|---|"]
    for r in records:
        notes = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("stage", "wall_s", "peak_rss_gb", "rc", "cmd")}  # fmt: skip
        rows.append(
            f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {_rate(r, n)} | {notes} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------- the stages
def stage(a) -> None:
    """One stage inside its own process (``python benchmarks/atlas.py stage NAME``)."""
    out, emb = Path(a.out), Path(a.out) / "emb"
    emb.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rec = {"embed": _embed, "gap": _gap, "match": _match, "umap": _umap, "click": _click}[a.name](a, out, emb)
    rec["seconds_inside"] = time.perf_counter() - t0
    (emb / f"{a.name}.json").write_text(json.dumps(rec))


def _embed(a, out: Path, emb: Path) -> dict:
    import scclip

    model = scclip.load_pretrained(out / "run" / "model")
    e = scclip.embed(model, str(out / "atlas.h5mu"), chunk_size=a.chunk_size, close_gap=False)
    np.save(emb / "raw_rna.npy", e["rna"].obsm["X_scclip_raw"])
    np.save(emb / "raw_atac.npy", e["atac"].obsm["X_scclip_raw"])
    e["rna"].obs.to_pickle(emb / "obs.pkl")
    return {"n_cells": int(e["rna"].n_obs)}


def _gap(a, out: Path, emb: Path) -> dict:
    from scclip.gap import close_gap

    jr, ja, info = close_gap(np.load(emb / "raw_rna.npy"), np.load(emb / "raw_atac.npy"))
    np.save(emb / "joint_rna.npy", jr)
    np.save(emb / "joint_atac.npy", ja)
    return {"n_cells": len(jr), "gap": {k: v for k, v in info.items() if isinstance(v, int | float | str)}}


def _match(a, out: Path, emb: Path) -> dict:
    from scclip.match import topk_partners
    from scclip.metrics import foscttm, topk_accuracy

    n = a.match_cells
    zr, za = np.load(emb / "joint_rna.npy")[:n], np.load(emb / "joint_atac.npy")[:n]
    t0 = time.perf_counter()
    idx, _ = topk_partners(zr, za, k=10)
    t_top = time.perf_counter() - t0
    fos = foscttm(zr, za)["mean"]
    top10 = topk_accuracy(zr, za, k=10)["mean"]
    return {"n_cells": len(zr), "topk_seconds": t_top, "foscttm": float(fos), "top10": float(top10),
            "partners_shape": list(idx.shape)}  # fmt: skip


def _umap(a, out: Path, emb: Path) -> dict:
    """The app's UMAP (:func:`scclip.explore.compute_umap`): fit on ``--umap-fit`` points, place the rest."""
    from scclip.explore import compute_umap
    from scclip.explore.cache import UMAP_PLACE_K, place_by_neighbours

    Z = np.concatenate([np.load(emb / "joint_rna.npy"), np.load(emb / "joint_atac.npy")])
    n, fit_n = len(Z), min(a.umap_fit, len(Z))
    fit_rows = np.sort(np.random.default_rng(0).choice(n, fit_n, replace=False)) if fit_n < n else np.arange(n)
    coords = np.empty((n, 2), dtype=np.float32)
    t0 = time.perf_counter()
    coords[fit_rows] = compute_umap(Z[fit_rows], seed=0, max_fit=fit_n)  # the same rows compute_umap would fit
    t_fit = time.perf_counter() - t0
    rest = np.setdiff1d(np.arange(n), fit_rows)
    if rest.size:
        coords[rest] = place_by_neighbours(Z[rest], Z[fit_rows], coords[fit_rows], k=UMAP_PLACE_K)
    np.save(emb / "umap.npy", coords)
    return {"n_points": n, "fit_points": int(fit_n), "fit_seconds": t_fit,
            "place_seconds": time.perf_counter() - t0 - t_fit}  # fmt: skip


def _click(a, out: Path, emb: Path) -> dict:
    import anndata as ad
    import mudata as md
    import pandas as pd

    from scclip.explore import joint_from_embedded, partners_table

    obs = pd.read_pickle(emb / "obs.pkl")
    mods = {}
    for m in ("rna", "atac"):
        mods[m] = ad.AnnData(obs=obs.copy())
        mods[m].obsm["X_scclip"] = np.load(emb / f"joint_{m}.npy")
    t0 = time.perf_counter()
    joint = joint_from_embedded(md.MuData(mods))
    t_joint = time.perf_counter() - t0
    lat = []
    for i in np.random.default_rng(0).choice(len(joint.Z), 20, replace=False):
        t = time.perf_counter()
        partners_table(joint, int(i), k=10)
        lat.append(time.perf_counter() - t)
    return {"n_points": len(joint.Z), "joint_seconds": t_joint, "click_first_s": lat[0],
            "click_median_s": float(np.median(lat[1:]))}  # fmt: skip


def main(argv=None) -> None:
    global _ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="all stages, each in a fresh process")
    r.add_argument("--out", default="out/atlas/full")
    for name, default in (("cells", 377_000), ("genes", 36_000), ("peaks", 1_000_000), ("rna-per-cell", 2000),
                          ("atac-per-cell", 4000), ("batches", 10), ("types", 20), ("gen-chunk", 5000),
                          ("chunk-size", 10_000), ("max-steps", 200), ("batch-size", 256), ("val-size", 2000),
                          ("match-cells", 100_000), ("umap-fit", 50_000), ("seed", 0)):  # fmt: skip
        r.add_argument(f"--{name}", type=int, default=default)
    r.add_argument("--stages", type=lambda s: s.split(","), default=list(STAGES), help="comma-separated")
    r.add_argument("--keep", action="store_true", help="keep the atlas, the run folder and the embeddings")
    s = sub.add_parser("stage", help="one stage (what run starts in a fresh process)")
    s.add_argument("name", choices=STAGES[2:])
    s.add_argument("--out", required=True)
    s.add_argument("--chunk-size", type=int, default=10_000)
    s.add_argument("--match-cells", type=int, default=100_000)
    s.add_argument("--umap-fit", type=int, default=50_000)
    a = p.parse_args(argv)
    _ARGS = a
    run_all(a) if a.cmd == "run" else stage(a)


_ARGS = None

if __name__ == "__main__":
    main()
