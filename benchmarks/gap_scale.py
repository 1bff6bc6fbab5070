"""Gap closing at scale: the exact neighbour search vs the inverted file (``search="ivf"``), time, memory, recall.

    python benchmarks/gap_scale.py real [--model pretrained/mouse-cortex-snareseq-heldout-09IJ] [--data DEV.h5mu]
    python benchmarks/gap_scale.py scale [--cells 20000,100000,377000] [--exact-max 100000] [--dim 128]

``real``: the SNARE-seq development file embedded by a released model (both modalities, no gap closing), then
``close_gap`` with ``search="exact"`` and ``search="ivf"`` (its defaults, forced although ``auto`` would be exact
at this size): recall@15 of the cross-modal neighbours, median cosine between the two joint embeddings, and the
joint embedding's FOSCTTM, cell-type kNN accuracy across modalities and modality mixing, for both.

``scale``: paired synthetic embeddings shaped like a model's output (``--dim``-dimensional unit vectors, 20 cell
types each on a 10-dimensional manifold, the second modality shifted by a constant offset: a modality gap), at
each ``--cells``; each measurement is a fresh process (wall time, peak RSS by ``os.wait4``). The exact search
runs up to ``--exact-max`` cells; recall@15 of the inverted file is measured against the exact neighbours of a
seeded sample of 2,000 query cells (cheap at any size), as is the joint embedding's cosine to the exact one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"
SAMPLE = 2000
K = 15


def synthetic(n: int, d: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired unit embeddings: 20 types on 10-dimensional manifolds, the second modality offset (a gap)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)).astype(np.float32)
    centres *= 2 / np.linalg.norm(centres, axis=1, keepdims=True)
    basis = (rng.standard_normal((20, 10, d)) * 0.4).astype(np.float32)
    offset = rng.standard_normal(d).astype(np.float32)
    offset *= 0.8 / np.linalg.norm(offset)
    out = []
    for shift in (0.0, 1.0):
        rng_m = np.random.default_rng(seed + 1)  # same types and latents in both modalities
        t = rng_m.integers(20, size=n)
        x = np.empty((n, d), dtype=np.float32)
        for i in range(0, n, 50000):
            tt = t[i : i + 50000]
            lat = rng_m.standard_normal((len(tt), 10)).astype(np.float32)
            x[i : i + 50000] = centres[tt] + np.einsum("nr,nrd->nd", lat, basis[tt]) + shift * offset
        x += 0.05 * rng.standard_normal((n, d)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out[0], out[1]


def sample_truth(rna, atac, sample):
    """Exact top-15 ATAC neighbours of the sampled RNA cells and their exact joint embedding."""
    import torch

    from scclip.metrics import topk_chunked

    idx, _ = topk_chunked(torch.from_numpy(rna[sample]), torch.from_numpy(atac), K)
    joint = rna[sample] + atac[idx.numpy()].mean(1)
    return idx.numpy(), joint / np.linalg.norm(joint, axis=1, keepdims=True)


def one(a) -> None:
    """A single measurement (in its own process): close_gap of ``--cells`` synthetic cells with ``--search``."""
    from scclip.gap import close_gap

    rna, atac = synthetic(a.cells, a.dim)
    t0 = time.perf_counter()
    jr, _, info = close_gap(rna, atac, search=a.search)
    wall = time.perf_counter() - t0
    rec = {"cells": a.cells, "search": info["search"], "close_gap_s": wall}
    if a.search == "ivf":
        from scclip.match import topk_partners

        sample = np.random.default_rng(0).choice(a.cells, size=min(SAMPLE, a.cells), replace=False)
        true_idx, true_joint = sample_truth(rna, atac, sample)
        approx_idx, _ = topk_partners(rna[sample], atac, k=K, search="exact")  # sanity: equals the truth
        assert np.array_equal(np.sort(approx_idx, 1), np.sort(true_idx, 1))
        ivf_idx, _ = topk_partners(rna, atac, k=K, search="ivf")
        rec["recall_at_15"] = float(
            np.mean([len(np.intersect1d(x, y)) / K for x, y in zip(true_idx, ivf_idx[sample], strict=False)])
        )
        rec["joint_cosine_median"] = float(np.median((jr[sample] * true_joint).sum(1)))
        rec["joint_cosine_p01"] = float(np.quantile((jr[sample] * true_joint).sum(1), 0.01))
    print("RESULT " + json.dumps(rec), flush=True)


def scale(a) -> None:
    rows = []
    for n in [int(x) for x in a.cells.split(",")]:
        for search in ("exact", "ivf"):
            if search == "exact" and n > a.exact_max:
                continue
            cmd = [
                sys.executable,
                __file__,
                "one",
                "--cells",
                str(n),
                "--search",
                search,
                "--dim",
                str(a.dim),
            ]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
            out = p.stdout.read()
            _, status, usage = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"{cmd} failed")
            rec = json.loads(out.split("RESULT ", 1)[1])
            rec["peak_rss_gb"] = usage.ru_maxrss / 2**20
            rows.append(rec)
            print(json.dumps(rec), flush=True)
    print(
        "\n| cells per modality | search | close_gap s | peak RSS GB | recall@15 | joint cosine median (1st pct) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        rc = f"{r['recall_at_15']:.3f}" if "recall_at_15" in r else "1 (exact)"
        jc = f"{r['joint_cosine_median']:.4f} ({r['joint_cosine_p01']:.4f})" if "recall_at_15" in r else "-"
        print(
            f"| {r['cells']:,} | {r['search']} | {r['close_gap_s']:.1f} | {r['peak_rss_gb']:.2f} | {rc} | {jc} |"
        )


def real(a) -> None:
    import mudata as md

    import scclip
    from scclip.gap import close_gap
    from scclip.match import topk_partners
    from scclip.metrics import foscttm, label_transfer_accuracy, modality_mixing

    mdata = md.read_h5mu(a.data)
    model = scclip.load_pretrained(a.model)
    emb = scclip.embed(model, mdata, close_gap=False, device="cpu")
    rna, atac = emb["rna"].obsm["X_scclip"], emb["atac"].obsm["X_scclip"]
    labels = mdata["rna"].obs["cell_type"].astype(str).to_numpy()
    ie, _ = topk_partners(rna, atac, k=K, search="exact")
    ii, _ = topk_partners(rna, atac, k=K, search="ivf")
    recall = float(np.mean([len(np.intersect1d(x, y)) / K for x, y in zip(ie, ii, strict=False)]))
    print(
        f"{len(rna):,} cells, model {a.model}; recall@15 of the inverted file (RNA -> ATAC): {recall:.3f}\n"
    )
    print("| search | FOSCTTM (joint) | cell type kNN, RNA -> ATAC | modality mixing | close_gap s |")
    print("|---|---|---|---|---|")
    joints = {}
    for search in ("exact", "ivf"):
        t0 = time.perf_counter()
        jr, ja, _ = close_gap(rna, atac, search=search)
        wall = time.perf_counter() - t0
        joints[search] = jr
        f = foscttm(jr, ja)["mean"]
        acc = label_transfer_accuracy(ja, labels, jr, labels)
        mix = modality_mixing(jr, ja)
        print(f"| {search} | {f:.4f} | {acc:.3f} | {mix:.3f} | {wall:.2f} |")
    cos = (joints["exact"] * joints["ivf"]).sum(1)
    print(
        f"\njoint RNA embeddings, exact vs ivf: median cosine {np.median(cos):.5f}, 1st percentile {np.quantile(cos, 0.01):.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("real")
    r.add_argument("--model", default=str(REPO / "pretrained" / "mouse-cortex-snareseq-heldout-09IJ"))
    r.add_argument("--data", type=Path, default=DATA)
    s = sub.add_parser("scale")
    s.add_argument("--cells", default="20000,100000,377000")
    s.add_argument("--exact-max", type=int, default=100000)
    s.add_argument("--dim", type=int, default=128)
    o = sub.add_parser("one")
    o.add_argument("--cells", type=int, required=True)
    o.add_argument("--search", required=True)
    o.add_argument("--dim", type=int, default=128)
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    {"real": real, "scale": scale, "one": one}[a.cmd](a)


if __name__ == "__main__":
    main()
