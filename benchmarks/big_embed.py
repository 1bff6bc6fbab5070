"""Peak memory of embedding a file larger than the real data: chunked (backed) vs in-memory.

Builds ``.h5mu`` files of >= ``--cells`` cells by repeating the real SNARE-seq data (both modalities, barcodes
made unique with a ``_rNN`` suffix) in a scratch folder outside the repository, then embeds each in a fresh
subprocess with the pretrained model and reports cells, wall time, cells/s and the peak resident memory of
the process (``VmHWM``). The big file is written replicate by replicate into resizable HDF5 datasets: only
the real data (8,685 cells) and the obs table are ever in memory while writing.

    nice -n 15 python benchmarks/big_embed.py                       # 208,440 cells chunked; 52,110 both ways
    python benchmarks/big_embed.py --cells 50000 --compare-cells 0  # quicker
    nice -n 15 python benchmarks/big_embed.py --compare-cells 50000,200000  # also in memory at 208,440 cells
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def peak_rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    fields = dict(
        line.split(":", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("Vm")
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def build(source: Path, out: Path, n_cells: int) -> int:
    """Write ``source`` repeated to >= ``n_cells`` cells as ``out`` (.h5mu); returns the number of cells."""
    import anndata as ad
    import h5py
    import mudata as md
    import scipy.sparse as sp

    from scclip.io import read, write_h5mu

    src = read(source)
    n_src = src["rna"].n_obs
    reps = -(-n_cells // n_src)
    names = np.concatenate([src["rna"].obs_names.to_numpy().astype(str) + f"_r{i:02d}" for i in range(reps)])
    mods = {}
    for m in ("rna", "atac"):  # a skeleton: full obs / var, X with no stored values (filled in below)
        obs = src[m].obs.iloc[np.tile(np.arange(n_src), reps)].set_axis(names)
        X = sp.csr_matrix((len(names), src[m].n_vars), dtype=np.float32)
        mods[m] = ad.AnnData(X, obs=obs, var=src[m].var.copy())
    write_h5mu(md.MuData(mods), out)
    with h5py.File(out, "r+") as f:
        for m in ("rna", "atac"):
            X = src[m].X.tocsr()
            g = f[f"mod/{m}/X"]
            for key in ("data", "indices", "indptr"):
                del g[key]
            data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
            indices = g.create_dataset(
                "indices", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 18,)
            )
            indptr = np.empty(len(names) + 1, dtype=np.int64)
            indptr[0] = 0
            for i in range(reps):  # one replicate of the real data at a time
                lo = data.shape[0]
                data.resize((lo + X.nnz,))
                indices.resize((lo + X.nnz,))
                data[lo:], indices[lo:] = X.data, X.indices
                indptr[i * n_src + 1 : (i + 1) * n_src + 1] = lo + X.indptr[1:]
            g.create_dataset("indptr", data=indptr)
    return len(names)


def worker(path: str, model: str, mode: str, chunk_size: int) -> None:
    """Embed ``path`` in this (fresh) process and print one JSON line of figures.

    ``scclip.embed(..., close_gap=False)`` then :func:`scclip.gap.close_gap` on its output: what ``embed`` does
    by default, split in two so that the peak memory of reading + mapping + encoding is reported on its own.
    """
    import scclip
    from scclip.gap import close_gap
    from scclip.io import read

    m = scclip.load_pretrained(model)
    base = peak_rss_mb()[0]
    t0 = time.perf_counter()
    if mode == "chunked":
        emb = scclip.embed(m, path, chunk_size=chunk_size, device="cpu", close_gap=False)
    else:
        emb = scclip.embed(m, read(path), device="cpu", close_gap=False)
    t_embed = time.perf_counter() - t0
    hwm_embed = peak_rss_mb()[1]
    joint_r, joint_a, _ = close_gap(emb["rna"].obsm["X_scclip_raw"], emb["atac"].obsm["X_scclip_raw"])
    wall = time.perf_counter() - t0
    hwm = peak_rss_mb()[1]
    n = emb["rna"].n_obs
    arrays = [emb[k].obsm[o] for k in emb.mod for o in emb[k].obsm] + [joint_r, joint_a]
    figures = {
        "mode": mode,
        "cells": n,
        "chunk_size": chunk_size if mode == "chunked" else None,
        "wall_s": round(wall, 1),
        "cells_per_s": round(n / wall, 1),
        "embed_s": round(t_embed, 1),
        "gap_s": round(wall - t_embed, 1),
        "rss_after_model_load_mb": round(base, 1),
        "peak_rss_read_map_encode_mb": round(hwm_embed, 1),
        "peak_rss_mb": round(hwm, 1),
        "embeddings_mb": round(sum(a.nbytes for a in arrays) / 2**20, 1),
        "count_coverage": {
            k: round(v["count_coverage"], 4) for k, v in emb.uns["scclip"]["modalities"].items()
        },
    }
    print(json.dumps(figures), flush=True)


def run_worker(path: Path, args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--path", str(path), "--model", args.model,
           "--chunk-size", str(args.chunk_size)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"worker failed ({mode}, {path}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["file_mb"] = round(path.stat().st_size / 2**20, 1)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="real data to repeat (.h5mu with rna + atac)")
    p.add_argument("--model", default="mouse-cortex-snareseq")
    p.add_argument("--cells", type=int, default=200_000, help="at least this many cells in the big file")
    p.add_argument(
        "--compare-cells",
        default="50000",
        help="comma-separated sizes also embedded both ways, chunked and in memory ('' or 0: none)",
    )
    p.add_argument("--chunk-size", type=int, default=10_000)
    p.add_argument(
        "--workdir", default="/tmp/scclip_big_embed", help="scratch folder (outside the repository)"
    )
    p.add_argument("--keep", action="store_true", help="keep the built files")
    p.add_argument("--worker", choices=["chunked", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.path, args.model, args.worker, args.chunk_size)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    runs = [(args.cells, "chunked")]
    for n in (int(c) for c in str(args.compare_cells).split(",") if c.strip() and int(c) > 0):
        runs += [r for r in ((n, "chunked"), (n, "memory")) if r not in runs]
    built: dict[int, Path] = {}
    results = []
    for n, mode in runs:
        if n not in built:
            t0 = time.perf_counter()
            path = work / f"snare_x{n}.h5mu"
            cells = build(Path(args.data), path, n)
            built[n] = path
            print(f"built {path} ({cells:,} cells, {path.stat().st_size / 2**20:.0f} MB) in "
                  f"{time.perf_counter() - t0:.0f} s; peak RSS of this process so far {peak_rss_mb()[1]:.0f} MB",
                  flush=True)  # fmt: skip
        results.append(run_worker(built[n], args, mode))
    (work / "results.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        for path in built.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
