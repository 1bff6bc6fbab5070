"""Training and embedding throughput and peak memory on the real SNARE-seq data (CPU or GPU).

    python benchmarks/speed.py [--data ../shared/data/chen2019_snareseq_dev.h5mu] [--presets default,paper]
        [--batch-size 256] [--steps 8] [--device auto]

Prints one markdown table: preset | train cells/s | embed cells/s (both modalities) | peak RSS. Each preset runs in
a fresh subprocess so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def measure(data: str, preset: str, batch_size: int, steps: int, device: str) -> dict:
    import numpy as np
    import torch

    import scclip
    from scclip.api import build_feature_space, prepare_modality
    from scclip.io import read
    from scclip.model import ClipLoss, get_preset
    from scclip.model.patch import SparseBatch
    from scclip.pretrained import ScclipModel
    from scclip.training import TrainConfig, autocast, encode_csr, make_optimizer, resolve_device

    mdata = read(data)
    cfg = get_preset(preset)
    fs, _ = build_feature_space(mdata, "own", n_patches=cfg.n_patches, genome=None)
    model = ScclipModel.create(fs, cfg, preprocessing={"rna": {"method": "log1p"}, "atac": {"method": "binary"}})
    Xr, _ = prepare_modality(model, mdata["rna"], "rna")
    Xa, _ = prepare_modality(model, mdata["atac"], "atac")
    dev = resolve_device(device)
    net = model.net.to(dev).train()
    opt, loss_fn = make_optimizer(net, TrainConfig()), ClipLoss()
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps + 2):  # two warm-up steps
        rows = np.sort(rng.choice(Xr.shape[0], batch_size, replace=False))
        t = time.perf_counter()
        r, a = SparseBatch.from_csr(Xr[rows], device=dev), SparseBatch.from_csr(Xa[rows], device=dev)
        with autocast(dev):
            loss = loss_fn(*net(r, a))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t)
    n_embed = min(Xr.shape[0], 4096)
    t = time.perf_counter()
    encode_csr(net, "rna", Xr[:n_embed], batch_size=1024, device=dev)
    encode_csr(net, "atac", Xa[:n_embed], batch_size=1024, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_embed = time.perf_counter() - t
    return {
        "preset": preset, "device": str(dev), "batch_size": batch_size, "threads": torch.get_num_threads(),
        "train_cells_per_s": batch_size * len(times) / sum(times),
        "embed_cells_per_s": n_embed / t_embed,  # a cell = both modalities
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "scclip": scclip.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--presets", default="default,paper")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.data, a.one, a.batch_size, a.steps, a.device)))
        return
    rows = []
    for preset in a.presets.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", preset, "--data", a.data, "--batch-size",
                              str(a.batch_size), "--steps", str(a.steps), "--device", a.device],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| preset | device | batch | params (M) | train cells/s | embed cells/s | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['device']} | {r['batch_size']} | {r['params_m']:.1f} | {r['train_cells_per_s']:.1f} "
              f"| {r['embed_cells_per_s']:.1f} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
