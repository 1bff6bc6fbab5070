"""Training and embedding throughput and peak memory on the real SNARE-seq data (CPU or GPU).

    python benchmarks/speed.py [--data ../shared/data/chen2019_snareseq_dev.h5mu] [--presets default,paper]
        [--batch-size 256] [--steps 8] [--warmup 2] [--embed-cells 10000] [--device auto]
        [--precision auto|fp32|bf16] [--checkpointing] [--compile] [--threads N] [--structure-weight W]
        [--skip-empty-patches]

Prints one markdown table: preset | train cells/s | share of step time spent building batches (CSR row slicing
and ``SparseBatch`` construction, i.e. data loading) | embed cells/s (a cell = both modalities, eval mode, no
grad) | peak RSS. In brackets: threads x cells per process CPU-second, an estimate of the throughput of a
quiet machine when other jobs share the cores. Each preset runs in a fresh subprocess under ``/usr/bin/time -v``
(when present) so that the peak resident memory is the whole process's, measured by the OS. On CUDA it also
prints model FLOP utilisation against ``--peak-tflops`` (H100 bf16 dense: 990). ``--skip-empty-patches`` sets
``ModelConfig.skip_empty_patches`` (only [CLS] and the non-empty patches' tokens enter the Transformer); the
printed GFLOP figures are those of the dense sequence either way (the work the model stands for), and the
share of all-zero patches is printed next to them. The CPU's capability (torch's AVX2 / AVX512 / AMX, native bf16
or not) is printed with every table.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def model_flops_per_cell(cfg, n_patches: dict[str, int], nnz: dict[str, float]) -> float:
    """Forward FLOPs of one paired cell (both encoders): Transformer matmuls + attention + patch embedding."""
    d, f = cfg.d_model, cfg.d_ff
    total = 0.0
    for m, p in n_patches.items():
        t = p + 1
        per_layer = 2 * t * d * (3 * d + d + 2 * f) + 4 * t * t * d
        total += cfg.n_layers * per_layer + 2 * nnz[m] * d + 2 * d * cfg.proj_dim
    return total


def measure(a: argparse.Namespace, preset: str) -> dict:
    import numpy as np
    import torch

    import scclip
    from scclip.api import build_feature_space, prepare_modality
    from scclip.io import read
    from scclip.model import (
        ClipLoss,
        describe_cpu,
        encode_csr,
        get_preset,
        resolve_device,
        reuse_freed_memory,
    )
    from scclip.model.patch import SparseBatch
    from scclip.model.structure import resolve_structure_weight
    from scclip.pretrained import ScclipModel
    from scclip.training import TrainConfig, make_optimizer, step_loss, wrap_model

    if a.threads:
        torch.set_num_threads(a.threads)
    mdata = read(a.data)
    cfg = get_preset(preset, skip_empty_patches=a.skip_empty_patches or None)
    fs, _ = build_feature_space(mdata, "own", n_patches=cfg.n_patches, genome=None)
    model = ScclipModel.create(
        fs, cfg, preprocessing={"rna": {"method": "log1p"}, "atac": {"method": "binary"}}
    )
    Xr, _ = prepare_modality(model, mdata["rna"], "rna")
    Xa, _ = prepare_modality(model, mdata["atac"], "atac")
    del mdata
    dev = resolve_device(a.device)
    tcfg = TrainConfig(
        precision=a.precision,
        activation_checkpointing=a.checkpointing,
        compile=a.compile,
        # as in fit: resolved (-1 = automatic, on for the default preset's SVD embedding)
        structure_weight=resolve_structure_weight(
            None if a.structure_weight < 0 else a.structure_weight, cfg
        ),
    )
    net = model.net.to(dev).train()
    step_net = wrap_model(net, tcfg)
    opt, loss_fn = make_optimizer(net, tcfg), ClipLoss()
    rng = np.random.default_rng(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t_load, t_step, c_step = [], [], []
    reuse = reuse_freed_memory(dev)  # as fit does (opt-in: SCCLIP_REUSE_FREED_MEMORY=1)
    reuse.__enter__()
    for step in range(a.steps + a.warmup):
        rows = np.sort(rng.choice(Xr.shape[0], a.batch_size, replace=False))
        t0, c0 = time.perf_counter(), time.process_time()
        r, at = SparseBatch.from_csr(Xr[rows], device=dev), SparseBatch.from_csr(Xa[rows], device=dev)
        t1 = time.perf_counter()
        loss = step_loss(net, step_net, loss_fn, r, at, tcfg, dev)  # as in fit (structure term included)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sync()
        if step >= a.warmup:
            t_load.append(t1 - t0)
            t_step.append(time.perf_counter() - t0)
            c_step.append(time.process_time() - c0)
        print(f"step {step}: {time.perf_counter() - t0:.2f} s, loss {loss.item():.3f}", file=sys.stderr)
    reuse.__exit__(None, None, None)
    train_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # peak after training (GB)
    n_embed = a.embed_cells
    idx = np.arange(n_embed) % Xr.shape[0]  # the data repeated up to n_embed cells
    Er, Ea = Xr[idx], Xa[idx]
    encode_csr(net, "rna", Er[:256], batch_size=256, device=dev, bf16=tcfg.bf16)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    encode_csr(net, "rna", Er, batch_size=a.embed_batch_size, device=dev, bf16=tcfg.bf16)
    encode_csr(net, "atac", Ea, batch_size=a.embed_batch_size, device=dev, bf16=tcfg.bf16)
    sync()
    t_embed, c_embed = time.perf_counter() - t, time.process_time() - c
    nnz = {"rna": Xr.nnz / Xr.shape[0], "atac": Xa.nnz / Xa.shape[0]}
    flops = model_flops_per_cell(cfg, {m: net.encoders[m].embed.n_patches for m in nnz}, nnz)
    train_cps = a.batch_size * len(t_step) / sum(t_step)
    zero = {}
    for m, X in (("rna", Xr), ("atac", Xa)):  # share of (cell, patch) slots without any non-zero
        patch = net.encoders[m].embed.patch.cpu().numpy()
        sub = X[: min(2000, X.shape[0])].tocoo()
        occupied = len(np.unique(sub.row.astype(np.int64) * 100_000 + patch[sub.col]))
        zero[m] = 1 - occupied / (sub.shape[0] * net.encoders[m].embed.n_patches)
    slots = {}  # skipped layout: rows of the slot buffer per real token (the groups' padding), batches of a.batch_size
    if cfg.skip_empty_patches:
        from scclip.model.jagged import Jagged

        for m, X in (("rna", Xr), ("atac", Xa)):
            lays = [
                Jagged.from_keep(net.encoders[m].keep_mask(SparseBatch.from_csr(X[rows], device=dev)))
                for rows in np.array_split(np.arange(min(8 * a.batch_size, X.shape[0])), 8)
            ]
            slots[m] = sum(lay.n_slots for lay in lays) / sum(lay.n_tokens for lay in lays)
    return {
        "preset": preset,
        "device": str(dev),
        "batch_size": a.batch_size,
        "threads": torch.get_num_threads(),
        "precision": a.precision,
        "structure_weight": tcfg.structure_weight,
        "checkpointing": a.checkpointing,
        "skip_empty_patches": cfg.skip_empty_patches,
        "compile": a.compile,
        "train_cells_per_s": train_cps,
        "load_share": sum(t_load) / sum(t_step),
        "step_seconds": sum(t_step) / len(t_step),
        "embed_cells": n_embed,
        "embed_seconds": t_embed,
        "embed_cells_per_s": n_embed / t_embed,
        "gflop_per_cell_fwd": flops / 1e9,
        "train_gflops": 3 * flops * train_cps / 1e9,
        # Process CPU time (all threads): on a machine shared with other jobs, threads x cells per CPU-second
        # estimates the quiet-machine throughput.
        "train_cells_per_cpu_s": a.batch_size * len(c_step) / sum(c_step),
        "embed_cells_per_cpu_s": n_embed / c_embed,
        "embed_gflops": flops * n_embed / t_embed / 1e9,
        "zero_patch_share": zero,
        "slots_per_token": slots,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "train_peak_rss_gb": train_rss,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "scclip": scclip.__version__,
        "cpu": describe_cpu(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--presets", default="default,paper")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--embed-cells", type=int, default=10_000)
    p.add_argument("--embed-batch-size", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    p.add_argument("--compile", action="store_true", help="torch.compile the Transformer blocks")
    p.add_argument(
        "--skip-empty-patches",
        action="store_true",
        help="ModelConfig.skip_empty_patches (default: the preset's)",
    )
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--structure-weight",
        type=float,
        default=-1.0,
        help="-1 (default) = as training: 1 for the SVD embedding",
    )
    p.add_argument("--peak-tflops", type=float, default=990.0, help="accelerator peak for MFU (H100 bf16)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a, a.one)))
        return
    rows = []
    flags = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(a).items()
        if k not in ("one", "presets", "checkpointing", "compile", "skip_empty_patches")
    ]
    flags += ["--checkpointing"] * a.checkpointing + ["--compile"] * a.compile
    flags += ["--skip-empty-patches"] * a.skip_empty_patches
    timer = ["/usr/bin/time", "-v"] if shutil.which("/usr/bin/time") else []
    for preset in a.presets.split(","):
        out = subprocess.run(
            [*timer, sys.executable, __file__, "--one", preset, *flags], capture_output=True, text=True
        )
        if out.returncode:
            sys.exit(f"{preset} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
        r["peak_rss_gb"] = int(m.group(1)) / 1e6 if m else r["peak_rss_gb"]
        r["rss_source"] = "/usr/bin/time -v" if m else "getrusage"
        rows.append(r)
    print(
        "| preset | device | precision | ckpt | skip empty | batch | params (M) | train cells/s (CPU-time est.) | load share "
        "| embed cells/s (CPU-time est.) | 10k-cell embed (s) | peak RSS (GB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['device']} ({r['threads']} thr) | {r['precision']} | {r['checkpointing']} "
            f"| {r['skip_empty_patches']} | {r['batch_size']} | {r['params_m']:.1f} | {r['train_cells_per_s']:.1f} "
            f"({r['train_cells_per_cpu_s'] * r['threads']:.1f}) | {r['load_share']:.1%} "
            f"| {r['embed_cells_per_s']:.1f} ({r['embed_cells_per_cpu_s'] * r['threads']:.1f}) "
            f"| {r['embed_seconds'] * 10_000 / r['embed_cells']:.1f} "
            f"| {r['peak_rss_gb']:.2f} |"
        )
    for r in rows:
        zero = ", ".join(f"{m} {v:.0%}" for m, v in r["zero_patch_share"].items())
        line = (
            f"{r['preset']}: {r['gflop_per_cell_fwd']:.2f} GFLOP/cell forward; train {r['train_gflops']:.0f}, "
            f"embed {r['embed_gflops']:.0f} GFLOP/s achieved; all-zero patches: {zero}"
        )
        if r.get("slots_per_token"):
            pad = ", ".join(f"{m} {v:.3f}" for m, v in r["slots_per_token"].items())
            line += f"; skipped layout slots per real token: {pad}"
        line += f"; CPU capability {r['cpu']}"
        if r["device"].startswith("cuda"):
            line += f"; MFU {r['train_gflops'] / 1e3 / a.peak_tflops:.1%} (peak {a.peak_tflops} TFLOP/s)"
        print(line)


if __name__ == "__main__":
    main()
