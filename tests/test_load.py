"""Many sessions at once (issue 19, item 2): 8 concurrent headless browser sessions on one app server.

One Chromium, 8 contexts (each its own Streamlit session), all on loopback, all driven at once (Playwright's async
API): each opens Explore on the default dataset, changes the colour, clicks two cells and box-selects a group;
session 0 then uploads a file. Every session must render, keep its own selection and data, and never show
another's. The server's event log (``$SCCLIP_EVENT_LOG``, :mod:`scclip.explore.events`) proves that the model,
the demo dataset, the embedding and the UMAP were loaded or computed once, not once per session.

Printed, never asserted: the server's peak RSS and the median / p95 click -> matches latency under this load.
Bounded: 8 sessions, every wait has a timeout, the whole run is cut at 900 s (a loaded machine; about a minute on an idle 2-core one). Skips cleanly without chromium.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import numpy as np
import pytest
import test_browser
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, start_app, stop_app

from scclip.datasets import synthetic_multiome
from scclip.io import write_h5mu

#: the browser tests' fixtures: their app (tiny model, synthetic demo) and the clean skip without chromium
app_fixture = test_browser.app_fixture
playwright_api = test_browser.playwright_api
N_SESSIONS = 8
TIMEOUT_MS = 480_000
DEMO_LABEL = "Synthetic multiome (simulated, paired)"

#: JS: the most isolated drawn cell among drawing positions ``start .. start+width`` of plot ``idx``.
PICK_JS = """
([idx, start, width]) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, tr = gd._fullData[0];
  const r = gd.getBoundingClientRect(), n = tr.x.length;
  const px = [], py = [];
  for (let i = 0; i < n; i++) { px.push(r.left + xa._offset + xa.l2p(tr.x[i])); py.push(r.top + ya._offset + ya.l2p(tr.y[i])); }
  let best = -1, bestd = -1;
  for (let i = start; i < Math.min(n, start + width); i++) {
    if (px[i] < r.left + xa._offset + 30 || py[i] < r.top + ya._offset + 30) continue;
    if (px[i] > r.left + xa._offset + xa._length - 160 || py[i] > r.top + ya._offset + ya._length - 20) continue;
    let d = 1e18;
    for (let j = 0; j < n; j++) { if (j !== i) d = Math.min(d, (px[i] - px[j]) ** 2 + (py[i] - py[j]) ** 2); }
    if (d > bestd) { bestd = d; best = i; }
  }
  return {x: px[best], y: py[best], cell: Number(tr.customdata[best]), n: n,
          barcode: String(tr.text[best]).split(' · ')[0]};
}
"""
AREA_JS = """
(idx) => { const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return {left: r.left + xa._offset, top: r.top + ya._offset, w: xa._length, h: ya._length}; }
"""
PLOTS_JS = """
() => { const gds = document.querySelectorAll('.js-plotly-plot');
  return gds.length >= 2 && Array.from(gds).slice(0, 2).every((gd) => gd._fullData && gd._fullData.length
    && gd._fullData[0].x && gd._fullData[0].x.length > 0 && !gd.closest('[data-stale="true"]')); }
"""
#: JS: the text of the first current element of ``selector`` holding every string of ``parts``, else false.
FIRST_FRESH_JS = """
([selector, parts]) => { const e = Array.from(document.querySelectorAll(selector)).find(
  (e) => !e.closest('[data-stale="true"]') && parts.every((p) => e.innerText.includes(p)));
  return e ? e.innerText : false; }
"""
#: JS: the current markdown text and h4 headings once they hold ``needle`` (and a group heading with
#: ``want_group``), else false; ``force``: return them anyway.
SNAPSHOT_JS = """
([needle, wantGroup, force]) => {
  const fresh = (sel) => Array.from(document.querySelectorAll(sel))
    .filter((e) => !e.closest('[data-stale="true"]')).map((e) => e.innerText);
  const texts = fresh('[data-testid="stMarkdownContainer"]'), heads = fresh('h4');
  const ok = texts.some((t) => t.includes(needle)) && (!wantGroup || heads.some((t) => t.startsWith('Selected group')));
  return ok || force ? {after: texts.join('\\n'), heads: heads} : false;
}
"""
TEXTS_JS = """(testid) => Array.from(document.querySelectorAll(`[data-testid="${testid}"]`))
  .filter((e) => !e.closest('[data-stale="true"]')).map((e) => e.innerText)"""


async def _idle(page) -> None:
    await page.wait_for_timeout(300)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS, polling=200
    )


async def _shown(page, testid: str, *parts: str) -> str:
    """Wait for a current element of ``testid`` holding every one of ``parts``; returns its text."""
    return await _first_fresh(page, f'[data-testid="{testid}"]', *parts)


async def _texts(page, testid: str = "stMarkdownContainer") -> str:
    return "\n".join(await page.evaluate(TEXTS_JS, testid))


async def _explore(page, url: str) -> None:
    await page.goto(url, wait_until="commit")  # Explore is the default page (its URL is the root)
    await page.wait_for_function(PLOTS_JS, timeout=TIMEOUT_MS, polling=200)
    await _shown(page, "stMarkdownContainer", "Embedding quality")
    await _idle(page)


async def _recolour(page, column: str) -> None:
    await page.get_by_role("combobox", name="Colour the right-hand plot by").click()
    await page.get_by_role("option", name=column, exact=True).click()
    await page.wait_for_function(
        """(col) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(
             (e) => e.textContent === `Coloured by ${col}` && !e.closest('[data-stale="true"]'))""",
        arg=column, timeout=TIMEOUT_MS, polling=200,
    )  # fmt: skip
    await _idle(page)


async def _click(page, start: int, width: int) -> tuple[dict, float]:
    """Click a cell on the right-hand UMAP; (the cell, seconds until its matches are shown)."""
    pt = await page.evaluate(PICK_JS, [1, start, width])
    t0 = time.perf_counter()
    await page.mouse.click(pt["x"], pt["y"])
    await _shown(page, "stMarkdownContainer", "Selected cell", pt["barcode"])
    await _shown(page, "stMarkdownContainer", f"partners of {pt['barcode']}")
    await _shown(page, "stTable", "similarity")
    dt = time.perf_counter() - t0
    await _idle(page)
    return pt, dt


async def _first_fresh(page, selector: str, *parts: str) -> str:
    """The text of the first current (not stale) element of ``selector`` holding every one of ``parts``,
    read in the same evaluation that finds it (a rerun starting between a wait and a read cannot empty it)."""
    handle = await page.wait_for_function(
        FIRST_FRESH_JS, arg=[selector, list(parts)], timeout=TIMEOUT_MS, polling=200
    )
    return await handle.json_value()


async def _box(page, i: int) -> str:
    """Box-select a random rectangle of the right-hand UMAP; returns the 'Selected group: N cells' heading."""
    area = await page.evaluate(AREA_JS, 1)
    plot = page.locator(".js-plotly-plot").nth(1)
    await plot.hover(position={"x": 60, "y": 60})
    await plot.locator('[data-title="Box Select"]').click()
    rng = np.random.default_rng(i)
    fx0, fy0 = rng.uniform(0.1, 0.35, size=2)
    fx1, fy1 = fx0 + rng.uniform(0.3, 0.5), fy0 + rng.uniform(0.3, 0.5)
    await page.mouse.move(area["left"] + fx0 * area["w"], area["top"] + fy0 * area["h"])
    await page.mouse.down()
    await page.mouse.move(area["left"] + fx1 * area["w"], area["top"] + fy1 * area["h"], steps=6)
    await page.mouse.up()
    await _first_fresh(page, "h4", "Selected group")
    await _idle(page)
    return await _first_fresh(page, "h4", "Selected group")  # read again once idle: the final heading


async def _settled(page, i: int, needle: str, want_group: bool) -> tuple[str, list[str]]:
    """The page's current (not stale) markdown text and h4 headings, read in one go once the text holds
    ``needle`` and, with ``want_group``, a 'Selected group' heading is drawn. Bounded. On a loaded server the panels
    were seen still stale (or not yet drawn) after the idle check had passed, so the page is read when it holds
    what it should, not at a fixed moment. Not settled within the wait: a screenshot, and the page as it is (the assertions on it then fail)."""
    arg = [needle, want_group]
    try:
        handle = await page.wait_for_function(SNAPSHOT_JS, arg=[*arg, False], timeout=240_000, polling=200)
        snap = await handle.json_value()
    except Exception:  # playwright's TimeoutError: the assertions on the snapshot report it
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"load_session_{i}_unsettled.png"), full_page=True)
        snap = await page.evaluate(SNAPSHOT_JS, [*arg, True])
    return snap["after"], snap["heads"]


async def _upload(page, url: str, path: Path) -> None:
    await page.get_by_role("link", name="Data", exact=True).click()
    await _idle(page)
    await page.get_by_role("tab", name="Upload files").click()
    await page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    await _idle(page)
    await page.get_by_role("button", name="Read uploaded files").click()
    await _shown(page, "stMarkdownContainer", path.name)
    await _idle(page)


async def _session(browser, url: str, i: int, upload: Path, uploaded: asyncio.Event, done: list) -> dict:
    ctx = await browser.new_context(viewport={"width": 1440, "height": 1800})
    page = await ctx.new_page()
    t0 = time.perf_counter()
    try:
        await _explore(page, url)
        print(f"session {i}: Explore rendered after {time.perf_counter() - t0:.1f} s", flush=True)
        await _recolour(page, "batch" if i % 2 == 0 else "modality")
        latencies = []
        n = await page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[1]._fullData[0].x.length")
        width = n // (2 * N_SESSIONS)
        for k in range(2):  # disjoint windows of the drawing order: every session clicks its own cells
            pt, dt = await _click(page, (2 * i + k) * width, width)
            latencies.append(dt)
        text = await _shown(page, "stMarkdownContainer", "Selected cell", pt["barcode"])
        header = next((t for t in text.splitlines() if t.startswith("Selected cell")), text)
        group = await _box(page, i)
        if i == 0:
            await _upload(page, url, upload)
            uploaded.set()
        await uploaded.wait()  # every check below runs after session 0's upload
        done.append(i)
        while len(done) < N_SESSIONS:
            await asyncio.sleep(0.2)
        # a rerun in every session (to Data and back), then: its own data, its own cell and group only
        if i != 0:
            await page.get_by_role("link", name="Data", exact=True).click()
            await _idle(page)
        data_text = await _texts(page)
        sidebar = await page.locator('[data-testid="stSidebar"]').inner_text()
        await page.get_by_role("link", name="Explore", exact=True).click()
        await page.wait_for_function(PLOTS_JS, timeout=TIMEOUT_MS, polling=200)
        await _idle(page)
        # its own cell and group (session 0: its upload cleared its selection, so the matches panel's hint)
        needle = "Click a cell on either plot" if i == 0 else f"Selected cell {pt['barcode']} "
        after, heads = await _settled(page, i, needle, want_group=i != 0)
        exceptions = await page.locator('[data-testid="stException"]').count()
        return {"i": i, "pt": pt, "header": header, "group": group, "latencies": latencies,
                "data_text": data_text, "sidebar": sidebar, "after": after, "heads": heads,
                "exceptions": exceptions}  # fmt: skip
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"load_session_{i}.png"))
        raise
    finally:
        print(f"session {i}: ended after {time.perf_counter() - t0:.1f} s", flush=True)
        await ctx.close()


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _run(url: str, upload: Path) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        uploaded, done = asyncio.Event(), []
        try:
            tasks = [_session(browser, url, i, upload, uploaded, done) for i in range(N_SESSIONS)]
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=900)
        finally:
            await browser.close()


@pytest.mark.usefixtures("playwright_api")
def test_eight_sessions_at_once_render_stay_private_and_share_one_model(request, tmp_path):
    _, env = request.getfixturevalue("app_fixture")
    log = tmp_path / "events.log"
    upload = write_h5mu(synthetic_multiome(120, seed=7), tmp_path / "private_upload_s0.h5mu")
    proc, url = start_app({**env, "SCCLIP_EVENT_LOG": str(log)})
    try:
        rss_start = _rss_kb(proc.pid, "VmRSS")
        t0 = time.perf_counter()
        results = asyncio.run(_run(url, upload))
        wall = time.perf_counter() - t0
        peak = _rss_kb(proc.pid, "VmHWM")  # the server's peak resident set (it has no child processes here)
    finally:
        stop_app(proc)
    lat = np.array([x for r in results for x in r["latencies"]])
    print(
        f"\n{N_SESSIONS} concurrent sessions in {wall:.0f} s: server RSS {rss_start / 1024:.0f} MB at start, "
        f"peak {peak / 1024:.0f} MB; click -> matches latency median {np.median(lat):.2f} s, "
        f"p95 {np.percentile(lat, 95):.2f} s over {lat.size} clicks"
    )
    events = collections.Counter()
    keys = collections.defaultdict(collections.Counter)
    for line in log.read_text().splitlines():
        event, key, _pid = line.split("\t")
        events[event] += 1
        keys[event][key] += 1
    print(f"server events: {dict(events)}")

    # every session rendered, without an exception
    assert sorted(r["i"] for r in results) == list(range(N_SESSIONS))
    assert all(r["exceptions"] == 0 for r in results)
    cells = [(r["pt"]["barcode"], r["header"].split("(")[1].split(")")[0]) for r in results]
    assert len(set(cells)) == N_SESSIONS, cells  # distinct selections, so a leak would show
    for r, (barcode, mod) in zip(results, cells, strict=True):
        assert r["header"].startswith(f"Selected cell {barcode} ({mod})"), r["header"]
        assert r["group"].startswith("Selected group:") and r["group"].endswith("cells")
        others = {c for c in cells if c != (barcode, mod)}
        if r["i"] == 0:  # the uploader: its upload is its data, its old selection was reset with it
            assert "private_upload_s0.h5mu" in r["sidebar"]
            assert not any(f"Selected cell {b} ({m})" in r["after"] for b, m in cells)
            continue
        assert "private_upload_s0.h5mu" not in r["sidebar"] + r["data_text"] + r["after"]
        assert f"Data · {DEMO_LABEL}" in r["sidebar"].replace("\n", " ")
        assert f"Selected cell {barcode} ({mod})" in r["after"]  # its own cell, after session 0's upload
        assert not any(f"Selected cell {b} ({m})" in r["after"] for b, m in others)
        assert r["group"] in r["heads"]  # its own group, still selected
    # shared models and caches: loaded or computed once, not once per session
    assert sum(keys["model_load"].values()) == 1, keys["model_load"]
    assert keys["demo_load"] == {"synthetic": 1}, keys["demo_load"]
    demo_fp, n = keys["embed_hit"].most_common(1)[0]
    assert keys["embed_compute"][demo_fp] == 1 and n == N_SESSIONS - 1, (
        keys["embed_compute"],
        keys["embed_hit"],
    )
    assert all(v == 1 for v in keys["embed_compute"].values())  # the upload's embedding: once too
    assert sum(keys["umap_compute"].values()) == 2 and sum(keys["umap_hit"].values()) == N_SESSIONS - 1
