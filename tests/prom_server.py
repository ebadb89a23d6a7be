"""A real Prometheus serving a recorded OpenMetrics file, for testing the live collector end to end.

    with PromServer([Path("fixtures/signals/prometheus/throttled.om")], tmp_path) as prom:
        PrometheusCollector(prom.url, ...).collect()

`start()` backfills each file with `promtool tsdb create-blocks-from openmetrics FILE DATA_DIR` (which also
checks that the file is one promtool takes), then runs

    prometheus --config.file=<empty> --storage.tsdb.path=DATA_DIR --web.listen-address=127.0.0.1:<free port>
               --storage.tsdb.retention.time=100y

and waits for `/-/ready` (a bounded loop: `ready_timeout_s`). An empty config means no scraping, so only the
backfilled blocks are there. Time-based retention is measured from the newest block, not the wall clock, so
recorded data of any age stays queryable; the long retention is belt and braces. `stop()` (or leaving the
`with` block) terminates the process and waits for it, killing it after `stop_timeout_s`.

`prometheus_servers(tmp_path_factory)` (the generator behind conftest.py's `prom` fixture) starts one server
per file set on demand and stops them all at the end of the module, also when a test fails. Tests using it are
skipped (with the reason) where `prometheus` or `promtool` is not on PATH (Debian/Ubuntu: `apt-get install
prometheus`, which ships both).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
BACKFILL_TIMEOUT_S = 60.0


def missing_binaries() -> list[str]:
    return [b for b in ("prometheus", "promtool") if shutil.which(b) is None]


def skip_reason() -> str | None:
    missing = missing_binaries()
    if missing:
        return (f"{' and '.join(missing)} not installed (apt-get install prometheus, or put the release's "
                "binaries on PATH)")
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backfill(om_file: Path, data_dir: Path, timeout_s: float = BACKFILL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """promtool tsdb create-blocks-from openmetrics; raises RuntimeError with promtool's output on failure."""
    done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om_file), str(data_dir)],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"promtool refused {om_file} (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


class PromServer:
    def __init__(self, om_files, workdir: Path, *, ready_timeout_s: float = READY_TIMEOUT_S):
        self.om_files = [Path(f) for f in om_files]
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.config = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.backfill_s = 0.0
        self.start_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> PromServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("# no scrape jobs: only the backfilled blocks\n")
        t0 = time.monotonic()
        for f in self.om_files:
            backfill(f, self.data_dir)
        self.backfill_s = time.monotonic() - t0
        t0 = time.monotonic()
        for _attempt in range(3):  # the free port may be taken between choosing it and binding it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    ["prometheus", f"--config.file={self.config}", f"--storage.tsdb.path={self.data_dir}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=100y",
                     "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                self.start_s = time.monotonic() - t0
                return self
            self.stop()
            if "address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"prometheus did not become ready within {self.ready_timeout_s:g} s; its log:\n"
                           f"{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> PromServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def prometheus_servers(tmp_path_factory):
    """Generator behind the `prometheus_server` fixture: yields `start(*om_files) -> PromServer` (one running
    Prometheus per file set, started on first use) and stops every server it started when resumed, also
    after a failing test. Skips (with the reason) where prometheus or promtool is missing."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    servers: dict[tuple, PromServer] = {}

    def start(*om_files) -> PromServer:
        key = tuple(str(Path(f).resolve()) for f in om_files)
        if key not in servers:
            server = PromServer(om_files, tmp_path_factory.mktemp("prometheus"))
            servers[key] = server  # registered first, so a half-started server is stopped too
            server.start()
        return servers[key]

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


