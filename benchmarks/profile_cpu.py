"""Where a CPU training step and an embedding pass spend their time (torch.profiler), against the CPU's matmul rate.

    python benchmarks/profile_cpu.py [--preset paper] [--batch-size 128] [--steps 2] [--embed-cells 512]
        [--skip-empty-patches] [--threads 2] [--data ../shared/data/chen2019_snareseq_dev.h5mu]

Same model, data and step as ``benchmarks/speed.py`` (fp32). After one warm-up step it profiles ``--steps``
training steps and one eval pass over ``--embed-cells`` cells, and prints, per phase, each op family's share of
the self CPU time (matrix products; fused attention; layer norm, GELU, residual adds, dropout; gathers and
scatters; the sparse patch embedding; the optimizer; the rest), the matrix products' FLOP rate, and the rate a
bare ``torch.mm`` reaches at the encoder's own shapes on this CPU: how close the step is to what the CPU can do
in fp32, and so how much any kernel tuning could still give.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"

FAMILIES = {
    "matmul": ("addmm", "aten::mm", "bmm", "linear", "matmul", "baddbmm"),
    "attention": ("scaled_dot_product", "flash_attention", "softmax", "_efficient_attention"),
    "norm / GELU / adds / dropout": (
        "layer_norm",
        "gelu",
        "aten::add",
        "aten::mul",
        "dropout",
        "bernoulli",
        "aten::div",
        "native_layer_norm",
        "aten::sub",
        "aten::neg",
    ),
    "gather / scatter / copies": (
        "index",
        "gather",
        "scatter",
        "copy_",
        "aten::cat",
        "masked",
        "nonzero",
        "clone",
        "contiguous",
        "aten::zeros",
        "fill_",
        "new_zeros",
    ),
    "sparse patch embedding": ("embedding_bag", "searchsorted", "_embedding_bag"),
    "optimizer": ("adamw", "_foreach", "addcdiv", "lerp", "sqrt", "clip_grad", "norm"),
}


def family(name: str) -> str:
    for fam, keys in FAMILIES.items():
        if any(k in name for k in keys):
            return fam
    return "other"


def summarise(prof, label: str, wall: float, top: int = 0) -> None:
    by_fam, flops = defaultdict(float), 0.0
    mm_time, by_op = 0.0, defaultdict(list)
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total / 1e6
        by_fam[family(ev.key)] += t
        by_op[family(ev.key)].append((t, ev.key, ev.count))
        if ev.flops and family(ev.key) == "matmul":
            flops += ev.flops
            mm_time += t
    total = sum(by_fam.values())
    print(f"\n### {label}: wall {wall:.2f} s, profiled self CPU {total:.2f} s (all threads' ops)\n")
    print("| op family | self CPU s | share |" + (f" heaviest {top} ops |" if top else ""))
    print("|---|---|---|" + ("---|" if top else ""))
    for fam, t in sorted(by_fam.items(), key=lambda kv: -kv[1]):
        heaviest = sorted(by_op[fam], reverse=True)[:top]
        ops = "; ".join(f"`{k}` {t:.2f} s ({n} calls)" for t, k, n in heaviest if t > 0)
        print(f"| {fam} | {t:.2f} | {100 * t / total:.0f}% |" + (f" {ops} |" if top else ""))
    if mm_time:
        print(
            f"\nmatrix products: {flops / 1e9:.1f} GFLOP in {mm_time:.2f} s of op time = "
            f"{flops / mm_time / 1e9:.1f} GFLOP/s per op-second"
        )


def mm_rate(shapes, threads: int) -> list[tuple[str, float]]:
    import torch

    torch.set_num_threads(threads)
    out = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        reps, t0 = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        dt = (time.perf_counter() - t0) / reps
        out.append((f"({m} x {k}) @ ({k} x {n})", 2 * m * k * n / dt / 1e9))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--embed-cells", type=int, default=512)
    p.add_argument("--skip-empty-patches", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=0, help="also list the N heaviest ops of each family")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from scclip.api import build_feature_space, prepare_modality
    from scclip.io import read
    from scclip.model import ClipLoss, describe_cpu, encode_csr, get_preset
    from scclip.model.patch import SparseBatch
    from scclip.pretrained import ScclipModel
    from scclip.training import TrainConfig, make_optimizer, step_loss, wrap_model

    torch.set_num_threads(a.threads)
    mdata = read(a.data)
    cfg = get_preset(a.preset, skip_empty_patches=a.skip_empty_patches or None)
    fs, _ = build_feature_space(mdata, "own", n_patches=cfg.n_patches, genome=None)
    model = ScclipModel.create(
        fs, cfg, preprocessing={"rna": {"method": "log1p"}, "atac": {"method": "binary"}}
    )
    Xr, _ = prepare_modality(model, mdata["rna"], "rna")
    Xa, _ = prepare_modality(model, mdata["atac"], "atac")
    dev = torch.device("cpu")
    tcfg = TrainConfig(precision="fp32", structure_weight=0.0)
    net = model.net.train()
    step_net = wrap_model(net, tcfg)
    opt, loss_fn = make_optimizer(net, tcfg), ClipLoss()
    rng = np.random.default_rng(0)

    def step():
        rows = np.sort(rng.choice(Xr.shape[0], a.batch_size, replace=False))
        r, at = SparseBatch.from_csr(Xr[rows]), SparseBatch.from_csr(Xa[rows])
        loss = step_loss(net, step_net, loss_fn, r, at, tcfg, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    print(
        f"{a.preset} preset, batch {a.batch_size}, fp32, {a.threads} threads, skip empty patches "
        f"{cfg.skip_empty_patches}; CPU: {describe_cpu()}"
    )
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        wall = time.perf_counter() - t0
    summarise(prof, f"training, {a.steps} steps of {a.batch_size} cells", wall, a.top)
    net.eval()
    n = a.embed_cells
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        encode_csr(net, "rna", Xr[:n], batch_size=256, device=dev)
        encode_csr(net, "atac", Xa[:n], batch_size=256, device=dev)
        wall = time.perf_counter() - t0
    summarise(prof, f"embedding, {n} cells, both modalities", wall, a.top)
    d, f = cfg.d_model, cfg.d_ff
    rows = a.batch_size * (cfg.n_patches + 1)
    shapes = [(rows, d, 3 * d), (rows, d, f), (rows, f, d), (rows, d, d), (4096, 4096, 4096)]
    print(f"\nbare torch.mm on this CPU ({a.threads} threads), fp32:\n")
    print("| shape | GFLOP/s |")
    print("|---|---|")
    for s, g in mm_rate(shapes, a.threads):
        print(f"| {s} | {g:.1f} |")


if __name__ == "__main__":
    main()
