"""App latency in headless Chromium: start-up to a usable Explore page, recolouring, and a click's matches.

    python benchmarks/app_latency.py startup            # the real default (needs pretrained/ or --model)
    python benchmarks/app_latency.py interact --cells 10000 100000

``startup`` times ``streamlit run app.py`` until the Explore page shows its UMAPs and metrics, twice: with an
empty cache (embedding + UMAP computed) and again with the cache filled (a second start of the app).
``interact`` builds a dataset of N paired cells (the seeded simulator's 600 cells, resampled and tiled with new
barcodes), embeds it once with a tiny model and fills the app's cache; the cached 2-D layout is a PCA of the
embedding instead of a UMAP, because the once-per-dataset UMAP time is not what is measured here. It then times,
in the browser, switching the colour column and clicking a cell until its matches table is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_browser import PICK_POINT_JS, launch_browser, start_app, wait_idle  # noqa: E402


def _tiny_model(root: Path) -> Path:
    import scclip
    from scclip.datasets import synthetic_multiome

    scclip.train(
        synthetic_multiome(n_cells=600, seed=0),
        out_dir=root / "run",
        model_config=scclip.get_preset("tiny"),
        train_config=scclip.TrainConfig(epochs=3),
    )
    dst = root / "pretrained" / "bench-tiny"
    shutil.copytree(root / "run" / "model", dst)
    return dst


def _tiled(n_cells: int, seed: int = 0):
    import mudata as md
    import scipy.sparse as sp

    from scclip.datasets import synthetic_multiome

    base = synthetic_multiome(n_cells=600, seed=0)
    rng = np.random.default_rng(seed)
    reps = int(np.ceil(n_cells / base.n_obs))
    mods = {}
    for m in ("rna", "atac"):
        a = base[m]
        blocks = []
        for _ in range(reps):
            X = a.X.copy().tocsr()
            X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.float32)
            X.eliminate_zeros()
            blocks.append(X)
        X = sp.vstack(blocks).tocsr()[:n_cells]
        obs = a.obs.iloc[np.arange(n_cells) % a.n_obs].copy()
        obs.index = [f"bc{i:07d}" for i in range(n_cells)]
        import anndata as ad

        mods[m] = ad.AnnData(X, obs=obs, var=a.var.copy())
    out = md.MuData(mods)
    out.uns["genome"] = "mm10"
    return out


def _fill_cache(model_dir: Path, mdata, cache: Path) -> None:
    """Embed once and write a PCA layout where the app looks for its UMAP."""
    os.environ["SCCLIP_CACHE_DIR"] = str(cache)
    import scclip
    from scclip import explore

    model = scclip.load_pretrained(model_dir)
    fp = explore.model_fingerprint(model_dir)
    dfp = explore.dataset_fingerprint(mdata)
    emb, _ = explore.embed_cached(model, mdata, model_fp=fp, data_fp=dfp)
    joint = explore.joint_from_embedded(emb)
    Z = joint.Z - joint.Z.mean(0)
    _, _, vt = np.linalg.svd(Z[:: max(1, len(Z) // 20000)], full_matrices=False)
    coords = (Z @ vt[:2].T).astype(np.float32)
    coords += np.random.default_rng(0).normal(scale=0.02 * coords.std(), size=coords.shape).astype(np.float32)
    import hashlib

    key = f"{fp}-{dfp}"
    h = hashlib.blake2b(np.ascontiguousarray(joint.Z).tobytes(), digest_size=8).hexdigest()
    np.savez(explore.cache_file("umap", key, h), umap=coords)


def _open_explore(page, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot >> nth=1", timeout=900_000)
    page.get_by_text("Embedding quality").wait_for(timeout=900_000)
    wait_idle(page, timeout=900_000)
    return time.perf_counter() - t0


def _recolour(page, column: str) -> float:
    page.get_by_role("combobox", name="Colour the right-hand plot by").click()
    option = page.get_by_role("option", name=column, exact=True)
    t0 = time.perf_counter()
    option.click()
    page.locator(".gtitle", has_text=f"Coloured by {column}").wait_for(timeout=300_000)
    wait_idle(page, timeout=300_000)
    return time.perf_counter() - t0


def _click(page) -> tuple[float, int]:
    pt = page.evaluate(PICK_POINT_JS, 1)
    t0 = time.perf_counter()
    page.mouse.click(pt["x"], pt["y"])
    page.locator('[data-testid="stTable"]').first.wait_for(timeout=300_000)
    wait_idle(page, timeout=300_000)
    return time.perf_counter() - t0, pt["n"]


def interact(n_list: list[int], repeats: int = 3) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from scclip.io import write_h5mu

    results = []
    with tempfile.TemporaryDirectory(prefix="scclip_bench_") as tmp:
        root = Path(tmp)
        model_dir = _tiny_model(root)
        for n in n_list:
            data = root / f"cells_{n}.h5mu"
            t = time.perf_counter()
            mdata = _tiled(n)
            write_h5mu(mdata, data)
            _fill_cache(model_dir, mdata, root / "cache")
            prep = time.perf_counter() - t
            env = {**os.environ, "SCCLIP_PRETRAINED_DIR": str(model_dir.parent), "SCCLIP_CACHE_DIR": str(root / "cache"),
                   "SCCLIP_DEFAULT_MODEL": "bench-tiny", "SCCLIP_DEFAULT_DATA": str(data),
                   "SCCLIP_RUNS_DIR": str(root / "runs")}  # fmt: skip
            proc, url = start_app(env)
            try:
                with sync_playwright() as p:
                    browser = launch_browser(p)
                    page = browser.new_page(viewport={"width": 1440, "height": 1600})
                    load = _open_explore(page, url)
                    recolour = [_recolour(page, c) for c in ["batch", "cell_type"] * repeats]
                    clicks = []
                    for _ in range(repeats):
                        dt, drawn = _click(page)
                        clicks.append(dt)
                    browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=20)
            res = {
                "cells_per_modality": n,
                "points": 2 * n,
                "drawn_per_plot": drawn,
                "prepare_s": round(prep, 1),
                "open_explore_s": round(load, 2),
                "recolour_s": [round(x, 2) for x in recolour],
                "click_to_matches_s": [round(x, 2) for x in clicks],
            }
            print(json.dumps(res), flush=True)
            results.append(res)
    return results


def startup(model: str | None) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with tempfile.TemporaryDirectory(prefix="scclip_bench_") as tmp:
        env = {
            **os.environ,
            "SCCLIP_CACHE_DIR": str(Path(tmp) / "cache"),
            "SCCLIP_RUNS_DIR": str(Path(tmp) / "runs"),
        }
        if model:
            env["SCCLIP_DEFAULT_MODEL"] = model
        for label in ("cold cache", "warm cache (second start)"):
            t0 = time.perf_counter()
            proc, url = start_app(env)
            try:
                with sync_playwright() as p:
                    browser = launch_browser(p)
                    page = browser.new_page(viewport={"width": 1440, "height": 1600})
                    _open_explore(page, url)
                    total = time.perf_counter() - t0
                    header = page.locator(
                        '[data-testid="stMarkdownContainer"]', has_text="RNA +"
                    ).first.inner_text()
                    browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=20)
            res = {"start": label, "seconds_to_usable_explore": round(total, 1), "page": header.strip()[:160]}
            print(json.dumps(res), flush=True)
            out.append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("startup")
    s.add_argument("--model", help="model name or folder (default: the app's default)")
    i = sub.add_parser("interact")
    i.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    i.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "startup":
        startup(args.model)
    else:
        interact(args.cells, args.repeats)


if __name__ == "__main__":
    main()
