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

from test_browser import launch_browser, start_app, stop_app, wait_idle  # noqa: E402


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
    from scclip.explore import cache

    real = cache.compute_umap
    cache.compute_umap = lambda Z, **kw: coords  # the app's own cache entry (checksummed), with this layout
    try:
        explore.umap_cached(joint.Z, key=f"{fp}-{dfp}")
    finally:
        cache.compute_umap = real


#: JS: screen position and customdata of a well-isolated drawn cell of plot ``idx``, among the candidates
#: ``start .. start+400`` of the drawing order (a different cell for each ``start``).
PICK_JS = """
([idx, start]) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, tr = gd._fullData[0];
  const r = gd.getBoundingClientRect();
  const n = tr.x.length, px = new Float64Array(n), py = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    px[i] = r.left + xa._offset + xa.l2p(tr.x[i]);
    py[i] = r.top + ya._offset + ya.l2p(tr.y[i]);
  }
  let best = -1, bestd = -1;
  for (let i = start % n; i < Math.min(n, (start % n) + 400); i++) {
    if (px[i] < r.left + xa._offset + 30 || py[i] < r.top + ya._offset + 30) continue;
    if (px[i] > r.left + xa._offset + xa._length - 160) continue;  // keep clear of the legend
    if (py[i] > Math.min(r.top + ya._offset + ya._length, window.innerHeight) - 20) continue;  // on screen
    let d = 1e18;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const dx = px[i] - px[j], dy = py[i] - py[j];
      d = Math.min(d, dx * dx + dy * dy);
    }
    if (d > bestd) { bestd = d; best = i; }
  }
  return {x: px[best], y: py[best], cell: Number(tr.customdata[best]), n: n,
          barcode: String(tr.text[best]).split(' · ')[0]};
}
"""
#: JS: the plotting area of plot ``idx`` on screen.
AREA_JS = """
(idx) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return {left: r.left + xa._offset, top: r.top + ya._offset, w: xa._length, h: ya._length};
}
"""
#: JS: is there a current (not stale) element of ``testid`` whose text holds every string of ``parts``?
SHOWN_JS = """
([testid, parts]) => Array.from(document.querySelectorAll(`[data-testid="${testid}"]`)).some(
  (e) => !e.closest('[data-stale="true"]') && parts.every((p) => e.innerText.includes(p)))
"""
#: JS: both UMAPs drawn (two plotly charts with their cells) and no script run going on.
PLOTS_JS = """
() => {
  const gds = document.querySelectorAll('.js-plotly-plot');
  return gds.length >= 2 && Array.from(gds).slice(0, 2).every((gd) => gd._fullData && gd._fullData.length
    && gd._fullData[0].x && gd._fullData[0].x.length > 0 && !gd.closest('[data-stale="true"]'));
}
"""
MAIN_TEXT_JS = """() => { const m = document.querySelector('[data-testid="stMain"]');
  return !!m && m.innerText.trim().length > 0; }"""


_TICK = os.sysconf("SC_CLK_TCK")
SERVER_PID: list[int] = []  # the app server being measured (set by _session's caller)


def _cpu() -> tuple[float, float]:
    """CPU seconds used so far by (the app server, everything else this process started: browser, driver)."""
    parent, used = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d.name)] = int(f[1])
        used[int(d.name)] = (int(f[11]) + int(f[12])) / _TICK
    me, server = os.getpid(), SERVER_PID[0] if SERVER_PID else -1
    totals = [0.0, 0.0]
    for pid, cpu in used.items():
        chain, x = [], pid
        while x in parent and x not in (0, 1, me):
            chain.append(x)
            x = parent[x]
        if x == me and pid != me:
            totals[0 if server in chain else 1] += cpu
    return totals[0], totals[1]


class Meter:
    """Wall and CPU seconds (app server, browser) from ``start()`` to ``stop()``."""

    def start(self) -> None:
        self.cpu0, self.t0 = _cpu(), time.perf_counter()

    def stop(self) -> float:
        self.wall = time.perf_counter() - self.t0
        cpu = _cpu()
        self.server, self.browser = cpu[0] - self.cpu0[0], cpu[1] - self.cpu0[1]
        return self.wall


def _shown(page, testid: str, *parts: str, timeout: float = 300_000) -> None:
    page.wait_for_function(SHOWN_JS, arg=[testid, list(parts)], timeout=timeout, polling=30)


def _open_explore(page, url: str) -> dict:
    """Seconds from ``goto`` to the first text in the main area, to both UMAPs drawn, and to an idle page."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(MAIN_TEXT_JS, timeout=900_000, polling=30)
    paint = time.perf_counter() - t0
    page.wait_for_function(PLOTS_JS, timeout=900_000, polling=30)
    plots = time.perf_counter() - t0
    _shown(page, "stMarkdownContainer", "Embedding quality", timeout=900_000)
    wait_idle(page, timeout=900_000)
    return {
        "first_paint_s": round(paint, 2),
        "plots_s": round(plots, 2),
        "idle_s": round(time.perf_counter() - t0, 2),
    }


def _recolour(page, column: str) -> Meter:
    page.get_by_role("combobox", name="Colour the right-hand plot by").click()
    option = page.get_by_role("option", name=column, exact=True)
    m = Meter()
    m.start()
    option.click()
    page.wait_for_function(
        """(col) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(
             (e) => e.textContent === `Coloured by ${col}` && !e.closest('[data-stale="true"]'))""",
        arg=column, timeout=300_000, polling=30,
    )  # fmt: skip
    m.stop()
    wait_idle(page, timeout=300_000)
    return m


def _click(page, start: int, drawn: bool = False) -> tuple[Meter, int]:
    """Click a cell on the right-hand UMAP; seconds until the matches panel names it (header and table), and
    with ``drawn`` until both UMAPs draw it (``Meter.highlight``)."""
    for attempt in range(3):  # a chart being re-created detaches from the DOM: wait and look again
        try:
            page.locator(".js-plotly-plot").nth(1).scroll_into_view_if_needed(timeout=30_000)
            break
        except Exception:
            if attempt == 2:
                raise
            wait_idle(page, timeout=300_000)
    pt = page.evaluate(PICK_JS, [1, start])
    m = Meter()
    m.start()
    page.mouse.click(pt["x"], pt["y"])
    _shown(page, "stMarkdownContainer", "Selected cell", pt["barcode"])
    _shown(page, "stMarkdownContainer", f"partners of {pt['barcode']}")
    _shown(page, "stTable", "similarity")
    m.stop()
    if drawn:  # "Draw on the UMAPs" is on: the UMAPs are re-created after the matches panel; time them too
        page.wait_for_function(HIGHLIGHT_JS, arg=pt["cell"], timeout=300_000, polling=30)
        m.highlight = time.perf_counter() - m.t0
    wait_idle(page, timeout=300_000)
    return m, pt["n"]


def _draw_on_umaps(page) -> None:
    """Turn on the matches panel's "Draw on the UMAPs" toggle (a cell must be selected)."""
    wait_idle(page, timeout=300_000)
    page.locator('[data-testid="stCheckbox"]', has_text="Draw on the UMAPs").first.locator("label").click(
        timeout=60_000
    )
    wait_idle(page, timeout=300_000)


#: JS: both UMAPs draw cell ``q`` as the "selected cell" (the click's highlight is on screen).
HIGHLIGHT_JS = """
(q) => { const gds = Array.from(document.querySelectorAll('.js-plotly-plot')).slice(0, 2);
  return gds.length === 2 && gds.every((gd) => !gd.closest('[data-stale="true"]') && gd._fullData
    && gd._fullData.some((t) => t.name === 'selected cell' && t.customdata && t.customdata[0] === q)); }
"""


#: JS: how many drawn cells of plot ``idx`` lie inside the screen rectangle ``[x0, y0, x1, y1]``.
COUNT_JS = """
([idx, x0, y0, x1, y1]) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, tr = gd._fullData[0], r = gd.getBoundingClientRect();
  let n = 0;
  for (let i = 0; i < tr.x.length; i++) {
    const px = r.left + xa._offset + xa.l2p(tr.x[i]), py = r.top + ya._offset + ya.l2p(tr.y[i]);
    if (px >= x0 && px <= x1 && py >= y0 && py <= y1) n++;
  }
  return n;
}
"""
#: JS: drawn cells inside the data range of the plot's last box selection as plotly recorded it (null: none).
SELECTION_COUNT_JS = """
(idx) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const sel = window.__scclipBox;
  if (!sel) return null;
  const [xa, xb] = [Math.min(...sel.x), Math.max(...sel.x)], [ya, yb] = [Math.min(...sel.y), Math.max(...sel.y)];
  const tr = gd._fullData[0];
  let n = 0;
  for (let i = 0; i < tr.x.length; i++) if (tr.x[i] >= xa && tr.x[i] <= xb && tr.y[i] >= ya && tr.y[i] <= yb) n++;
  return {n: n, box: [xa, xb, ya, yb], points: window.__scclipPoints};
}
"""
#: JS: remember the range and point count of the plot's next plotly_selected event.
LISTEN_JS = """
(idx) => { const gd = document.querySelectorAll('.js-plotly-plot')[idx]; window.__scclipBox = null;
  gd.on('plotly_selected', (e) => { if (e && e.range) { window.__scclipBox = e.range;
    window.__scclipPoints = e.points.length; } }); }
"""
LAST_BOX: dict = {}  # the last box: drawn cells in its pixel box, in the range plotly selected, the group header


def _box(page, i: int) -> Meter:
    """Box-select around a drawn cell of the right-hand UMAP (a box whose cell count differs from the group
    shown before); seconds until the new group summary is shown."""
    page.locator(".js-plotly-plot").nth(1).scroll_into_view_if_needed()
    area = page.evaluate(AREA_JS, 1)
    pt = page.evaluate(PICK_JS, [1, 97 * i])  # the box holds at least this cell
    prev = page.evaluate(
        "() => Array.from(document.querySelectorAll('h4')).map((e) => e.innerText).join('|')"
    )
    rng = np.random.default_rng(i)
    for _ in range(50):
        w, h = rng.uniform(0.1, 0.3) * area["w"], rng.uniform(0.1, 0.3) * area["h"]
        x0, y0 = max(area["left"] + 2, pt["x"] - w / 2), max(area["top"] + 2, pt["y"] - h / 2)
        x1 = min(area["left"] + area["w"] - 2, pt["x"] + w / 2)
        y1 = min(area["top"] + area["h"] - 2, pt["y"] + h / 2)
        expected = page.evaluate(COUNT_JS, [1, x0, y0, x1, y1])
        if f"Selected group: {expected:,} cells" not in prev:
            break
    plot = page.locator(".js-plotly-plot").nth(1)
    plot.hover(position={"x": 60, "y": 60})
    plot.locator('[data-title="Box Select"]').click()
    page.evaluate(LISTEN_JS, 1)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    m = Meter()
    m.start()
    page.mouse.up()
    page.wait_for_function(
        """(prev) => Array.from(document.querySelectorAll('h4')).some((e) => e.innerText.startsWith('Selected group')
             && !e.closest('[data-stale="true"]') && !prev.split('|').includes(e.innerText))
           && Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).some(
             (e) => !e.closest('[data-stale="true"]') && e.innerText.includes('where its partners land'))""",
        arg=prev, timeout=300_000, polling=30,
    )  # fmt: skip
    m.stop()
    wait_idle(page, timeout=300_000)
    shown = page.locator("h4", has_text="Selected group").first.inner_text()
    recorded = page.evaluate(SELECTION_COUNT_JS, 1)  # the box plotly sent
    LAST_BOX.update(expected=expected, shown=int(shown.split(":")[1].split()[0].replace(",", "")),
                    recorded=recorded)  # fmt: skip
    return m


def stats(xs: list[float]) -> dict:
    """Median, 95th percentile and count of a list of seconds."""
    a = np.asarray(xs, dtype=float)
    return {"median": round(float(np.median(a)), 2), "p95": round(float(np.percentile(a, 95)), 2), "n": len(a)}  # fmt: skip


ACTIONS = ("click", "colour", "box")
NAMES = {"click": "click_to_matches", "colour": "colour_change", "box": "box_to_group"}


def actions(page, columns: tuple[str, str], repeats: int = 10, which=ACTIONS) -> dict:
    """``repeats`` clicks, colour changes and box selections on an open Explore page: median / p95 of the
    wall time of each, and the median CPU seconds the app server and the browser spent on it."""
    out, meters = {}, {}
    runs = {"click": lambda i: _click(page, 400 * i), "colour": lambda i: (_recolour(page, columns[i % 2]), None),
            "box": lambda i: (_box(page, i), None)}  # fmt: skip
    for name in which:
        meters[name] = []
        try:
            for i in range(repeats):
                m, drawn = runs[name](i)
                meters[name].append(m)
                out["drawn_per_plot"] = drawn or out.get("drawn_per_plot")
        except Exception as err:  # report what was measured and why the rest was not
            out[f"{NAMES[name]}_failed"] = f"{type(err).__name__} after {len(meters[name])}: {str(err)[:200]}"
            page.screenshot(path=f"/tmp/app_latency_{name}_failed.png")
        if not meters[name]:
            meters.pop(name)
    if "click" in meters:  # the same clicks with "Draw on the UMAPs" on: both UMAPs re-created per click
        try:
            _click(page, 0)  # a selected cell shows the matches panel and its toggle
            _draw_on_umaps(page)
            drawn = [_click(page, 400 * i + 200, drawn=True)[0] for i in range(repeats)]
            out["click_drawn_on_umaps"] = {"to_matches": stats([m.wall for m in drawn]),
                                           "to_umap_highlight": stats([m.highlight for m in drawn])}  # fmt: skip
        except Exception as err:  # report the rest
            out["click_drawn_on_umaps_failed"] = f"{type(err).__name__}: {str(err)[:200]}"
    for k, ms in meters.items():
        out[NAMES[k]] = {**stats([m.wall for m in ms]),
                         "cpu_server_median": round(float(np.median([m.server for m in ms])), 2),
                         "cpu_browser_median": round(float(np.median([m.browser for m in ms])), 2)}  # fmt: skip
    return {**out, "raw": {k: [round(m.wall, 2) for m in ms] for k, ms in meters.items()}}


def _session(url: str, columns: tuple[str, str], repeats: int, which=ACTIONS) -> dict:
    """A fresh server's first page (cold), a second page on the same server (warm), then the actions."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        cold = _open_explore(page, url)
        page.close()
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        warm = _open_explore(page, url)
        shots = os.environ.get("SCCLIP_BENCH_SHOTS")  # a folder: screenshots after the actions (or a failure)
        try:
            res = {"cold": cold, "warm": warm, **actions(page, columns, repeats, which)}
        finally:
            if shots:
                page.screenshot(path=str(Path(shots) / "explore_after_actions.png"), full_page=True)
        browser.close()
    return res


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def interact(n_list: list[int], repeats: int = 10, which=ACTIONS) -> list[dict]:
    """On N paired cells per modality (tiled simulator data, a tiny model, cache filled beforehand)."""
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
            load0 = _load()
            proc, url = start_app(env)
            SERVER_PID[:] = [proc.pid]
            try:
                res = _session(url, ("batch", "cell_type"), repeats, which)
            finally:
                stop_app(proc)
            res = {"cells": 2 * n, "cells_per_modality": n, "prepare_s": round(prep, 1),
                   "load_before": load0, "load_after": _load(), **res}  # fmt: skip
            print(json.dumps(res), flush=True)
            results.append(res)
    return results


def default(repeats: int = 10, which=ACTIONS) -> dict:
    """The app as shipped (default model and data, embedding and UMAP already in the user's cache)."""
    load0 = _load()
    proc, url = start_app(dict(os.environ))
    SERVER_PID[:] = [proc.pid]
    try:
        res = _session(url, ("batch", "cell_type"), repeats, which)
    finally:
        stop_app(proc)
    res = {"dataset": "default", "load_before": load0, "load_after": _load(), **res}
    print(json.dumps(res), flush=True)
    return res


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
    d = sub.add_parser("default")
    d.add_argument("--repeats", type=int, default=10)
    d.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    i = sub.add_parser("interact")
    i.add_argument("--cells", type=int, nargs="+", default=[50_000], help="paired cells per modality")
    i.add_argument("--repeats", type=int, default=10)
    i.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS))
    args = ap.parse_args()
    if args.cmd == "startup":
        startup(args.model)
    elif args.cmd == "default":
        default(args.repeats, args.actions)
    else:
        interact(args.cells, args.repeats, args.actions)


if __name__ == "__main__":
    main()
