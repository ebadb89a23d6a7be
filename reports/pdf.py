"""report.pdf: report.html printed on A4 by a headless Chromium (the page's own `@page` rules lay it out).

The browser is `$DIAGNOSE_CHROMIUM` (a path or a name on PATH), else the first of `chromium`, `chromium-browser`,
`google-chrome` on PATH. It prints a copy of the HTML from a temporary folder, with its profile in that folder,
under a time limit; its own stderr chatter is kept from the terminal and shown only in the error when it fails.
The HTML loads nothing (its Content-Security-Policy forbids it), so printing needs no network.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from diagnose.core.errors import UserError

ENV = "DIAGNOSE_CHROMIUM"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60
NO_BROWSER = "PDF needs a headless Chromium: apt-get install chromium, or set DIAGNOSE_CHROMIUM to its path"


def find_chromium() -> str | None:
    """The browser to print with: $DIAGNOSE_CHROMIUM, else the first of BROWSERS on PATH; None when none is.
    A DIAGNOSE_CHROMIUM that names nothing runnable is an error, not a reason to pick another browser."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise UserError(f"{ENV}={chosen!r} is not an executable; {NO_BROWSER}")
        return found
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def chromium_command(browser: str, workdir: Path, *action: str) -> list[str]:
    """The headless command line that opens a page in `workdir`'s own profile and does `action` (e.g.
    `--print-to-pdf=OUT` or `--screenshot=OUT`); the page's URL goes last."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--disable-breakpad",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={workdir / 'profile'}", *action]


def run_chromium(command: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a headless Chromium in its own process group: its output captured (never on the terminal), and on a
    timeout the whole group it started (renderer, GPU and zygote processes) killed."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise UserError(f"{Path(command[0]).name} did not finish printing the report within {timeout:g} s") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _tail(stderr: bytes, lines: int = 3) -> str:
    text = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:]) or "no output"


def render(report) -> bytes:
    from reports import html

    browser = find_chromium()
    if browser is None:
        raise UserError(NO_BROWSER)
    page = html.render(report)
    with tempfile.TemporaryDirectory(prefix="diagnose-pdf-") as tmp:
        workdir = Path(tmp)
        source, target = workdir / "report.html", workdir / "report.pdf"
        source.write_text(page, encoding="utf-8")
        command = chromium_command(browser, workdir, "--no-pdf-header-footer", "--print-to-pdf-no-header",
                                   f"--print-to-pdf={target}", source.as_uri())
        result = run_chromium(command)
        data = target.read_bytes() if target.exists() else b""
    if not data.startswith(b"%PDF"):
        raise UserError(f"{Path(browser).name} printed no PDF (exit {result.returncode}): {_tail(result.stderr)}")
    return data
