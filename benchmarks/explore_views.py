"""Latency of the Explore page's feature views (issue 17) on the CPU.

- recolour by a gene / peak / gene activity at ``--cells`` cells (half RNA, half ATAC; random sparse counts and
  a random unit embedding): the one-off set-up (CSC copies, top-k partners) and then each recolour;
- differential features of a 10,000-cell selection (scanpy Wilcoxon), RNA and ATAC;
- patch attribution of a 1,000-cell group with the shipped SNARE-seq model on ../shared (skipped when absent).

    python benchmarks/explore_views.py [--cells 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from scclip import explore
from scclip.datasets import synthetic_multiome

REPO = Path(__file__).resolve().parents[1]
SNARE = REPO.parent / "shared" / "data" / "chen2019_snareseq_dev.h5mu"


def big_dataset(n_cells: int, seed: int = 0) -> tuple[md.MuData, explore.Joint]:
    """``n_cells // 2`` paired cells per modality on the synthetic data's genes and peaks (random counts)."""
    rng = np.random.default_rng(seed)
    base = synthetic_multiome(n_cells=50, n_genes=2000, seed=seed)
    half = n_cells // 2
    mods = {}
    for m, density in (("rna", 0.08), ("atac", 0.03)):
        v = base[m].var
        X = sp.random(half, v.shape[0], density=density, format="csr", random_state=rng, dtype=np.float32)
        X.data = np.ceil(X.data * 4)
        obs = pd.DataFrame(
            {"cell_type": pd.Categorical(rng.integers(0, 8, half).astype(str))},
            index=[f"c{i}" for i in range(half)],
        )
        mods[m] = ad.AnnData(X, obs=obs, var=v.copy())
    mdata = md.MuData(mods)
    mdata.uns["genome"] = "mm10"
    Z = rng.normal(size=(2 * half, 32)).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    obs = pd.concat([mods["rna"].obs, mods["atac"].obs], ignore_index=True)
    obs.insert(0, "modality", np.repeat(["RNA", "ATAC"], half))
    obs.insert(0, "barcode", [f"c{i}" for i in range(half)] * 2)
    partner = np.r_[np.arange(half) + half, np.arange(half)]
    return mdata, explore.Joint(Z, obs, half, True, partner)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def recolour(n_cells: int) -> None:
    mdata, joint = big_dataset(n_cells)
    store = explore.FeatureStore(mdata, joint, k=15)
    gene, peak = mdata["rna"].var_names[10], mdata["atac"].var_names[10]
    _, t_setup = timed(
        lambda: (store.csc("rna"), store.csc("atac"), store.partners("rna"), store.partners("atac"))
    )
    print(
        f"recolour set-up at {n_cells:,} cells (CSC copies + top-15 partners, once per dataset): {t_setup:.1f} s"
    )
    for q in (gene, peak, f"gene activity of {gene}", mdata["rna"].var_names[11]):
        _, t = timed(store.colors, q)
        print(f"  recolour by {q!r}: {t * 1000:.0f} ms (first time)", end="")
        _, t = timed(store.colors, q)
        print(f", {t * 1000:.0f} ms (cached column)")
    return store


def markers(store) -> None:
    cells = np.arange(10_000)
    for m in ("rna", "atac"):
        sel = cells if m == "rna" else cells + store.offset["atac"]
        df, t = timed(explore.differential_features, store, sel, modality=m)
        print(f"differential features, 10,000 selected {m.upper()} cells vs {df.attrs['n_b']:,}: {t:.1f} s")


def attribution() -> None:
    if not SNARE.exists():
        print(f"patch attribution: skipped ({SNARE} absent)")
        return
    import scclip

    mdata = md.read_h5mu(SNARE)
    model = scclip.load_pretrained(REPO / "pretrained" / "mouse-cortex-snareseq")
    store = explore.FeatureStore(mdata)
    types = mdata["rna"].obs["cell_type"].to_numpy()
    group = np.flatnonzero(types == "L2/3")[:1000]  # 1,000 cells of one type, paired: RNA and ATAC
    df, t = timed(explore.patch_attribution, model, store, group)
    sums = ", ".join(
        f"{m.upper()} {c['attribution_sum']:.4f} vs {c['target_difference']:.4f}"
        for m, c in df.attrs["check"].items()
    )
    print(
        f"patch attribution, 1,000 L2/3 cells (defaults: steps {32}, budget {explore.ATTRIBUTION_BUDGET}, "
        f"reference {explore.MAX_REFERENCE_CELLS}): {t:.1f} s [{df.attrs['note']}]; completeness {sums}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-attribution", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    store = recolour(args.cells)
    markers(store)
    if not args.skip_attribution:
        attribution()


if __name__ == "__main__":
    main()
