"""Side by side with the authors' scCLIP (github.com/jsxlei/scCLIP) on this machine, in fresh processes.

    python benchmarks/vs_original.py --original PATH/TO/scCLIP --python PATH/TO/venv/bin/python \\
        [--data ../shared/data/chen2019_snareseq_dev.h5mu] [--batch-sizes 128,256] [--warmup 3] [--steps 3] \\
        [--embed-cells 2048] [--embed-batch-size 256] [--threads 2] [--ours paper,paper+skip,default,default+skip]

It fetches nothing. ``--original`` is a local checkout of the authors' repository and ``--python`` the
interpreter of a venv holding its ``requirements.txt`` (torch, lightning<2.0, transformers, muon, ...; with
torch 2.13 and Python 3.11 these pins import: ``pip install torch "pytorch-lightning<2.0" "lightning<2.0"
"lightning-cloud==0.5.38" "setuptools<70" "transformers<4.46" scanpy muon einops colorcet leidenalg``); the
original runs there with ``PYTHONPATH=--original`` from inside the checkout, so its ``scclip`` package never
meets this one. Every measurement is its own process, one after the other (never two at once), each with
``--threads`` intra-op threads:

- **original**: its ``MixDataModule`` (multiome, binary ATAC, no peak linking, its 0.9 split, DataLoader with
  ``--workers`` workers), its ``CLIPModel`` built as ``train_clip.py`` builds it (``get_model_config("small")``:
  6 layers, 8 heads, width 256, FFN 512, 128 patches, projection 128, dropout 0.1), its ``training_step``,
  AdamW as its ``configure_optimizers`` (lr 1.5e-4, weight decay 0.05) and its gradient clipping (5), fp32;
  embedding = ``_get_rna_features`` + ``_get_atac_features`` in eval mode without gradients.
- **ours**: ``benchmarks/speed.py --one PRESET`` (the same training step as ``fit``, fp32), ``+skip`` adds
  ``--skip-empty-patches``.

Training cells/s = batch x timed steps / their wall time (``--warmup`` steps first: the original page-faults
for its first steps); a step includes building the batch. Embedding cells/s = cells / wall time for both
modalities of ``--embed-cells`` cells in batches of ``--embed-batch-size``. Peak RSS = the process's ``VmHWM``
after training (the target compares training memory) and at the end. The ratios are ours / original at the
same batch size; the CPU's capability (AVX2 / AVX-512 / AMX, native bf16) and the load average before each
run are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def vm_hwm_gb() -> float:
    """This process's peak resident memory (``VmHWM``) in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _original_model(dm, torch):
    """``CLIPModel`` as the original ``train_clip.py`` builds it (paper preset: ``small``, 128 patches)."""
    from scclip.clip import CLIPModel
    from scclip.config import get_model_config
    from scclip.vit import ViTConfig

    args = argparse.Namespace(
        projection_dim=128, logit_scale=1.0, requires_grad=False, normalize=True, lr=1.5e-4,
        weight_decay=0.05, warmup_steps=2000, num_patches=128, data_dir="bench",
    )  # fmt: skip
    args.peaks = dm.dataset.mdata.mod["atac"].var
    args.genes = dm.dataset.mdata.mod["rna"].var
    configs = {
        m: ViTConfig(
            modality=m,
            num_patches=128,
            feature_size=dm.dataset.mdata.mod[m].shape[1],
            attention_probs_dropout_prob=0.1,
            hidden_dropout_prob=0.1,
            **get_model_config("small"),
        )
        for m in ("atac", "rna")
    }
    return CLIPModel(args, atac_config=configs["atac"], rna_config=configs["rna"])


def original_worker(a: dict) -> dict:
    """Runs in the original's venv, inside its checkout: one training + embedding measurement."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from scclip.data import MixDataModule

    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    dm = MixDataModule(
        data_dir=a["data"], modality="multiome", batch_size=a["batch_size"], num_workers=a["workers"],
        linked=None, split=0.9, n_top_genes=None, binary=True, use_seq=False, mask=None,
    )  # fmt: skip
    model = _original_model(dm, torch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05)
    loader, times = iter(dm.train_dataloader()), []
    for i in range(a["warmup"] + a["steps"]):
        t0 = time.perf_counter()
        loss = model.training_step(next(loader), i)  # their step (loss + matching metrics)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        print(f"original step {i}: {times[-1]:.2f} s, loss {loss.item():.3f}", file=sys.stderr)
    train_rss = vm_hwm_gb()
    model.eval()
    n = min(a["embed_cells"], len(dm.dataset))
    sub = DataLoader(Subset(dm.dataset, range(n)), batch_size=a["embed_batch_size"], num_workers=a["workers"])
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in sub:
            model._get_rna_features(batch["rna"])
            model._get_atac_features(batch["atac"])
    t_embed = time.perf_counter() - t0
    timed = times[a["warmup"] :]
    return {
        "train_cells_per_s": a["batch_size"] * len(timed) / sum(timed),
        "embed_cells_per_s": n / t_embed,
        "train_peak_rss_gb": train_rss,
        "peak_rss_gb": vm_hwm_gb(),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "threads": torch.get_num_threads(),
    }


def _run(cmd: list[str], *, cwd: Path, env: dict) -> dict:
    """One fresh process; its last stdout line is the JSON result."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed ({' '.join(cmd[:4])} ...):\n{out.stderr[-4000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r, "load_before": load, "process_s": time.perf_counter() - t0}


def run_original(a: argparse.Namespace, batch: int) -> dict:
    args = {
        k: getattr(a, k) for k in ("data", "warmup", "steps", "embed_cells", "embed_batch_size", "threads")
    }
    args.update(data=str(a.data), batch_size=batch, workers=a.workers)
    env = {**os.environ, "PYTHONPATH": str(a.original), "OMP_NUM_THREADS": str(a.threads)}
    cmd = [a.python, str(Path(__file__).resolve()), "--original-worker", json.dumps(args)]
    return _run(cmd, cwd=Path(a.original), env=env)


def run_ours(a: argparse.Namespace, spec: str, batch: int) -> dict:
    preset, _, skip = spec.partition("+")
    cmd = [sys.executable, str(HERE / "speed.py"), "--one", preset, "--data", str(a.data)]
    cmd += ["--batch-size", str(batch), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    cmd += ["--embed-cells", str(a.embed_cells), "--embed-batch-size", str(a.embed_batch_size)]
    cmd += ["--threads", str(a.threads), "--precision", "fp32", "--device", "cpu"]
    cmd += ["--skip-empty-patches"] * (skip == "skip")
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    return _run(cmd, cwd=HERE.parent, env=env)


def _ratio(x: float, y: float | None) -> str:
    return f"{x / y:.2f}x" if y else "n/a"


def report(rows: list[dict], cpu: str) -> None:
    """The markdown table (ratios against the original at the same batch) and the CPU line."""
    orig = {r["batch"]: r for r in rows if r["system"] == "original"}
    print(f"CPU capability: {cpu}; threads {rows[0]['threads']}")
    print(
        "| system | batch | train cells/s | x original | embed cells/s | x original | train peak RSS (GB) "
        "| / original | peak RSS (GB) | load avg before |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = orig.get(r["batch"], {})
        rss = r.get("train_peak_rss_gb", r["peak_rss_gb"])
        rss_ratio = f"{rss / o['train_peak_rss_gb']:.0%}" if o else "n/a"
        print(
            f"| {r['system']} | {r['batch']} | {r['train_cells_per_s']:.1f} "
            f"| {_ratio(r['train_cells_per_s'], o.get('train_cells_per_s'))} | {r['embed_cells_per_s']:.1f} "
            f"| {_ratio(r['embed_cells_per_s'], o.get('embed_cells_per_s'))} | {rss:.2f} | {rss_ratio} "
            f"| {r['peak_rss_gb']:.2f} | {r['load_before']:.1f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", type=Path, help="local checkout of github.com/jsxlei/scCLIP")
    p.add_argument("--python", help="python of a venv with the original's requirements")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--batch-sizes", default="128,256")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--embed-cells", type=int, default=2048)
    p.add_argument("--embed-batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="the original's DataLoader workers (0: in-process)")
    p.add_argument(
        "--ours", default="paper,paper+skip,default,default+skip", help="presets, +skip = skipping"
    )
    p.add_argument("--skip-original", action="store_true", help="only our rows (no venv at hand)")
    p.add_argument("--original-worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.original_worker:
        print(json.dumps(original_worker(json.loads(a.original_worker))))
        return
    if not a.skip_original and not (a.original and a.python):
        p.error("--original and --python are required (or --skip-original)")
    if not a.skip_original and not (Path(a.original) / "scclip" / "clip.py").is_file():
        p.error(f"--original {a.original} is not a checkout of the original scCLIP (no scclip/clip.py)")
    sys.path.insert(0, str(HERE.parent))
    from scclip.model import describe_cpu

    rows = []
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        if not a.skip_original:
            rows.append({"system": "original", "batch": batch, **run_original(a, batch)})
            print(f"original, batch {batch}: {rows[-1]}", file=sys.stderr)
        for spec in a.ours.split(","):
            rows.append({"system": f"ours {spec}", "batch": batch, **run_ours(a, spec, batch)})
            print(f"ours {spec}, batch {batch}: {rows[-1]}", file=sys.stderr)
    report(rows, describe_cpu())


if __name__ == "__main__":
    main()
