"""Trace files: finding them under a folder, checking one before a parse, opening it (gzip or plain).

Every problem with the file itself (missing, a folder, empty, unreadable, nested too deep) is a `TraceError`
naming the file, so the CLI prints one line and the user never needs a traceback to see which trace is wrong.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

from diagnose.core.errors import UserError
from profilers.json_scan import MAX_DEPTH, scan

_TRACE_SUFFIXES = (".json", ".json.gz")
_RANK_IN_NAME = re.compile(r"(?:^|[^a-z0-9])rank[-_]?(\d+)(?![0-9])", re.IGNORECASE)
_DIST_INFO = re.compile(rb'"distributedInfo"\s*:\s*')
_EVENTS_KEY = b'"traceEvents"'
_HEADER_BYTES = 4 << 20  # the most of a trace read to find its rank: Kineto writes the header (a few KB) first


class TraceError(UserError):
    """A trace file that cannot be read: the message names the file and what is wrong."""


def find_trace_files(path) -> list[Path]:
    """`path` itself if it is a file; if a folder, every *.json / *.json.gz below it (sorted)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise TraceError("no such file or folder", path=p)
    if not p.is_dir():
        raise TraceError("not a file or folder", path=p)
    found = [f for f in p.rglob("*") if f.is_file() and f.name.endswith(_TRACE_SUFFIXES)]
    return sorted(found)


def rank_in_name(path) -> int | None:
    """The rank a trace's file name gives, as per-rank profiles are named ("rank-3.Jul_15.pt.trace.json.gz",
    "trace_rank_3.json"); None when the name holds none."""
    m = _RANK_IN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def header_rank(path: Path) -> int | None:
    """`distributedInfo.rank` from the top of a trace, read before the event array without parsing the events
    (at most a few MiB of it); None when the header holds no rank there (no distributedInfo, or it comes after
    the events: then only a full parse finds it). Never raises for a bad file: the parse will word that."""
    try:
        fh, raw, _ = open_trace(path, limit_depth=False)
    except TraceError:
        return None
    try:
        head = b""
        while len(head) < _HEADER_BYTES:
            chunk = fh.read(64 << 10)
            if not chunk:
                break
            head += chunk
            if _EVENTS_KEY in head:
                break
    except (OSError, EOFError):
        return None
    finally:
        close_trace(fh, raw)
    cut = head.find(_EVENTS_KEY)
    m = _DIST_INFO.search(head, 0, cut if cut >= 0 else len(head))
    if not m:
        return None
    try:
        info, _ = json.JSONDecoder().raw_decode(head[m.end():].decode("utf-8", "replace"))
    except ValueError:
        return None
    rank = info.get("rank") if isinstance(info, dict) else None
    if type(rank) is int:
        return rank
    return int(rank) if isinstance(rank, str) and rank.strip().isdigit() else None


def check_trace_file(path: Path) -> None:
    """TraceError unless `path` is a non-empty file: checked before either reader opens it."""
    if path.is_dir():
        raise TraceError("is a folder, not a trace file", path=path)
    if not path.exists():
        raise TraceError("file not found", path=path)
    try:
        if path.stat().st_size == 0:
            raise TraceError("empty file", path=path)
    except OSError as e:
        raise TraceError(f"cannot read: {e.strerror or e}", path=path) from None


class _DepthLimited:
    """The decoded stream, refusing JSON nested deeper than `MAX_DEPTH` as it is read, before the ijson reader
    parses it, so that it never spends quadratic time on one. Costs one vectorized scan of every byte (~0.2 s
    for 33 MiB of JSON), which is why the fast path goes without it: orjson parses nesting in linear time and
    stops at its own limit (1024 levels), where the fast path gives up and the ijson path refuses the file."""

    __slots__ = ("_fh", "_path", "_pos", "_state")

    def __init__(self, fh, path: Path):
        self._fh, self._path = fh, path
        self._pos = 0
        self._state = (False, 0, 0)  # the scanner's: inside a string, pending backslashes, bracket depth

    def read(self, n: int = -1) -> bytes:
        b = self._fh.read(n)
        if b:
            (at, _, depths), self._state = scan(np.frombuffer(b, dtype=np.uint8), *self._state)
            deep = np.flatnonzero(depths > MAX_DEPTH)
            if len(deep):
                where = self._pos + int(at[deep[0]])
                raise TraceError(f"JSON nested deeper than {MAX_DEPTH} levels near byte {where:,} of the decoded "
                                 "stream (Kineto writes 6 at most)", path=self._path)
            self._pos += len(b)
        return b

    def close(self) -> None:
        self._fh.close()


def open_trace(path: Path, limit_depth: bool = True):
    """Open `path` for binary reading, through gzip when it starts with the gzip magic bytes.

    Returns (the decoded stream, refusing too deep nesting when `limit_depth`; the file under it; whether it is
    gzip); `close_trace` closes both.
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise TraceError("file not found", path=path) from None
    except IsADirectoryError:
        raise TraceError("is a folder, not a trace file", path=path) from None
    except OSError as e:
        raise TraceError(f"cannot open: {e.strerror or e}", path=path) from None
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise TraceError(f"cannot read: {e.strerror or e}", path=path) from None
    gz = magic == b"\x1f\x8b"
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
    return (_DepthLimited(stream, path) if limit_depth else stream), raw, gz


def close_trace(fh, raw) -> None:
    """Close what `open_trace` opened, quietly: a reader closing after an error has already reported it."""
    for f in (fh, raw):
        try:
            f.close()
        except Exception:  # closing a broken gzip stream can raise again; nothing left to report
            pass
