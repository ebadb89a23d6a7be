"""Keep libraries' output off the user's terminal: stderr holds the progress bars and the tool's own lines.

Two levels, because libraries talk at two levels:

- `quiet_libraries()`: Python-level chatter while a block runs: `warnings` (transformers' FutureWarnings,
  TracerWarnings), `logging` below ERROR (transformers' "[transformers] ..." advice, ONNX Runtime's quantizer
  advice, torch.onnx's registry warnings), and transformers' "Loading weights" bar when transformers is loaded.
- `FdCapture`: what C/C++ code writes straight to file descriptors 1 and 2 (Kineto's `USDT: ... profiler_start`,
  ONNX Runtime's C++ warnings), which neither `warnings` nor replacing `sys.stderr` reaches. The descriptors
  point at a temporary file while the block runs; afterwards the lines the `noise` predicate picks are dropped
  and everything else is written back, so a real error still reaches the terminal (a little late), and a
  progress bar's redraws (segments ended by "\\r", not by a newline) always do.

Keep an `FdCapture` window short (around a profiler's start and stop, an export): a progress bar that ticks
inside it freezes until the window closes. `DIAGNOSE_LIBRARY_OUTPUT=1` turns both off, to see what a library says.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Callable

# Kineto's info-level lines, glog style: "USDT:2026-12-02 02:29:08 4134:4134 SyncActivityProfilerHandler.cpp:52] profiler_start".
# Its WARNING:/ERROR: lines are kept: on a GPU they say why a trace has no kernels.
KINETO_NOISE = re.compile(r"^(?:USDT|STAGE|INFO):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \S+:\d+\] ")
_SEGMENTS = re.compile(rb"(?<=\n)|(?<=\r)(?!\n)")  # split after "\n", and after a "\r" that does not start "\r\n"


def library_output_shown() -> bool:
    return os.environ.get("DIAGNOSE_LIBRARY_OUTPUT", "0") not in ("", "0", "false", "no")


def kineto_noise(segment: str) -> bool:
    """Kineto's profiler_start/stop and stage lines."""
    return bool(KINETO_NOISE.search(segment.lstrip("\r")))


def every_line(segment: str) -> bool:
    """Every complete line (a library's chatter during an export or a quantization); bar redraws still pass."""
    return segment.endswith("\n")


@contextmanager
def quiet_libraries():
    """Silence warnings, logging below ERROR, and transformers' progress bars while the block runs."""
    if library_output_shown():
        yield
        return
    previous = logging.root.manager.disable
    transformers_logging = None
    if "transformers" in sys.modules:  # never import it here: loading transformers takes seconds
        try:
            from transformers.utils import logging as transformers_logging
        except Exception:  # noqa: BLE001 - an odd transformers build: its bar then shows, nothing worse
            transformers_logging = None
    bar_was_on = bool(transformers_logging and transformers_logging.is_progress_bar_enabled())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(max(previous, logging.WARNING))
        if bar_was_on:
            transformers_logging.disable_progress_bar()
        try:
            yield
        finally:
            logging.disable(previous)
            if bar_was_on:
                transformers_logging.enable_progress_bar()


def _flush() -> None:
    """Python's buffered streams and C stdio's, so what was written before a switch lands on the right side of it."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - no libc to ask (not Linux/macOS): Python's own flush is all there is
        pass


class FdCapture:
    """Point file descriptors (default: 2) at a temporary file while a `with` block runs; then drop the segments
    `noise` picks and write the rest back. One instance may be entered many times (not nested); `dropped` and
    `kept` gather what each window held, as text."""

    def __init__(self, noise: Callable[[str], bool] = kineto_noise, fds: tuple[int, ...] = (2,)):
        self.noise = noise
        self.fds = fds
        self.dropped: list[str] = []
        self.kept: list[str] = []
        self._open: list[tuple[int, int, object]] = []

    def __enter__(self) -> FdCapture:
        if self._open:
            raise RuntimeError("FdCapture is already capturing")
        if library_output_shown():
            return self
        _flush()
        for fd in self.fds:
            try:
                saved = os.dup(fd)
            except OSError:  # the descriptor is closed: nothing reaches a terminal through it anyway
                continue
            spool = tempfile.TemporaryFile()
            os.dup2(spool.fileno(), fd)
            self._open.append((fd, saved, spool))
        return self

    def __exit__(self, *exc) -> bool:
        _flush()
        opened, self._open = self._open, []
        for fd, saved, spool in opened:
            os.dup2(saved, fd)
            os.close(saved)
            spool.seek(0)
            data = spool.read()
            spool.close()
            keep = []
            for segment in _SEGMENTS.split(data):
                if not segment:
                    continue
                text = segment.decode("utf-8", errors="replace")
                if self.noise(text):
                    self.dropped.append(text.rstrip("\r\n"))
                else:
                    keep.append(segment)
                    if text.strip():
                        self.kept.append(text.rstrip("\r\n"))
            if keep:
                _write_all(fd, b"".join(keep))
        return False


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the terminal went away: nothing left to tell
        pass


@contextmanager
def quiet(noise: Callable[[str], bool] = every_line, fds: tuple[int, ...] = (1, 2)):
    """Both levels at once: Python-level chatter silenced, C-level output filtered through `noise`."""
    with quiet_libraries(), FdCapture(noise, fds) as capture:
        yield capture
