"""The Explore page's feature views (issue 17) in Chromium at 1600x1000: type a gene and see the colour bar,
box-select and see the differential table (a click on a row recolours the plots), compute the genome view and see
its track; nothing raised. Screenshots go to tests/artifacts/. Synthetic demo data, the tiny model of test_browser.py."""

from __future__ import annotations

import os
import sys

import pytest
from test_browser import (
    ARTIFACTS,
    REPO,
    app_fixture,
    launch_browser,
    playwright_api,
    start_app,
    stop_app,
    wait_idle,
)
from test_io import write_10x_h5

from scclip import explore

__all__ = ["app_fixture", "playwright_api"]  # the fixtures, imported from tests/test_browser.py

#: JS: the title of plot ``idx`` and whether its cells trace shows a colour bar whose title holds ``text``.
COLORBAR_JS = """
([idx, text]) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  if (!gd || !gd._fullData || gd.closest('[data-stale="true"]')) return false;
  const m = gd._fullData[0].marker;
  return !!m.showscale && String(m.colorbar.title.text).includes(text)
    && gd.querySelectorAll('.colorbar').length === 1;
}
"""
TITLE_JS = """
(text) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(
  (e) => e.textContent.startsWith(text) && !e.closest('[data-stale="true"]'))
"""

READ_ENABLED_JS = """() => Array.from(document.querySelectorAll('button')).some(
  (b) => b.innerText.includes('Read uploaded files') && !b.disabled)"""


def _type_gene(page, gene: str, plots: tuple[int, ...] = (0, 1)) -> None:
    """Colour the UMAPs by ``gene`` and wait for the colour bar of each plot in ``plots``."""
    box = page.get_by_role("textbox", name="Colour both plots by a gene, peak or gene set")
    box.fill(gene)
    box.press("Enter")
    for idx in plots:
        page.wait_for_function(COLORBAR_JS, arg=[idx, gene], timeout=300_000, polling=50)
    wait_idle(page, timeout=300_000)


def _drive_views(page, url: str | None, gene: str, prefix: str) -> None:
    """Open Explore at ``url`` (None: the page is on Explore already), colour by ``gene``, box-select and read
    the differential table, click its first row, compute the genome view; screenshots
    ``{prefix}_colour_by_gene.png``, ``_differential.png``, ``_genome.png``."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import app_latency as bench

    if url is not None:
        bench._open_explore(page, url)
    else:
        page.wait_for_function(bench.PLOTS_JS, timeout=600_000, polling=50)
        bench._shown(page, "stMarkdownContainer", "Embedding quality", timeout=600_000)
        wait_idle(page, timeout=600_000)
    _type_gene(page, gene)
    page.wait_for_function(TITLE_JS, arg=f"{gene}: RNA measured, ATAC imputed", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / f"{prefix}_colour_by_gene.png"))
    bench._box(page, 1)
    table = page.locator('[class*="st-key-diff_table_"] [data-testid="stDataFrame"]').first
    bench._shown(page, "stMarkdownContainer", "Top 25 genes", "selected cells")
    table.scroll_into_view_if_needed()
    wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / f"{prefix}_differential.png"), full_page=True)
    # a click on the first row's selection cell colours the plots by that gene
    bb = table.bounding_box()
    page.mouse.click(bb["x"] + 18, bb["y"] + 35 + 17)
    page.wait_for_function(
        "(g) => !!document.querySelector('input[aria-label^=\"Colour both plots\"]')"
        " && document.querySelector('input[aria-label^=\"Colour both plots\"]').value !== g",
        arg=gene,
        timeout=120_000,
    )
    picked = page.get_by_role("textbox", name="Colour both plots by a gene, peak or gene set").input_value()
    page.wait_for_function(COLORBAR_JS, arg=[1, picked], timeout=300_000, polling=50)
    wait_idle(page)
    page.get_by_role("button", name="Compute genome view").click()
    page.wait_for_function(TITLE_JS, arg="What makes the ", timeout=300_000, polling=100)
    wait_idle(page)
    page.locator(".js-plotly-plot", has_text="What makes the").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"{prefix}_genome.png"))
    assert page.locator(".js-plotly-plot", has_text="RNA patches").count() >= 1
    assert not page.locator('[data-testid="stException"]').count()


def _views_on_app(playwright_api, env: dict, gene: str, prefix: str) -> None:
    """Start the app with ``env`` and run :func:`_drive_views` in Chromium at 1600x1000."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(env)
    try:
        with playwright_api() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            _drive_views(page, url, gene, prefix)
            browser.close()
    finally:
        stop_app(proc)


def test_colour_by_gene_differential_table_and_genome_view(playwright_api, app_fixture):
    _views_on_app(playwright_api, app_fixture[1], "Crisp4", "views")


@pytest.mark.realdata
def test_the_three_views_on_the_default_model_and_real_data(playwright_api, snare_h5mu, tmp_path):
    """The app as shipped (the held-out SNARE-seq model and the real demo libraries, a cold private cache):
    Gad1, a box's markers, the genome view."""
    if not (REPO / "pretrained" / explore.SNARE_DEMO_MODEL).is_dir():
        pytest.skip(f"pretrained/{explore.SNARE_DEMO_MODEL} is absent")
    env = {
        **os.environ,
        "SCCLIP_CACHE_DIR": str(tmp_path / "cache"),
        "SCCLIP_RUNS_DIR": str(tmp_path / "runs"),
    }
    for k in ("SCCLIP_PRETRAINED_DIR", "SCCLIP_DEFAULT_MODEL", "SCCLIP_DEFAULT_DEMO", "SCCLIP_DEFAULT_DATA"):
        env.pop(k, None)
    _views_on_app(playwright_api, env, "Gad1", "views_real")


def _snare_as_arc_h5(h5mu, path, *, n_cells: int, rna_only: bool = False) -> None:
    """``n_cells`` real cells of the held-out libraries 09I/09J written as a Cell Ranger ARC
    ``filtered_feature_bc_matrix.h5`` (mm10; gene ids and intervals from the bundled mm10 table, where known);
    ``rna_only``: Gene Expression features only, as a 10x RNA file."""
    import gzip

    import mudata as md
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    mdata = md.read_h5mu(h5mu)
    rna, atac = mdata["rna"], mdata["atac"]
    held = np.flatnonzero(rna.obs["batch"].astype(str).isin(["09I", "09J"]).to_numpy())
    cells = np.sort(np.random.default_rng(0).choice(held, n_cells, replace=False))
    with gzip.open(REPO / "scclip" / "data" / "mm10_genes.tsv.gz", "rt") as f:
        table = pd.read_csv(f, sep="\t").drop_duplicates("gene_name").set_index("gene_name")
    genes = table.reindex(rna.var_names)
    ids = [i if isinstance(i, str) and i else n for i, n in zip(genes["gene_id"], rna.var_names, strict=True)]
    gene_iv = [f"{c}:{int(a)}-{int(b)}" if isinstance(c, str) else "NA"
               for c, a, b in zip(genes["chrom"], genes["start"], genes["end"], strict=True)]  # fmt: skip
    peaks = [
        f"{c}:{a}-{b}" for c, a, b in zip(atac.var["chrom"], atac.var["start"], atac.var["end"], strict=True)
    ]
    blocks = [sp.csr_matrix(rna.X[cells])]
    ids, names, types, iv = list(ids), list(rna.var_names), ["Gene Expression"] * rna.n_vars, gene_iv
    if not rna_only:
        blocks.append(sp.csr_matrix(atac.X[cells]))
        ids, names, types, iv = ids + peaks, names + peaks, types + ["Peaks"] * len(peaks), iv + peaks
    X = sp.hstack(blocks).tocsr()
    X.data = np.rint(X.data)
    barcodes = [f"{b}-1" for b in rna.obs_names[cells]]
    write_10x_h5(path, X, barcodes, ids, names, types, iv, genome="mm10")


def _upload(page, url: str, path) -> None:
    """Upload ``path`` on the Data page, read it, wait for the coverage report, then open Explore by its link."""
    page.goto(f"{url}/data")
    page.get_by_text("Use this demo dataset").wait_for(timeout=300_000)
    wait_idle(page, timeout=300_000)
    page.get_by_role("tab", name="Upload files").click()
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.wait_for_function(READ_ENABLED_JS, timeout=120_000, polling=100)  # uploaded, the rerun is done
    wait_idle(page)
    # the upload's rerun keeps its tab open (untracked st.tabs went back to "Demo datasets", hiding the file)
    assert page.get_by_role("tab", name="Upload files").get_attribute("aria-selected") == "true"
    page.get_by_role("button", name="Read uploaded files").click()
    # the summary of the uploaded file (the default data's summary was shown before)
    page.get_by_role("heading", name=path.name, exact=True).wait_for(timeout=300_000)
    page.get_by_text("Feature coverage against model").first.wait_for(timeout=300_000)
    wait_idle(page, timeout=300_000)
    assert not page.locator('[data-testid="stException"]').count()
    page.get_by_role("link", name="Explore", exact=True).click()


@pytest.mark.realdata
def test_the_three_views_on_uploaded_10x_files(playwright_api, snare_h5mu, tmp_path):
    """The default model on real cells uploaded as 10x files: a Cell Ranger ARC ``.h5`` (both modalities) gets
    the three views; an RNA-only 10x ``.h5`` gets colour by gene, the markers of a category and the genome view,
    with one line saying what needs both modalities."""
    if not (REPO / "pretrained" / explore.SNARE_DEMO_MODEL).is_dir():
        pytest.skip(f"pretrained/{explore.SNARE_DEMO_MODEL} is absent")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    arc, rna_only = tmp_path / "filtered_feature_bc_matrix.h5", tmp_path / "rna_only.h5"
    _snare_as_arc_h5(snare_h5mu, arc, n_cells=600)
    _snare_as_arc_h5(snare_h5mu, rna_only, n_cells=400, rna_only=True)
    env = {
        **os.environ,
        "SCCLIP_CACHE_DIR": str(tmp_path / "cache"),
        "SCCLIP_RUNS_DIR": str(tmp_path / "runs"),
    }
    for k in ("SCCLIP_PRETRAINED_DIR", "SCCLIP_DEFAULT_MODEL", "SCCLIP_DEFAULT_DEMO", "SCCLIP_DEFAULT_DATA"):
        env.pop(k, None)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import app_latency as bench

    proc, url = start_app(env)
    try:
        with playwright_api() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            _upload(page, url, arc)
            bench._shown(
                page, "stMarkdownContainer", arc.name, "600 RNA + 600 ATAC", timeout=600_000
            )  # the upload
            _drive_views(page, None, "Gad1", "views_10x")
            page = browser.new_page(viewport={"width": 1600, "height": 1000})  # a second session
            _upload(page, url, rna_only)
            page.get_by_text("has only RNA cells (400)").first.wait_for(timeout=600_000)
            _type_gene(page, "Gad1", plots=(0,))  # the single-modality UMAP
            page.wait_for_function(TITLE_JS, arg="Gad1: measured in RNA cells", timeout=60_000)
            _box_single(page)  # uploaded 10x files carry no annotations: a box is group A
            page.get_by_text("Top 25 genes").first.wait_for(timeout=300_000)
            wait_idle(page)
            page.get_by_role("button", name="Compute genome view").click()
            page.wait_for_function(TITLE_JS, arg="What makes the ", timeout=300_000, polling=100)
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "views_10x_rna_only.png"), full_page=True)
            assert page.locator(".js-plotly-plot", has_text="RNA patches").count() >= 1
            assert not page.locator('[data-testid="stException"]').count()
            browser.close()
    finally:
        stop_app(proc)


def _box_single(page) -> None:
    """Box-select the middle half of the single-modality UMAP (plot 0)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import app_latency as bench

    plot = page.locator(".js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    area = page.evaluate(bench.AREA_JS, 0)
    plot.hover(position={"x": 60, "y": 60})
    plot.locator('[data-title="Box Select"]').click()
    page.mouse.move(area["left"] + 0.25 * area["w"], area["top"] + 0.25 * area["h"])
    page.mouse.down()
    page.mouse.move(area["left"] + 0.75 * area["w"], area["top"] + 0.75 * area["h"], steps=6)
    page.mouse.up()
