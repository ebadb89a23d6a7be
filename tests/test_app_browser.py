"""`diagnose app` in a real browser: the server that `diagnose app` starts, the pages rendered by headless Chromium
over Streamlit's websocket, and what a user sees (text on screen, a screenshot that is not blank), as the unit tests
of the pages cannot show: a page that raises, renders nothing, or turns a model's name into HTML fails here.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by Playwright without its own browser
download; the tests skip, saying so, where it is missing."""

from __future__ import annotations

import io
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAVED_RUN

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

RENDER_TIMEOUT_MS = 30_000  # Streamlit renders client-side, after the websocket's first script run
READY_TIMEOUT_S = 60.0
HOSTILE = '<img src=x onerror="window.__xss=1"><b>bold</b>'
TOP_OP = "aten::addmm"  # the saved run's top operator (profile.json, tables.ops)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(runs: Path, *args: str) -> subprocess.Popen:
    """`python -m diagnose app RUNS ARGS`, as a user starts it from a terminal: Ctrl-C stops it, even where pytest
    itself runs in the background (which ignores SIGINT, and a child inherits that); in its own process group, so
    that a server that does not stop can be killed with its Streamlit child."""
    return subprocess.Popen([sys.executable, "-m", "diagnose", "app", str(runs), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "DIAGNOSE_PROGRESS": "0"})


def ready_line(server: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> str:
    """The one line `diagnose app` prints once the server answers; fails with its stderr if it exits first."""
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            pytest.fail(f"diagnose app printed nothing in {timeout_s:.0f} s")
    line = server.stdout.readline()
    if not line:
        pytest.fail(f"diagnose app exited ({server.wait()}) before it was ready: {server.stderr.read()}")
    return line


def stop(server: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it (`diagnose app` then stops its Streamlit child); the group killed if it hangs."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def hostile_copy(src: Path, dst: Path) -> Path:
    """The saved run with HOSTILE in its model name (run.json, which analyze reads) and in its top operator's name
    (every string of evidence/profile.json: the findings, the tables' keys), as a model or a trace could name them."""
    shutil.copytree(src, dst)
    run = json.loads((dst / "run.json").read_text())
    (dst / "run.json").write_text(json.dumps({**run, "model": run["model"] + HOSTILE}))
    profile = dst / "evidence" / "profile.json"
    profile.write_text(json.dumps(_replace(json.loads(profile.read_text()), TOP_OP, TOP_OP + HOSTILE)))
    return dst


def _replace(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace(item, old, new) for item in value]
    if isinstance(value, dict):
        return {_replace(key, old, new): _replace(item, old, new) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> str:
    """One `diagnose app` for the module, on the saved run and its hostile copy."""
    runs = tmp_path_factory.mktemp("app-runs")
    shutil.copytree(SAVED_RUN, runs / SAVED_RUN.name)
    hostile_copy(SAVED_RUN, runs / "hostile")
    port = free_port()
    server = start_app(runs, "--port", str(port))
    try:
        line = ready_line(server)
        assert line.startswith(f"diagnose app: http://127.0.0.1:{port} "), line
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def open_page(page, url: str, slug: str, run: str) -> None:
    """The page of a run, once its verdict is on screen (the heading's caption and, on the overview, the verdict)."""
    page.goto(f"{url}/?page={slug}&run={run}")
    page.get_by_text("REGRESSION", exact=False).first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image  # matplotlib's own dependency

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def assert_not_blank(png: bytes, path: Path) -> None:
    """Drawn: a blank or single-colour area has no spread of brightness and no dark (text) pixels."""
    path.write_bytes(png)
    grey = pixels(png).mean(axis=2)
    assert grey.std() > 10 and (grey < 128).mean() > 0.005, f"the screenshot looks blank: {path}"


def test_overview_shows_the_verdict_and_the_model(app_url, page, tmp_path):
    open_page(page, app_url, "overview", SAVED_RUN.name)
    verdict = page.get_by_text("REGRESSION", exact=True)  # the verdict itself, not the caption that mentions it
    verdict.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    page.get_by_text("Likely causes").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    text = page.inner_text('[data-testid="stMain"]')
    assert "textclf v2 is slower than v1" in text, text[:2000]
    assert page.locator('[data-testid="stException"]').count() == 0, text[:2000]
    assert_not_blank(page.locator('[data-testid="stMain"]').screenshot(), tmp_path / "overview.png")


def test_ops_page_shows_the_top_operator_first(app_url, page, tmp_path):
    open_page(page, app_url, "ops", SAVED_RUN.name)
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    chart.get_by_text(TOP_OP, exact=True).wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    # the table is drawn on a canvas; its accessible copy holds the cells' text
    first_cell = page.locator('[data-testid="stDataFrame"] [data-testid="glide-cell-0-0"]').first
    first_cell.wait_for(state="attached", timeout=RENDER_TIMEOUT_MS)
    assert first_cell.text_content() == TOP_OP
    assert page.locator('[data-testid="stException"]').count() == 0
    assert_not_blank(page.locator('[data-testid="stMain"]').screenshot(), tmp_path / "ops.png")
    bars = pixels(chart.screenshot())
    coloured = (np.abs(bars[..., 2] - bars[..., 0]) > 60).mean()  # the bars are coloured, the axes grey
    assert coloured > 0.01, f"no bars in the chart ({coloured:.2%} coloured pixels)"


@pytest.mark.parametrize("slug, shown", [("overview", "textclf" + HOSTILE), ("ops", TOP_OP + HOSTILE)], ids=["overview", "ops"])
def test_hostile_names_are_shown_as_text(app_url, page, slug, shown):
    open_page(page, app_url, slug, "hostile")
    page.get_by_text(shown).first.wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    if slug == "ops":
        page.locator('[data-testid="stVegaLiteChart"]').first.get_by_text(TOP_OP + HOSTILE).wait_for(
            state="visible", timeout=RENDER_TIMEOUT_MS)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
    assert page.evaluate("[...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length") == 0
    assert page.get_by_text("<b>bold</b>").first.is_visible()


def test_public_host_warns_that_there_is_no_authentication(tmp_path):
    port = free_port()
    server = start_app(tmp_path, "--host", "0.0.0.0", "--port", str(port))
    try:
        assert ready_line(server).startswith(f"diagnose app: http://0.0.0.0:{port} ")
    finally:
        stop(server)
    stderr = server.stderr.read()
    assert "no authentication" in stderr and f"0.0.0.0:{port}" in stderr, stderr


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "diagnose", "app", str(tmp_path), "--port", str(port)],
                                capture_output=True, text=True, timeout=READY_TIMEOUT_S + 30,
                                env={**os.environ, "DIAGNOSE_PROGRESS": "0"})
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diagnose: error: --port") and str(port) in lines[0], result.stderr
    assert "not available" in lines[0] or "in use" in lines[0], lines[0]
    assert result.stdout == ""
    assert time.monotonic() - started < READY_TIMEOUT_S, "a port in use is reported at start, not after the timeout"
