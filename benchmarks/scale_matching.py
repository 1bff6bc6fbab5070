"""Scale check: top-10 cross-modal matching and FOSCTTM for 100,000 x 100,000 cells on the CPU.

Builds clustered, paired 128-d embeddings (RNA = cluster centre + noise, ATAC = RNA + noise) and times either

- ``--mode fused`` (default): :func:`scclip.match.match_paired`, one block-wise pass per direction giving the
  top-10 partners, the true partner's rank and FOSCTTM together; or
- ``--mode separate``: ``topk_partners`` in both directions, then ``foscttm`` (two more passes),

printing wall time and the process's peak resident memory (``resource.getrusage``). Target on 2 cores: under
2 minutes and under 4 GB in total.

    python benchmarks/scale_matching.py [--n 100000] [--dim 128] [--mode fused|separate] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scclip.match import match_paired, topk_partners
from scclip.metrics import foscttm


def peak_gb() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_pairs(n: int, dim: int, *, n_clusters: int = 50, noise: float = 3.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=gen) * 1.5
    label = torch.randint(0, n_clusters, (n,), generator=gen)
    rna = centres[label] + torch.randn(n, dim, generator=gen)
    atac = rna + noise * torch.randn(n, dim, generator=gen)
    return rna.numpy(), atac.numpy()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--chunk-size", type=int, default=None, help="query rows per block (default: ~128 MB blocks)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=["fused", "separate"], default="fused")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    t_all = time.perf_counter()
    rna, atac = make_pairs(args.n, args.dim)
    print(
        f"{args.n:,} x {args.n:,} cells, d={args.dim}, {args.threads} threads, chunk_size={args.chunk_size}, mode={args.mode}"
    )
    print(f"data: {rna.nbytes / 1e6:.0f} MB per modality, peak RSS {peak_gb():.2f} GB")

    steps = {}
    if args.mode == "fused":
        t0 = time.perf_counter()
        res = match_paired(rna, atac, k=args.k, chunk_size=args.chunk_size)
        steps[f"match_paired: top-{args.k} + ranks + FOSCTTM, both directions"] = time.perf_counter() - t0
        idx_r, idx_a, fos = res["rna_to_atac"]["indices"], res["atac_to_rna"]["indices"], res["foscttm"]
    else:
        t0 = time.perf_counter()
        idx_r, _ = topk_partners(rna, atac, k=args.k, chunk_size=args.chunk_size)
        steps[f"top-{args.k} RNA -> ATAC"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx_a, _ = topk_partners(atac, rna, k=args.k, chunk_size=args.chunk_size)
        steps[f"top-{args.k} ATAC -> RNA"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fos = foscttm(rna, atac, chunk_size=args.chunk_size)
        steps["FOSCTTM (both directions)"] = time.perf_counter() - t0
    total = time.perf_counter() - t_all

    truth = np.arange(args.n)
    print()
    print("| step | wall time |")
    print("|---|---|")
    for name, dt in steps.items():
        print(f"| {name} | {dt:.1f} s |")
    print(f"| total (incl. data generation) | {total:.1f} s |")
    print()
    print(f"peak RSS: {peak_gb():.2f} GB")
    print(
        f"FOSCTTM {fos['mean']:.4f} (RNA->ATAC {fos['rna_to_atac']:.4f}, ATAC->RNA {fos['atac_to_rna']:.4f}); "
        f"top-1 {np.mean(idx_r[:, 0] == truth):.4f} / {np.mean(idx_a[:, 0] == truth):.4f}; "
        f"top-{args.k} {np.mean((idx_r == truth[:, None]).any(1)):.4f} / {np.mean((idx_a == truth[:, None]).any(1)):.4f}"
    )
    ok = total < 120 and peak_gb() < 4
    print(f"target (< 120 s, < 4 GB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
