"""`diagnose app`: start the Streamlit app (app/main.py) as a child process and say where it is.

Streamlit runs in its own process (`python -m streamlit run`), as it is meant to, with the runs folder passed in
$DIAGNOSE_APP_RUNS. Its own banner and log lines go to a log file, not the terminal: the terminal gets one line
when the server answers its health check, and the server's last line if it dies before that (a port in use).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from diagnose.core.errors import UserError

READY_TIMEOUT_S = 60.0


def app_script() -> Path:
    """app/main.py, found without importing the app (diagnose/ sits below app/ in the layers)."""
    spec = importlib.util.find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the app package is not installed; reinstall diagnose (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))) / "main.py"


# Streamlit imports the app's script on the first page view; importing the heavy libraries it needs (pandas, scipy,
# pyarrow, altair: about 2 s) before the server starts moves that cost out of the first render, which measured
# 7.5-8.1 s cold without it and 3.2-4.5 s with it on a busy 2-core machine (benchmarks/app_render.py).
# The newest run's Report is built meanwhile, in a thread (app.data.warm), into the cache the pages read: the
# overview a user opens first is then drawn without waiting for its analysis. (This names the app's module as
# the command names its script; nothing in diagnose/ imports the app.)
PRELOAD = ("import os, signal, sys, threading; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "import diagnose.analysis, altair, pyarrow.parquet, scipy.stats; from pathlib import Path; "
           "import app.data, app.views; "
           "threading.Thread(target=app.data.warm, args=(Path(os.environ['DIAGNOSE_APP_RUNS']),), daemon=True).start(); "
           "from streamlit.web.cli import main; sys.argv[0] = 'streamlit'; sys.exit(main())")


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-c", PRELOAD, "run", str(app_script()),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--logger.level", "error"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def start(runs_dir: Path, host: str, port: int, log: Path) -> subprocess.Popen:
    """The Streamlit server as a child (its output into `log`), serving the runs under `runs_dir`."""
    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the app needs Streamlit: pip install 'streamlit>=1.30'")
    env = {**os.environ, "DIAGNOSE_APP_RUNS": str(runs_dir.resolve()), "DIAGNOSE_PROGRESS": "0"}
    with open(log, "wb") as out:
        return subprocess.Popen(streamlit_command(host, port), stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)


def wait_ready(child: subprocess.Popen, host: str, port: int, log: Path, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until the server answers /_stcore/health; a child that exits first is one line from its log."""
    probe = _url("127.0.0.1" if host in ("0.0.0.0", "::") else host, port) + "/_stcore/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            raise UserError(f"the app server stopped at start (exit {child.returncode}): "
                            f"{lines[-1].strip() if lines else 'no output'}", key=f"--port {port}")
        try:
            with urllib.request.urlopen(probe, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    child.terminate()
    raise UserError(f"the app server did not answer within {timeout_s:.0f} s (its log: {log})")


def serve(runs_dir: Path, host: str, port: int) -> int:
    """Start, say where, wait until Ctrl-C (exit 0) or the server's own end (its exit code)."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError("not a folder", runs_dir)
    if not is_loopback(host):
        print(f"diagnose: warning: the app has no authentication: anyone who can reach {host}:{port} can read "
              "these runs and start compares", file=sys.stderr)
    log = Path(tempfile.mkdtemp(prefix="diagnose-app-")) / "streamlit.log"
    child = start(runs_dir, host, port, log)
    # a SIGTERM (kill, systemd, docker stop) ends this process through `finally` too, so the server goes with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        wait_ready(child, host, port, log)
        print(f"diagnose app: {_url(host, port)} (runs in {runs_dir.resolve()}); Ctrl-C stops it", flush=True)
        return child.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
