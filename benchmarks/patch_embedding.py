"""Sparse patch embedding vs the dense reference (pad, reshape, matmul), CPU: time, peak memory, equal output.

    python benchmarks/patch_embedding.py [--features 500000] [--density 0.004] [--batch 256] [--d-model 128]
        [--patches 128] [--modes shared,per_patch] [--repeats 3]

Both paths start from the same CSR batch and end with the tokens (B, P, d). Each (mode, path) runs in a fresh
subprocess so that its peak resident memory is its own; ``work RSS`` is the peak minus the RSS just before the
first call (module weights and the CSR batch excluded). Prints one markdown table and the max |difference|.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _rss_gb(field: str = "VmRSS") -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident memory of this process (not inherited across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024 / 1e9


def measure(mode: str, path: str, a: argparse.Namespace) -> dict:
    import numpy as np
    import scipy.sparse as sp
    import torch

    from scclip.model.patch import PatchEmbedding, SparseBatch

    torch.manual_seed(0)
    F, P = a.features, a.patches
    ps = -(-F // P)
    i = np.arange(F)
    emb = PatchEmbedding(i // ps, i % ps, n_patches=P, patch_size=ps, d_model=a.d_model, mode=mode).eval()
    X = sp.load_npz(a.out_prefix + "X.npz")  # made once by the parent, so its making is not in the peak

    def run():
        with torch.no_grad():
            if path == "sparse":
                return emb(SparseBatch.from_csr(X))
            return emb.dense_reference(torch.from_numpy(X.toarray()))

    before = _rss_gb()
    times, cpu = [], []
    for _ in range(a.repeats):
        t, c = time.perf_counter(), time.process_time()
        out = run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = _rss_gb("VmHWM")
    np.save(a.out_prefix + f"{mode}_{path}.npy", out.numpy())
    return {
        "mode": mode,
        "path": path,
        "seconds": min(times),
        "cpu_seconds": min(cpu),
        "peak_rss_gb": peak,
        "work_rss_gb": peak - before,
        "nnz": int(X.nnz),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=int, default=500_000)
    p.add_argument("--density", type=float, default=0.004)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--patches", type=int, default=128)
    p.add_argument("--modes", default="shared,per_patch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-prefix", default="/tmp/scclip_patch_bench_")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        mode, path = a.one.split(":")
        print(json.dumps(measure(mode, path, a)))
        return
    import numpy as np
    import scipy.sparse as sp

    X = sp.random(a.batch, a.features, density=a.density, format="csr", random_state=0, dtype=np.float32)
    sp.save_npz(a.out_prefix + "X.npz", X, compressed=False)
    rows = []
    args = [str(v) for k, v in vars(a).items() if k != "one" for v in (f"--{k.replace('_', '-')}", v)]
    for mode in a.modes.split(","):
        for path in ("sparse", "dense"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", f"{mode}:{path}", *args],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"F={a.features:,} density={a.density} batch={a.batch} d_model={a.d_model} patches={a.patches} "
        f"nnz={rows[0]['nnz']:,} threads={rows[0]['threads']}\n"
    )
    print(
        f"| mode | path | wall (s, best of {a.repeats}) | CPU (s) | peak RSS (GB) | working RSS (GB) "
        "| speed-up wall / CPU | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in a.modes.split(","):
        s, d = (next(r for r in rows if r["mode"] == mode and r["path"] == q) for q in ("sparse", "dense"))
        diff = float(
            np.abs(
                np.load(a.out_prefix + f"{mode}_sparse.npy") - np.load(a.out_prefix + f"{mode}_dense.npy")
            ).max()
        )
        for r in (s, d):
            speed = "1x"
            if r is s:
                speed = f"{d['seconds'] / s['seconds']:.0f}x / {d['cpu_seconds'] / s['cpu_seconds']:.0f}x"
            print(
                f"| {mode} | {r['path']} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} | {r['peak_rss_gb']:.2f} "
                f"| {r['work_rss_gb']:.2f} | {speed} | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
