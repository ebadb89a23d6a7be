"""Compares started from the app: each one a `python -m diagnose compare` child process that the page only watches.

A child process, not a thread of the server: a compare takes the CPU, sets torch's thread counts and turns SIGTERM
into an interrupt, none of which belongs in a Streamlit server; and as a child it is exactly the CLI, so cancelling
it is a Ctrl-C (SIGINT) and leaves the run folder marked INCOMPLETE with the reason, as on a terminal. Its output
(the progress bars, forced on with DIAGNOSE_PROGRESS=1, then the summary or the one error line) goes to
`<runs>/.jobs/<run name>.log`, outside the run folder, which must be new or empty when the compare starts; a dot
folder holds no run.json, so the runs listing skips it.

The jobs are kept in this module for the life of the server process, so they survive page reruns and every browser
session sees the same list.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.core.errors import UserError, first_line
from diagnose.core.runfolder import RunFolder, new_dir

JOBS_DIR = ".jobs"
RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"
SIGINT_GRACE_S = 15.0  # a compare answers Ctrl-C within a batch; one that does not is sent SIGTERM, then killed
SIGTERM_GRACE_S = 5.0
TAIL_BYTES = 16384  # the end of a log holds the current progress line and the error line


@dataclass(frozen=True)
class JobOptions:
    """What the form asks; an empty registry, model or signals means the CLI's default (no such option given)."""

    old: str
    new: str
    registry: str = ""
    model: str = ""
    budget_s: float = 30.0
    signals: str = ""


def validate(options: JobOptions) -> JobOptions:
    """The options with surrounding blanks dropped, or a UserError naming the one field to fix: the compare's own
    checks would say the same, but only after the page had started a process and listed a job for nothing."""
    fields = {name: str(getattr(options, name)).strip() for name in ("old", "new", "registry", "model", "signals")}
    for name, label in (("old", "old version"), ("new", "new version")):
        if not fields[name]:
            raise UserError(f"{label}: give a version, e.g. {'v1' if name == 'old' else 'v2'}")
    for name, value in fields.items():
        if "\0" in value:
            raise UserError(f"{name}: must not contain a NUL byte")
    if not isinstance(options.budget_s, (int, float)) or not math.isfinite(options.budget_s) or options.budget_s <= 0:
        raise UserError(f"budget: must be a positive number of seconds, got {options.budget_s}")
    for name, label in (("registry", "registry folder"), ("signals", "signals folder")):
        if fields[name] and not Path(fields[name]).is_dir():
            raise UserError(f"{label} not found: {fields[name]}")
    return JobOptions(budget_s=float(options.budget_s), **fields)


# `python -m diagnose`, with Ctrl-C's handler put back first: a process started with SIGINT ignored (a shell's
# background job: `diagnose app &`, a test runner under nohup) passes that on to its children, and Python then
# leaves it ignored, so Cancel would wait for the SIGTERM escalation instead of interrupting at once.
CLI = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "runpy.run_module('diagnose', run_name='__main__', alter_sys=True)")


def compare_argv(options: JobOptions, out: Path) -> list[str]:
    """The CLI call; `--opt=value`, so a value that starts with a dash is never read as an option."""
    argv = [sys.executable, "-c", CLI, "compare", f"--old={options.old}", f"--new={options.new}",
            f"--budget={options.budget_s:g}", f"--out={out}"]
    if options.registry:
        argv.append(f"--registry={Path(options.registry).resolve()}")
    if options.model:
        argv.append(f"--model={options.model}")
    if options.signals:
        argv.append(f"--signals={Path(options.signals).resolve()}")
    return argv


def progress_line(text: str) -> str:
    """The last thing the compare drew: progress bars redraw one line with `\\r` and clear it with blanks when done,
    so this is the last non-blank piece between carriage returns and newlines, its runs of blanks made one."""
    for piece in reversed(re.split(r"[\r\n]", text)):
        if piece.strip():
            return " ".join(piece.split())
    return ""


def error_line(text: str) -> str:
    """The CLI's own last word on a failure (`diagnose: error: ...`, `diagnose: internal error: ...`,
    `diagnose: interrupted ...`), or "" when it printed none."""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip().startswith("diagnose: ")]
    return lines[-1] if lines else ""


@dataclass(eq=False)
class Job:
    """One compare started from the app. A watcher thread reaps the child as soon as it ends, so the end time is
    exact and no zombie is left whether or not a page is looking."""

    name: str
    root: Path
    options: JobOptions
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    cancel_requested: bool = False
    _done: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        threading.Thread(target=self._watch, name=f"job-{self.name}", daemon=True).start()

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def _watch(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()
        try:  # a compare stopped before its first write (a bad version, an early cancel) leaves its folder empty
            self.folder.rmdir()
        except OSError:
            pass
        self._done.set()

    def state(self) -> str:
        if not self._done.is_set():
            return RUNNING
        if self.process.returncode == 0:
            return FINISHED
        return CANCELLED if self.cancel_requested else FAILED

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self._done.is_set() else None

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def _tail(self) -> str:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - TAIL_BYTES))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def progress_line(self) -> str:
        return progress_line(self._tail())

    def error_line(self) -> str:
        """Why it failed: the CLI's error line, else how the process ended."""
        found = error_line(self._tail())
        code = self.returncode
        if found or code is None:
            return found
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code} and no message"

    def incomplete(self) -> str | None:
        """The reason the run folder's INCOMPLETE marker holds, once the job has ended."""
        if not self._done.is_set():
            return None
        return RunFolder(self.folder).incomplete()

    def has_run(self) -> bool:
        return (self.folder / RunFolder.RUN).is_file()

    def cancel(self) -> None:
        """SIGINT, as Ctrl-C: the compare marks its folder INCOMPLETE and exits. Escalated in the background (SIGTERM,
        which the compare also treats as an interrupt, then SIGKILL) if it does not end in time."""
        if self._done.is_set() or self.cancel_requested:
            return
        self.cancel_requested = True
        self.process.send_signal(signal.SIGINT)
        threading.Thread(target=self._escalate, name=f"cancel-{self.name}", daemon=True).start()

    def _escalate(self) -> None:
        if not self._done.wait(SIGINT_GRACE_S):
            self.process.terminate()
            if not self._done.wait(SIGTERM_GRACE_S):
                self.process.kill()


_JOBS: list[Job] = []
_LOCK = threading.Lock()


def start(root: Path, options: JobOptions) -> Job:
    """Validate, reserve a run folder named as the CLI names one, and start the compare into it. One compare at a
    time per server: two at once would slow each other down, and each would measure the other's load."""
    options = validate(options)
    root = Path(root).resolve()
    with _LOCK:
        busy = next((job for job in _JOBS if job.state() == RUNNING), None)
        if busy is not None:
            raise UserError(f"a compare is already running ({busy.name}); wait for it or cancel it, as two at once "
                            "would measure each other")
        folder = _reserve(root, f"{options.model or 'default'}-{options.old}-vs-{options.new}")
        log = root / JOBS_DIR / f"{folder.name}.log"
        try:
            log.parent.mkdir(exist_ok=True)
            with open(log, "wb") as out:
                process = subprocess.Popen(compare_argv(options, folder), stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env={**os.environ, "DIAGNOSE_PROGRESS": "1"})
        except OSError as exc:
            folder.rmdir()
            raise UserError(f"cannot start the compare: {first_line(exc)}", log) from None
        job = Job(name=folder.name, root=root, options=options, process=process, log=log)
        _JOBS.append(job)
    return job


def _reserve(root: Path, label: str) -> Path:
    """An empty run folder named as the CLI names one, made here rather than by the child, so that its name is
    known to the page from the start and a second compare of the same second gets another."""
    while True:
        folder = new_dir(root, label)
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create a run folder: {first_line(exc)}", folder) from None


def listed(root: Path) -> list[Job]:
    """The jobs this server started into `root`, newest first."""
    root = Path(root).resolve()
    with _LOCK:
        return [job for job in reversed(_JOBS) if job.root == root]


@atexit.register
def _interrupt_running() -> None:
    """A compare does not outlive the server that started it: it is interrupted as by Ctrl-C, its folder marked."""
    for job in _JOBS:
        if job.state() == RUNNING:
            job.process.send_signal(signal.SIGINT)
