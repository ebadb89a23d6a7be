"""Shared fixtures: a small real registry (real TorchScript models) written into a temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# Run folders made by the tests keep report.json and report.md only: the HTML's plots (matplotlib, about a second a
# compare) are rendered where a test asks for them (tests/test_html_report.py, `report_runs` below).
os.environ.setdefault("DIAGNOSE_RUN_REPORTS", "json,md")


BUSY_LOOP = "import time\nend = time.monotonic() + 1200\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture(autouse=True)
def busy_core_beside_slow_tests(request):
    """Slow end-to-end tests run with one busy core beside them, as on a CI machine with a second job: a diagnosis
    that holds only on an idle machine would block landings. The loop runs at nice 19, as a background job takes
    every idle cycle: at the same priority as a 2-thread model on 2 cores it would hold each OpenMP barrier for a
    scheduler slice (a 15x slowdown that no verdict survives, and that the host-CPU warning names). Where other work
    already keeps a core busy, that is the neighbour and no loop is added. DIAGNOSE_TEST_BUSY=0 turns it off."""
    if request.node.get_closest_marker("slow") is None or os.environ.get("DIAGNOSE_TEST_BUSY", "1") == "0":
        yield
        return
    from collectors.host_cpu import HostCpuSampler

    probe = HostCpuSampler()
    probe.start()
    time.sleep(0.5)
    if (probe.collect().data or {}).get("contended"):
        yield
        return
    child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], preexec_fn=lambda: os.nice(19))
    try:
        yield
    finally:
        child.kill()
        child.wait()


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    """A proxy in the environment must not take the calls to the test servers on 127.0.0.1."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    """A real Prometheus (tests/prom_server.py) for the module: `prom(fixture_file, ...)` backfills and serves."""
    from prom_server import prometheus_servers

    yield from prometheus_servers(tmp_path_factory)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            process: bool = False) -> subprocess.CompletedProcess:
    """Run `diagnose ARGS` as a user would, and return its exit code, stdout and stderr.

    By default through the CLI's own `main()` in this process, with `env` and `cwd` applied for the call and stdout
    and stderr captured: a subprocess pays some 4 s of imports (torch, pandas, scipy) per call, and CI runs about a
    hundred. `process=True` runs `python -m diagnose` instead, for what only a process shows: output that C code
    writes to the file descriptors, signals, and a wall-clock `timeout`."""
    full_env = {**os.environ, "DIAGNOSE_PROGRESS": "0", **(env or {})}
    if process:
        return subprocess.run([sys.executable, "-m", "diagnose", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    import contextlib
    import io

    from diagnose.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    os.environ.update(full_env)
    sys.argv = ["diagnose", *args]  # what run.json records as the command
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["diagnose", *args], code, out.getvalue(), err.getvalue())


def write_manifest(folder: Path, **overrides) -> Path:
    manifest = {
        "name": folder.parent.name, "version": folder.name, "format": "torchscript", "artifact": "model.pt",
        "inputs": {"requests": "requests.parquet", "preprocess": None},
        "serving": {"device": "cpu", "batch_size": 1, "threads": 1, "precision": "fp32"},
        "slo": {"p99_ms": 50},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key] = {**manifest[key], **value}
        else:
            manifest[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def save_mlp(path: Path, hidden: tuple[int, ...], inputs: int = 32, seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)
    layers: list = []
    width = inputs
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, 4))
    torch.jit.script(torch.nn.Sequential(*layers).eval()).save(str(path))


def requests_frame(rows: int = 64, width: int = 32, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": [rng.normal(size=width).astype(np.float32) for _ in range(rows)]})  # logged as float32


@pytest.fixture
def tiny_registry(tmp_path: Path) -> Path:
    """`mlp` v1 (small), v2 (much more compute, same requests distribution), v3 (= v1's weights, other threads)."""
    return make_tiny_registry(tmp_path / "registry")


def make_tiny_registry(root: Path) -> Path:
    """The `tiny_registry` fixture's registry, written at `root` (for fixtures of a wider scope)."""
    for version, hidden in (("v1", (16,)), ("v2", (512, 512, 512)), ("v3", (16,))):
        folder = root / "mlp" / version
        write_manifest(folder, serving={"threads": 1})
        save_mlp(folder / "model.pt", hidden)
        requests_frame(seed={"v1": 1, "v2": 2, "v3": 3}[version]).to_parquet(folder / "requests.parquet")
    return root


SAVED_RUN = ROOT / "fixtures" / "runs" / "textclf-v1-vs-v2"  # a regression with profile, drift, fix and signals
PRODUCTION_DEPLOYMENT = {"namespace": "serving", "selector": "app=textclf", "container": "model",
                         "deployed_at": "2026-11-20T10:00:00Z"}  # what fixtures/signals/prometheus/*.om record


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders of each kind a report must render, made once for the session (tests copy before writing):
    `regression` (the saved textclf run: profile, drift, variants, production signals), `no_regression` (mlp v1 vs
    v3, same weights; no signals, no profile: sources unavailable) and `production` (v1 vs v3 from the throttled
    recording alone, --no-benchmark: production's verdict and timelines, no lab latency)."""
    import shutil

    root = tmp_path_factory.mktemp("report-runs")
    registry = make_tiny_registry(root / "registry")
    runs = {"regression": Path(shutil.copytree(SAVED_RUN, root / "regression"))}
    result = run_cli("compare", "--registry", str(registry), "--old", "v1", "--new", "v3", "--budget", "3",
                     "--no-profile", "--no-verify", "--out", str(root / "no_regression"),
                     env={"DIAGNOSE_RUN_REPORTS": "json,md,html"})  # what a compare keeps by default
    assert result.returncode == 0, result.stderr
    runs["no_regression"] = root / "no_regression"
    write_manifest(registry / "mlp" / "v3", serving={"threads": 1}, deployment=PRODUCTION_DEPLOYMENT)
    signals = root / "signals"
    signals.mkdir()
    shutil.copy(ROOT / "fixtures" / "signals" / "prometheus" / "throttled.om", signals / "metrics.om")
    result = run_cli("compare", "--registry", str(registry), "--old", "v1", "--new", "v3", "--no-benchmark",
                     "--signals", str(signals), "--out", str(root / "production"))
    assert result.returncode == 0, result.stderr
    runs["production"] = root / "production"
    return runs


APP_PAGES = ("runs", "overview", "latency", "ops", "signals", "drift", "fix", "new")


def walk_app_pages(runs: Path, run: str, monkeypatch) -> dict[str, str]:
    """Open the app (AppTest) on `runs` with `run` picked and click through every page in the sidebar, as a user
    does; each must render without an exception or an error box. Returns each page's text (Markdown escapes
    dropped) for the caller's checks."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DIAGNOSE_APP_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    at.query_params["page"], at.query_params["run"] = "runs", run
    at.run()
    shown = {}
    for page in APP_PAGES:
        if page != "runs":
            title = next(t for t in at.sidebar.radio(key="page").options if t.lower().startswith(page[:3]))
            at.sidebar.radio(key="page").set_value(title).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.query_params["page"] in (page, [page])
        parts = [e.value for kind in ("markdown", "text", "caption", "header", "subheader", "code", "info")
                 for e in getattr(at, kind)]
        parts += [f"{m.label} {m.value}" for m in at.metric] + [e.label for e in at.expander]
        shown[page] = "\n".join(str(p) for p in parts).replace("\\", "")
    return shown
