"""The app's render time in a real browser, on a run with 100,000 op-diff rows (issue 15: the overview page's first
render at most 3 s, measured in the browser).

1. Copies fixtures/runs/textclf-v1-vs-v2 into a temporary runs folder and writes its evidence/op_diff.parquet with
   --rows rows in `profilers.tracediff.full_table`'s schema: mostly (module path, operator, input shape) and
   (operator, input shape) rows, as a large model's trace gives, plus module, operator and call-path rows.
2. Starts `python -m diagnose app` on it, as a user does, and times in headless Chromium (Debian's, no Playwright
   download), each in a fresh browser context (a new Streamlit session, an empty HTTP cache), from navigation start
   (the page's performance.timeOrigin) to:
   - the overview's verdict on screen: cold (the first load after the server started: its caches empty, the app's
     modules not yet imported) and then warm (--warm loads, the server's caches filled); with the time the
     sidebar was drawn (the app's script started drawing), which splits the wait into start-up and the page;
   - the ops page's first table row drawn (the table's first cell in the grid's DOM), cold then warm.
   The browser measures (performance.now() when the element appears), so the figures are what a user waits,
   websocket and client-side rendering included, not the server's script time alone.

Prints the CPU, the core count and the load average (other work on the machine slows every figure), each figure,
and PASS/FAIL of the overview's first (cold) render against 3 s.

Usage: python benchmarks/app_render.py [--rows 100000] [--warm 3]
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diagnose.core.runfolder import RunFolder  # noqa: E402
from profilers.tracediff import full_table  # noqa: E402

SAVED_RUN = ROOT / "fixtures" / "runs" / "textclf-v1-vs-v2"
CHROMIUM = "/usr/bin/chromium"
BUDGET_S = 3.0
VERDICT = "REGRESSION"  # the saved run's verdict, as the overview shows it
TIMEOUT_MS = 60_000
OPS = np.array(["aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "aten::gelu", "aten::relu",
                "aten::softmax", "aten::_softmax", "aten::add", "aten::mul", "aten::div", "aten::copy_", "aten::view",
                "aten::reshape", "aten::transpose", "aten::t", "aten::permute", "aten::contiguous", "aten::empty",
                "aten::native_layer_norm", "aten::layer_norm", "aten::dropout", "aten::embedding",
                "aten::index_select", "aten::where", "aten::expand", "aten::cat", "aten::slice", "aten::to",
                "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::conv2d", "aten::batch_norm",
                "aten::max_pool2d", "aten::tanh", "aten::sigmoid", "aten::sum", "aten::mean", "aten::rsqrt",
                "aten::pow"])
LEAVES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
          "attention.output.LayerNorm", "intermediate.dense", "intermediate.intermediate_act_fn", "output.dense",
          "output.LayerNorm", "output.dropout")

# the first visible element whose own text is the verdict, as performance.now() (ms since navigation start)
VERDICT_SHOWN = """verdict => {
  for (const e of document.querySelectorAll('[data-testid="stMain"] *')) {
    if (e.childElementCount === 0 && e.textContent.trim() === verdict && e.getClientRects().length) return performance.now();
  }
  return false;
}"""
# the sidebar's title: the first thing the app's script draws, once its modules are imported
SIDEBAR_SHOWN = """() => { const e = document.querySelector('[data-testid="stSidebar"] h1');
  return e && e.getClientRects().length ? performance.now() : false }"""
# the op table's first cell: the grid draws on a canvas and writes the rows it drew into an accessible copy
FIRST_ROW_DRAWN = """() => document.querySelector('[data-testid="stDataFrame"] [data-testid="glide-cell-0-0"]')
  ? performance.now() : false"""


def diff_rows(old: pd.DataFrame, new: pd.DataFrame, total_delta_us: float) -> pd.DataFrame:
    """One table's diff columns from its two sides (calls, self_us, total_us, flops per step), largest change first,
    with HTA's status categories (added, deleted, increased, decreased, unchanged)."""
    joined = old.add_prefix("old_").join(new.add_prefix("new_"))
    joined["delta_self_us"] = joined["new_self_us"] - joined["old_self_us"]
    joined["delta_total_us"] = joined["new_total_us"] - joined["old_total_us"]
    joined["delta_calls"] = joined["new_calls"] - joined["old_calls"]
    joined["share"] = joined["delta_self_us"] / total_delta_us
    moved = joined["delta_self_us"].abs() > 0.05 * joined[["old_self_us", "new_self_us"]].max(axis=1)
    joined["status"] = np.select(
        [joined["old_calls"] == 0, joined["new_calls"] == 0, ~moved, joined["delta_self_us"] > 0],
        ["added", "deleted", "unchanged", "increased"], "decreased")
    return joined.iloc[joined["delta_self_us"].abs().argsort(kind="stable")[::-1]]


def sides(keys: list[str], rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Old and new per-step figures for `keys`: heavy-tailed times, a slower new side, 2% of rows only in one."""
    n = len(keys)
    calls = rng.integers(1, 48, n).astype(float)
    self_us = rng.lognormal(2.0, 1.5, n)
    old = pd.DataFrame({"calls": calls, "self_us": self_us, "total_us": self_us * rng.uniform(1, 3, n),
                        "flops": np.where(rng.random(n) < 0.3, self_us * 2e5, 0.0)}, index=pd.Index(keys, name="key"))
    new = old * rng.lognormal(0.3, 0.4, (n, 1))
    new["calls"] = calls
    only = rng.random(n)
    old.loc[only < 0.01] = 0.0
    new.loc[only > 0.99] = 0.0
    return old, new


def table_keys(rows: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """The keys of each table (" | "-joined parts, as tracediff writes them), `rows` in all: a module path and a
    call path per 20 rows, every operator, 30% operator x input shape, the rest module path x operator x shape."""
    modules = [f"encoder.layer.{i // len(LEAVES)}.{LEAVES[i % len(LEAVES)]}" for i in range(rows // 20)]
    keys = {"ops": list(OPS), "modules": modules, "tree": [f"forward > {m} > aten::linear > aten::addmm" for m in modules],
            "shapes": [f"{OPS[i % len(OPS)]} | [[{1 + i // 4096},{i % 4096 + 1},768],[]]" for i in range(rows * 3 // 10)]}
    wanted = rows - sum(len(k) for k in keys.values())
    per_module = -(-wanted // len(modules))  # each (op, shape) once per module: the shapes are a permutation
    keys["module_shapes"] = [f"{m} | {op} | [[1,{s},768],[768]]" for m in modules
                             for op, s in zip(rng.choice(OPS, per_module), rng.permutation(4096)[:per_module] + 1,
                                              strict=True)][:wanted]
    return keys


def op_diff_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = {}
    for name, keys in table_keys(rows, rng).items():
        old, new = sides(keys, rng)
        frames[name] = diff_rows(old, new, float(new["self_us"].sum() - old["self_us"].sum()))
    return full_table(frames)


def make_runs(root: Path, rows: int) -> str:
    """The saved run with `rows` op-diff rows, under `root`; its folder name."""
    run = Path(shutil.copytree(SAVED_RUN, root / SAVED_RUN.name))
    frame = op_diff_frame(rows)
    RunFolder(run).write_op_diff(frame)
    print(f"op_diff.parquet: {len(frame):,} rows ({frame['table'].value_counts().to_dict()}), "
          f"{(run / RunFolder.OP_DIFF).stat().st_size / 1e6:.1f} MB")
    return run.name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(runs: Path, port: int) -> subprocess.Popen:
    """`diagnose app` as a user starts it (Ctrl-C stops it, even where this script runs in the background); returns
    once it printed its ready line, that is, answers its health check."""
    server = subprocess.Popen([sys.executable, "-m", "diagnose", "app", str(runs), "--port", str(port)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                              env={**os.environ, "DIAGNOSE_PROGRESS": "0"})
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        ready = selector.select(90) and server.stdout.readline()
    if not ready:
        stop(server)
        sys.exit(f"diagnose app did not start (exit {server.returncode})")
    print(ready.strip())
    return server


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def timed_load(browser, url: str, marks: list[tuple[str, str | None]]) -> list[float]:
    """Seconds from navigation start to each mark (a JS predicate, with its argument, that returns performance.now()
    once its element is there), in a fresh browser context."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        return [page.wait_for_function(shown, arg=arg, timeout=TIMEOUT_MS, polling="raf").json_value() / 1000
                for shown, arg in marks]
    finally:
        context.close()


def measure(browser, base: str, run: str, warm: int) -> dict[str, list[list[float]]]:
    """Cold (first) then warm loads of the overview (to the sidebar, then the verdict) and the ops page (to the first
    table row)."""
    overview = (f"{base}/?page=overview&run={run}", [(SIDEBAR_SHOWN, None), (VERDICT_SHOWN, VERDICT)])
    ops = (f"{base}/?page=ops&run={run}", [(FIRST_ROW_DRAWN, None)])
    return {"overview cold": [timed_load(browser, *overview)],
            "overview warm": [timed_load(browser, *overview) for _ in range(warm)],
            "ops cold": [timed_load(browser, *ops)],
            "ops warm": [timed_load(browser, *ops) for _ in range(warm)]}


def report(name: str, loads: list[list[float]]) -> str:
    """The last mark's median (and each load's, warm), with the sidebar's where the page has one."""
    last = [marks[-1] for marks in loads]
    line = f"{name:<14} {statistics.median(last):6.2f} s"
    if len(loads) > 1:
        line += f" (median of {len(loads)}: {', '.join(f'{v:.2f}' for v in last)})"
    if len(loads[0]) > 1:
        line += f"; sidebar drawn at {statistics.median(marks[0] for marks in loads):.2f} s"
    return line


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=3, help="warm loads of each page (default 3)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"machine: {machine()}; {load()}")
    with tempfile.TemporaryDirectory(prefix="app-render-") as tmp:
        run = make_runs(Path(tmp), args.rows)
        port, started = free_port(), time.monotonic()
        server = start_app(Path(tmp), port)
        print(f"server ready in {time.monotonic() - started:.1f} s")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                figures = measure(browser, f"http://127.0.0.1:{port}", run, args.warm)
                browser.close()
        finally:
            stop(server)
    for name, loads in figures.items():
        print(report(name, loads))
    first = figures["overview cold"][0][-1]
    print(f"after: {load()}")
    print(f"{'PASS' if first <= BUDGET_S else 'FAIL'}: the overview's first render took {first:.2f} s "
          f"(budget {BUDGET_S:g} s, measured in the browser)")
    return 0 if first <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
