"""UMAP (umap-learn, directly) of a joint RNA+ATAC embedding: wall time for 20k and 100k points.

    python benchmarks/umap_speed.py [--sizes 20000,100000] [--model pretrained-name-or-folder]
        [--data ../shared/data/chen2019_snareseq_dev.h5mu] [--n-neighbors 15] [--metric cosine]

The joint embedding is the data's RNA and ATAC cells embedded by a model (``--model``; without one, a
freshly initialised default-preset model, which has the same shape and sparsity of output) and stacked; it is
repeated with small Gaussian jitter up to each size (the real data has 2 x 8,685 points). Prints a markdown
table: points | dims | seconds | threads. Set ``NUMBA_NUM_THREADS`` to change the thread count.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def joint_embedding(data: str, model: str | None) -> np.ndarray:
    from scclip.api import build_feature_space, prepare_modality
    from scclip.io import read
    from scclip.model import encode_csr, get_preset
    from scclip.pretrained import ScclipModel, load_pretrained

    mdata = read(data)
    if model:
        m = load_pretrained(model)
    else:
        cfg = get_preset("default")
        fs, _ = build_feature_space(mdata, "own", n_patches=cfg.n_patches, genome=None)
        m = ScclipModel.create(
            fs, cfg, preprocessing={"rna": {"method": "log1p"}, "atac": {"method": "binary"}}
        )
    parts = [encode_csr(m.net, mod, prepare_modality(m, mdata[mod], mod)[0]) for mod in ("rna", "atac")]
    return np.concatenate(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20000,100000")
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--metric", default="cosine")
    a = p.parse_args()
    import umap

    Z = joint_embedding(a.data, a.model)
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        X = Z[np.arange(n) % len(Z)] + rng.normal(0, 0.01, (n, Z.shape[1])).astype(np.float32)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = umap.UMAP(n_neighbors=a.n_neighbors, metric=a.metric, random_state=None).fit_transform(X)
        rows.append((n, X.shape[1], time.perf_counter() - t))
        assert xy.shape == (n, 2) and np.isfinite(xy).all()
        print(f"{n} points: {rows[-1][2]:.1f} s", flush=True)
    threads = os.environ.get("NUMBA_NUM_THREADS", str(os.cpu_count()))
    print(
        f"\numap-learn {umap.__version__}, n_neighbors={a.n_neighbors}, metric={a.metric}, threads={threads}\n"
    )
    print("| points | dims | seconds |")
    print("|---|---|---|")
    for n, dims, sec in rows:
        print(f"| {n:,} | {dims} | {sec:.1f} |")


if __name__ == "__main__":
    main()
