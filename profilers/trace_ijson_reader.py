"""The ijson path of the trace reader: yajl2_c builds one event dict at a time; it reads every trace and
words every error.

It is the fallback of the fast reader (`trace_fast_reader`), which leaves to it whatever it does not read
(malformed JSON, an unusual layout, integers beyond 64 bits), so that a bad file gets this path's one clear
sentence ("invalid JSON near byte 1,234 ...", "truncated gzip file ..."). Top-level metadata
(`deviceProperties`, `distributedInfo`, `schemaVersion`, ...) is read by a short token-level pass that stops
where `traceEvents` begins (Kineto writes it first); keys written after the event array are recovered from the
last bytes of the stream. Speed: ~1.8 s for 33 MiB of JSON (109k events) on a slow 2-core machine, yajl
building each event dict about two thirds of it.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

import ijson

from profilers.trace_columns import Columns
from profilers.trace_files import TraceError, close_trace, open_trace
from profilers.trace_table import HEADER_KEYS

try:  # the C backend (yajl2_c) explicitly: ijson's default would quietly fall back to pure Python (~10x slower)
    _ijson = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - wheels ship the C backend on every common platform
    _ijson = ijson
IJSON_BACKEND = _ijson.backend

_TAIL_BYTES = 1 << 18  # how much of the end of the stream is kept to recover keys after traceEvents


class _Reader:
    """Byte stream wrapper: counts decoded bytes and keeps the last ones (for keys after traceEvents)."""

    __slots__ = ("_raw", "pos", "tail", "tail_start")

    def __init__(self, raw, keep_tail: bool = False):
        self._raw = raw
        self.pos = 0
        self.tail = bytearray() if keep_tail else None
        self.tail_start = 0  # stream offset of tail[0]

    def read(self, n: int = -1) -> bytes:
        b = self._raw.read(n)
        self.pos += len(b)
        tail = self.tail
        if tail is not None and b:
            tail += b
            if len(tail) > 2 * _TAIL_BYTES:
                cut = len(tail) - _TAIL_BYTES
                del tail[:cut]
                self.tail_start += cut
        return b


def _read_error(path: Path, exc: BaseException, reader: _Reader | None, gz: bool) -> TraceError:
    """Turn a decoding/parsing exception into one clear TraceError sentence."""
    at = f" near byte {reader.pos:,} of the decoded stream" if reader is not None and reader.pos else ""
    if isinstance(exc, EOFError):
        return TraceError(f"truncated gzip file (compressed data ends early{at}): {exc}", path=path)
    if isinstance(exc, zlib.error):
        return TraceError(f"truncated or corrupt gzip data{at}: {exc}", path=path)
    if isinstance(exc, gzip.BadGzipFile):
        return TraceError(f"corrupt gzip file{at}: {exc}", path=path)
    if isinstance(exc, ijson.JSONError):
        text = str(exc)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        first = lines[0] if lines else "parse error"
        snippet = ""
        if len(lines) >= 2 and "(right here)" not in lines[1]:
            snippet = f" at ...{lines[1][-60:]!r}"
        hint = ""
        if "premature EOF" in first:
            hint = " (the file ends in the middle of the JSON: truncated?)"
            if gz:
                hint = " (the decompressed JSON ends early: truncated gzip?)"
        return TraceError(f"invalid JSON{at}: {first}{snippet}{hint}", path=path)
    if isinstance(exc, UnicodeDecodeError):
        return TraceError(f"invalid text encoding{at}: {exc}", path=path)
    if isinstance(exc, OSError):
        return TraceError(f"cannot read{at}: {exc.strerror or exc}", path=path)
    return TraceError(f"cannot parse trace{at}: {type(exc).__name__}: {exc}", path=path)


_READ_ERRORS = (EOFError, zlib.error, OSError, ijson.JSONError, UnicodeDecodeError, ValueError)


def _read_header(path: Path) -> tuple[str, dict]:
    """Token-level pass over the start of the file, stopping where the event array begins.

    Returns (layout, header): layout is "object" (events under "traceEvents") or "array" (a bare
    top-level array of events); header holds the top-level keys seen before traceEvents.
    """
    fh, raw, gz = open_trace(path)
    reader = _Reader(fh)
    header: dict = {}
    n_tokens = 0
    try:
        key = None
        builder = None
        depth = 0
        for prefix, event, value in _ijson.parse(reader, use_float=True):
            n_tokens += 1
            if n_tokens == 1:
                if event == "start_array":
                    return "array", header
                if event != "start_map":
                    kind = {"string": "a string", "number": "a number", "boolean": "a boolean",
                            "null": "null"}.get(event, event)
                    raise TraceError(f"top level of the JSON is {kind}, not an object with a 'traceEvents' "
                                     "array (or an array of events)", path=path)
                continue
            if builder is not None:  # inside the value of a top-level key we keep
                builder.event(event, value)
                if event in ("start_map", "start_array"):
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if depth == 0:
                    header[key] = builder.value
                    builder = None
                continue
            if prefix == "" and event == "map_key":
                key = value
                continue
            if prefix == "" and event == "end_map":
                break  # end of the top-level object without traceEvents
            if key == "traceEvents" and prefix == "traceEvents":
                if event == "start_array":
                    return "object", header
                raise TraceError("'traceEvents' is not an array", path=path)
            if prefix == key and key in HEADER_KEYS:
                if event in ("start_map", "start_array"):
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    depth = 1
                else:
                    header[key] = value
            # any other key: its tokens are skipped
    except TraceError:
        raise
    except _READ_ERRORS as e:
        if n_tokens == 0 and isinstance(e, ijson.JSONError) and "premature EOF" in str(e):
            raise TraceError("empty file (no JSON in it)", path=path) from None
        raise _read_error(path, e, reader, gz) from None
    finally:
        close_trace(fh, raw)
    raise TraceError("no 'traceEvents' array in the top-level JSON object", path=path)


def _read_trailer(tail: bytes) -> dict:
    """Top-level keys written after the traceEvents array, from the last bytes of the stream.

    `tail` starts somewhere before the end of the event array. The first `]` followed by `, "` whose
    remainder parses as the rest of an object is the end of traceEvents: any `]` inside an event leaves
    unbalanced braces behind it and fails to parse.
    """
    text = tail.decode("utf-8", errors="replace")
    for m in re.finditer(r"\]\s*,\s*\"", text):
        rest = "{" + text[m.end() - 1:]
        try:
            obj = json.loads(rest)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return {}


def read_ijson(path: Path, keep_python: bool) -> tuple[dict, dict, dict]:
    """The typed columns, their counts and the top-level metadata of the trace at `path`; TraceError for bad input."""
    layout, header = _read_header(path)
    cols, info, tail = _parse_events(path, "traceEvents.item" if layout == "object" else "item", keep_python)
    if layout == "object":
        missing = [k for k in HEADER_KEYS if k not in header]
        if missing and tail:
            try:
                trailer = _read_trailer(tail)
            except Exception:  # metadata after the events is optional: never fail the parse on it
                trailer = {}
            for k in missing:
                if k in trailer:
                    header[k] = trailer[k]
    return cols, info, header


def _parse_events(path: Path, prefix: str, keep_python: bool):
    """The streaming ijson pass: one event dict at a time into typed column arrays."""
    sink = Columns(keep_python)
    fh, raw, gz = open_trace(path)
    reader = _Reader(fh, keep_tail=(prefix != "item"))
    last_item_pos = 0

    def items():
        nonlocal last_item_pos
        for ev in _ijson.items(reader, prefix, use_float=True):
            last_item_pos = reader.pos
            yield ev

    try:
        sink.consume(items())
    except _READ_ERRORS as e:
        raise _read_error(path, e, reader, gz) from None
    finally:
        close_trace(fh, raw)

    tail = b""
    if reader.tail is not None:
        # the last event ended within the chunk read before it was yielded: start the search there
        start = max(0, last_item_pos - 65536 - reader.tail_start)
        tail = bytes(reader.tail[start:])
    cols, info = sink.result()
    return cols, info, tail
