"""Latency of the Explore page's feature views (issue 17) in Chromium at 1600x1000: recolour both UMAPs by a
gene (typed), the differential table of a box selection, and the genome view (button to track drawn).

Runs the app as it is configured by the environment (``SCCLIP_DEFAULT_MODEL``, ``SCCLIP_DEFAULT_DEMO``,
``SCCLIP_DATA_DIR`` ...), reusing the helpers of ``benchmarks/app_latency.py`` and ``tests/test_browser.py``;
prints median / p95 wall seconds per action and the machine's load.

    python benchmarks/app_views_latency.py --genes Gad1 Slc17a7 Sst Pvalb Vip --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

import app_latency as bench  # noqa: E402
from test_browser import launch_browser, start_app, stop_app, wait_idle  # noqa: E402
from test_browser_views import COLORBAR_JS, TITLE_JS  # noqa: E402


def _recolour(page, gene: str) -> float:
    box = page.get_by_role("textbox", name="Colour both plots by a gene, peak or gene set")
    box.fill(gene)
    t0 = time.perf_counter()
    box.press("Enter")
    for idx in (0, 1):
        page.wait_for_function(COLORBAR_JS, arg=[idx, gene], timeout=300_000, polling=30)
    wall = time.perf_counter() - t0
    wait_idle(page, timeout=300_000)
    return wall


def _differential(page, i: int) -> float:
    t0 = time.perf_counter()
    bench._box(page, i)
    bench._shown(page, "stMarkdownContainer", "Top 25 ", "selected cells")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[class*=\"st-key-diff_table_\"]')).some("
        "(e) => !e.closest('[data-stale=\"true\"]'))",
        timeout=300_000,
    )
    wall = time.perf_counter() - t0
    wait_idle(page, timeout=300_000)
    return wall


def _genome(page) -> float:
    t0 = time.perf_counter()
    page.get_by_role("button", name="Compute genome view").click()
    page.wait_for_function(TITLE_JS, arg="What makes the ", timeout=600_000, polling=50)
    wall = time.perf_counter() - t0
    wait_idle(page, timeout=300_000)
    return wall


def run(genes: list[str], repeats: int) -> dict:
    raw: dict[str, list[float]] = {"recolour_by_gene": [], "differential_table": [], "genome_view": []}
    proc, url = start_app(dict(os.environ))
    bench.SERVER_PID[:] = [proc.pid]
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            opened = bench._open_explore(page, url)
            for i in range(repeats):
                raw["recolour_by_gene"].append(_recolour(page, genes[i % len(genes)]))
                raw["differential_table"].append(_differential(page, i + 1))
                raw["genome_view"].append(_genome(page))
            browser.close()
    finally:
        stop_app(proc)
    return {"open": opened, **{k: bench.stats(v) for k, v in raw.items()}, "raw": raw,
            "load": os.getloadavg(), "cpus": os.cpu_count()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", nargs="+", default=["Crisp4", "Hs6st1", "Mrps9", "Rpe", "Rufy4"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res = run(args.genes, args.repeats)
    load = ", ".join(f"{x:.2f}" for x in res["load"])
    print(f"Explore feature views, {args.repeats} actions each (load average {load} on {res['cpus']} CPUs)")
    print(f"  open: {res['open']}")
    for key in ("recolour_by_gene", "differential_table", "genome_view"):
        print(f"  {key}: {res[key]}")
    print(json.dumps(res["raw"]))


if __name__ == "__main__":
    main()
