"""End-to-end in a real browser: ``streamlit run app.py`` + Playwright driving Debian's /usr/bin/chromium.

Data -> Explore, click a point on the UMAP, and check that the matches table names the clicked cell and lists
exactly the partners ``scclip.match.topk_partners`` returns. Screenshots of every page go to tests/artifacts/.
Skips cleanly without chromium or the playwright package (never runs ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import scclip
from scclip import explore
from scclip.datasets import synthetic_multiome
from scclip.match import topk_partners

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("SCCLIP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: JS: screen position and customdata of the most isolated drawn cell of the plot number ``idx``.
PICK_POINT_JS = """
(idx) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[idx];
  const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis, tr = gd._fullData[0];
  const r = gd.getBoundingClientRect();
  const n = tr.x.length, m = Math.min(n, 2000), px = [], py = [];
  for (let i = 0; i < n; i++) {
    px.push(r.left + xa._offset + xa.l2p(tr.x[i]));
    py.push(r.top + ya._offset + ya.l2p(tr.y[i]));
  }
  let best = -1, bestd = -1;
  for (let i = 0; i < m; i++) {
    if (px[i] < r.left + xa._offset + 30 || py[i] < r.top + ya._offset + 30) continue;
    if (px[i] > r.left + xa._offset + xa._length - 120) continue;  // keep clear of the legend
    let d = 1e18;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const dx = px[i] - px[j], dy = py[i] - py[j];
      d = Math.min(d, dx * dx + dy * dy);
    }
    if (d > bestd) { bestd = d; best = i; }
  }
  return {x: px[best], y: py[best], cell: Number(tr.customdata[best]), n: n};
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


def start_app(env: dict, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` headless on a free loopback port; returns (process, base URL)."""
    port = port or _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
    except Exception:
        proc.kill()
        raise
    return proc, url


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def launch_browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit finished the current script run (no 'Running…' status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout, polling=100
    )


def table_rows(page) -> list[list[str]]:
    rows = page.locator('[data-testid="stTable"] tbody tr')
    return [[c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()] for i in range(rows.count())]


@pytest.fixture(scope="module")
def playwright_api():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    sync = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    return sync.sync_playwright


@pytest.fixture(scope="module")
def app_fixture(tmp_path_factory, tiny_pretrained):
    root = tmp_path_factory.mktemp("browser")
    (root / "pretrained").symlink_to(tiny_pretrained, target_is_directory=True)
    env = {
        **os.environ,
        "SCCLIP_PRETRAINED_DIR": str(root / "pretrained"),
        "SCCLIP_CACHE_DIR": str(root / "cache"),
        "SCCLIP_RUNS_DIR": str(root / "runs"),
        "SCCLIP_DEFAULT_MODEL": "demo-tiny",
        "SCCLIP_DEFAULT_DEMO": "synthetic",
    }
    return root, env


def test_click_a_cell_shows_its_library_partners(playwright_api, app_fixture):
    root, env = app_fixture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    model = scclip.load_pretrained(root / "pretrained" / "demo-tiny")
    joint = explore.joint_from_embedded(scclip.embed(model, synthetic_multiome(n_cells=300, seed=0)))
    proc, url = start_app(env)
    try:
        with playwright_api() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1440, "height": 2000})
            page.goto(f"{url}/data")
            page.get_by_text("Use this demo dataset").wait_for(timeout=120_000)
            page.get_by_text("Use this demo dataset").click()
            wait_idle(page)
            # during the rerun Streamlit can briefly show the previous run's summary next to the new one
            page.get_by_text("Feature coverage against model").first.wait_for(timeout=60_000)
            wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "data.png"))

            page.get_by_role("link", name="Explore", exact=True).click()
            page.wait_for_selector(".js-plotly-plot", timeout=180_000)
            page.get_by_text("Embedding quality").first.wait_for(timeout=120_000)
            wait_idle(page)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "explore.png"))

            pt = page.evaluate(PICK_POINT_JS, 1)
            assert pt["n"] == joint.n
            page.mouse.click(pt["x"], pt["y"])
            page.get_by_text("Selected cell").first.wait_for(timeout=60_000)
            wait_idle(page)
            page.wait_for_timeout(500)
            cell = pt["cell"]
            barcode = joint.obs["barcode"].iloc[cell]
            header = page.locator(
                '[data-testid="stMarkdownContainer"]', has_text="Selected cell"
            ).first.inner_text()
            assert barcode in header and joint.modality[cell] in header

            other = joint.other(cell)
            idx, sim = topk_partners(joint.Z[cell : cell + 1], joint.Z[other], k=10)
            expected = joint.obs["barcode"].to_numpy()[other[idx[0]]].tolist()
            # the header can arrive before the table on a loaded machine: wait for the table's ten rows
            page.locator('[data-testid="stTable"] tbody tr').nth(9).wait_for(timeout=60_000)
            rows = table_rows(page)
            assert [r[0] for r in rows] == [str(i) for i in range(1, 11)]
            got = [r[1] for r in rows]
            assert got == expected, (got, expected)
            assert [float(r[2]) for r in rows] == pytest.approx(sim[0].tolist(), abs=6e-4)
            page.screenshot(path=str(ARTIFACTS / "explore_matches.png"))
            # a click leaves both UMAPs as they were (no re-created WebGL charts) until "Draw on the UMAPs"
            assert page.evaluate(HIGHLIGHTED_JS) == [[], []]
            page.get_by_text("Draw on the UMAPs").click()
            page.wait_for_function(f"() => ({HIGHLIGHTED_JS})().every((t) => t.length === 2)", timeout=60_000)
            wait_idle(page)
            partners = sorted(int(i) for i in other[idx[0]])
            for traces in page.evaluate(HIGHLIGHTED_JS):
                assert dict(traces) == {"selected cell": [cell], "top partners": partners}
            page.screenshot(path=str(ARTIFACTS / "explore_matches_drawn.png"))

            for name, link in (("model", "Model"), ("zero_shot", "Zero-shot view"), ("train", "Train")):
                page.get_by_role("link", name=link, exact=True).click()
                page.wait_for_timeout(500)
                wait_idle(page)
                if name == "zero_shot":
                    page.get_by_role("button", name="Build the zero-shot view").click()
                    page.get_by_text("Median confidence").first.wait_for(timeout=120_000)
                    wait_idle(page)
                    page.wait_for_timeout(1000)
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
                assert not page.locator('[data-testid="stException"]').count()
            browser.close()
    finally:
        stop_app(proc)


#: JS: per UMAP, the highlight traces drawn ([name, sorted global cell indices]).
HIGHLIGHTED_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).slice(0, 2).map((gd) => gd._fullData
  .filter((t) => t.name === 'selected cell' || t.name === 'top partners')
  .map((t) => [t.name, Array.from(t.customdata).map(Number).sort((a, b) => a - b)]))
"""

#: The sidebar's navigation, the five pages of ``app.py`` and nothing else.
PAGE_TITLES = {"Model", "Data", "Explore", "Zero-shot view", "Train"}
NAV_LABELS_JS = """
() => Array.from(document.querySelectorAll('[data-testid="stSidebarNav"] a')).map(a => {
  const walker = document.createTreeWalker(a, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;  // skip icon ligatures (Material Symbols font)
    if (el && getComputedStyle(el).fontFamily.includes('Material')) continue;
    parts.push(walker.currentNode.textContent);
  }
  return parts.join('').trim();
})
"""


@pytest.mark.parametrize("path", ["", "/data"])
def test_first_paint_lists_only_the_five_pages(playwright_api, app_fixture, path):
    """From the first paint of a fresh server (the root URL, or a bookmark of /data), the sidebar lists the five
    pages only: no file names Streamlit discovered on its own ("app", "common", ...)."""
    _, env = app_fixture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(env)
    seen: list[tuple[str, ...]] = []
    try:
        with playwright_api() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{url}{path}", wait_until="commit")
            deadline = time.time() + 60
            while time.time() < deadline:
                labels = tuple(page.evaluate(NAV_LABELS_JS))
                if labels and (not seen or labels != seen[-1]):
                    seen.append(labels)
                if (
                    labels
                    and set(labels) == PAGE_TITLES
                    and not page.locator('[data-testid="stStatusWidget"]').count()
                ):
                    break
                page.wait_for_timeout(25)
            page.screenshot(path=str(ARTIFACTS / f"first_paint{path.replace('/', '_')}.png"))
            browser.close()
    finally:
        stop_app(proc)
    print(f"sidebar navigation states seen from the first paint of {path or '/'}: {seen}")
    assert seen, "the sidebar navigation never appeared"
    assert all(set(s) <= PAGE_TITLES for s in seen), f"the sidebar listed other entries: {seen}"
    assert set(seen[-1]) == PAGE_TITLES


def test_explore_interactions_and_their_latency(playwright_api, app_fixture):
    """Real clicks, colour changes and box selections on the Explore page at 1600x1000: each shows its result
    (the clicked cell's matches, the new colouring, the boxed group); the wall times and the CPU seconds of the
    app server and the browser are printed (not asserted: the machine is shared). Same helpers as
    ``benchmarks/app_latency.py``."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import app_latency as bench

    _, env = app_fixture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(env)
    bench.SERVER_PID[:] = [proc.pid]
    try:
        with playwright_api() as p:
            browser = launch_browser(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            opened = bench._open_explore(page, url)
            res = bench.actions(page, ("batch", "cell_type"), repeats=3)
            # the group is every cell inside the box plotly selected (all 600 cells are drawn): the count of drawn
            # cells inside the event's data range, exactly (the mouse's pixel box can land a few pixels off)
            box = dict(bench.LAST_BOX)
            assert box["recorded"] is not None and box["recorded"]["points"] == box["recorded"]["n"], box
            assert box["shown"] > 0 and box["shown"] == box["recorded"]["n"], box
            assert not [k for k in res if k.endswith("_failed")], res
            # the last of the three colour changes (batch, cell_type, batch) is on screen, on the right-hand plot
            assert page.locator(".js-plotly-plot .gtitle", has_text="Coloured by batch").count() == 1
            page.screenshot(path=str(ARTIFACTS / "explore_group.png"), full_page=True)
            assert not page.locator('[data-testid="stException"]').count()
            browser.close()
    finally:
        stop_app(proc)
    print(f"Explore latency (600 cells, tiny model): open {opened}")
    for key in ("click_to_matches", "colour_change", "box_to_group"):
        print(f"  {key}: {res[key]}")
    assert len(res["raw"]["click"]) == len(res["raw"]["colour"]) == len(res["raw"]["box"]) == 3
