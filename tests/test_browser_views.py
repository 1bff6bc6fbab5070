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


def _type_gene(page, gene: str) -> None:
    box = page.get_by_role("textbox", name="Colour both plots by a gene, peak or gene set")
    box.fill(gene)
    box.press("Enter")
    for idx in (0, 1):
        page.wait_for_function(COLORBAR_JS, arg=[idx, gene], timeout=300_000, polling=50)
    wait_idle(page, timeout=300_000)


def _drive_views(page, url: str, gene: str, prefix: str) -> None:
    """Colour by ``gene``, box-select and read the differential table, click its first row, compute the genome
    view; screenshots ``{prefix}_colour_by_gene.png``, ``_differential.png``, ``_genome.png``."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import app_latency as bench

    bench._open_explore(page, url)
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
