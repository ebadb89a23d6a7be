"""The fast path of the trace reader: chunks of the decoded stream, whole runs of events parsed by one orjson call.

The stream is read `_CHUNK` bytes at a time, and each chunk's complete events are parsed with one orjson call
on the bytes themselves (cut at the last boundary between two events; the rest carries over to the next
chunk). Boundaries are guessed from the `}, {` between two events and checked by that parse (a cut inside an
event or a string cannot parse as an array); when the guess fails, or to find where the event array ends, the
vectorized scanner (`json_scan.scan`: string bounds from the unescaped quotes, brackets outside strings,
cumulative depth) finds them exactly. The events then go to the columns a batch at a time, a column at a time
(`Columns.consume_batch`). The keys before and after the event array are parsed from those bytes, kept aside
(at most `_SIDE_LIMIT`). Memory: a chunk, its parse (about ten times the chunk in the JSON parser,
transiently), a batch of event dicts (`_BATCH_BYTES` of JSON), and the columns.

Whatever this path does not read (malformed JSON, an unusual layout, integers beyond 64 bits, which yajl
rejects and orjson reads) it declines, and the ijson path (`trace_ijson_reader`) reads it again, wording every
error; both feed the same column builder, so the result is the same.

Speed (control.json.gz, 33 MiB of JSON, 109k events, on a slow 2-core machine): ~0.8 s against ~1.8 s for the
ijson path: orjson ~0.2 s and freeing its dicts ~0.1 s, the column batches ~0.35 s, decompression, the
big-integer check and the table ~0.05 s each. The nesting check of the ijson path (`trace_files`) is left out here
(it would scan every byte: 0.34 s -> 0.54 s): orjson parses nesting in linear time up to its own limit of 1024
levels and fails past it, and then the ijson path refuses the file. Guessing the cut spares a scan of every
chunk for finding the cuts. The cyclic garbage collector is paused during the parse (~0.1 s: it would
otherwise walk the event dicts again and again; nothing there forms a cycle).
"""

from __future__ import annotations

import gc
import json
import math
import re
from pathlib import Path

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; json is the (slower) stand-in
    orjson = None

from profilers.json_scan import CLOSE_ARRAY, COMMA, OPEN_ARRAY, has_big_int, scan
from profilers.trace_columns import Columns
from profilers.trace_files import close_trace, open_trace
from profilers.trace_table import HEADER_KEYS

_CHUNK = 1 << 16  # bytes of decoded JSON read (and parsed) at a time: the JSON parser's transient memory is
# about ten times its input
_BATCH_BYTES = 1 << 18  # JSON bytes of events gathered before they go to the columns (a call per batch)
_SIDE_LIMIT = 16 << 20  # most bytes of top-level JSON outside the event array (header, trailer) held at once
_SCAN_WINDOW = 1 << 16  # bytes scanned at a time while looking for the event array
_WS = b" \t\r\n"  # JSON whitespace
_WS_SET = frozenset(_WS)
_EVENTS_KEY = b'"traceEvents"'
_INF = math.inf


class _Decline(Exception):
    """The fast path does not read this file (malformed, or unusual): the ijson path reads it, or reports what
    is wrong with it."""


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(s: str) -> float:
    v = float(s)
    if v in (_INF, -_INF):
        raise ValueError("number out of range")
    return v


_LONE_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _json_loads(data):
    """The standard library's json as a stand-in for orjson.loads (slower), rejecting what yajl rejects."""
    text = bytes(data).decode("utf-8")
    if ("\\ud" in text or "\\uD" in text) and _LONE_SURROGATE.search(text):
        raise _Decline("a lone surrogate escape")  # yajl and json decode them differently
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


_loads = orjson.loads if orjson is not None else _json_loads


def _is_events_key(buf: bytearray, p: int) -> bool:
    """Whether the `[` at buf[p] opens the value of a top-level key "traceEvents" (`{` or `,`, then the key
    and a colon before it; the caller has checked that p is outside strings at depth 1)."""
    j = p
    while j and buf[j - 1] in _WS_SET:
        j -= 1
    if not j or buf[j - 1] != 0x3A:  # ':'
        return False
    j -= 1
    while j and buf[j - 1] in _WS_SET:
        j -= 1
    if not buf.endswith(_EVENTS_KEY, 0, j):
        return False
    j -= len(_EVENTS_KEY)
    while j and buf[j - 1] in _WS_SET:
        j -= 1
    return bool(j) and buf[j - 1] in (0x7B, 0x2C)  # '{' or ','


def _guess_cut(cb: bytearray, lo: int) -> int:
    """A likely boundary between two events in cb[lo:]: the comma of the last `}, {` (whitespace allowed after
    the comma), or -1. Only a guess: the caller checks it by parsing everything before it."""
    hi = len(cb)
    for _ in range(8):
        i = cb.rfind(b"},", lo, hi)
        if i < 0:
            return -1
        j = i + 2
        n = len(cb)
        while j < n and cb[j] in _WS_SET:
            j += 1
        if j < n and cb[j] == 0x7B:
            return i + 1
        hi = i + 1
    return -1


class _FastReader:
    """One pass over the decoded stream, `_CHUNK` bytes at a time, for the fast path (see the module docstring).

    The event array's content is kept in `cb` as "[" + the bytes not parsed yet; a run of complete events
    cb[1:cut] is parsed by one call on cb[:cut] + "]" (the separator at `cut` overwritten by "]", no copy).
    The cut is the last event boundary in the chunk: first guessed (`_guess_cut`, the `}, {` between two
    events) and accepted only if everything before it parses as a JSON array (a cut inside an event or a
    string cannot: it leaves a bracket or the string open); else found exactly by the vectorized scanner
    (`scan`), which also finds where the array ends. Every byte of the document is parsed once by the JSON
    parser, so anything malformed raises (and the ijson path then reports it)."""

    def __init__(self, fh, keep_python: bool):
        self.fh = fh
        self.sink = Columns(keep_python)
        self.header: dict = {}
        self.layout = None
        self.batch: list = []  # events parsed, not yet in the columns
        self.batch_bytes = 0

    def run(self) -> tuple[dict, dict, dict]:
        fh = self.fh
        buf = bytearray()
        while True:  # the first byte that is not whitespace: the layout
            chunk = fh.read(_CHUNK)
            if not chunk:
                raise _Decline("no JSON")
            buf += chunk
            start = len(buf) - len(buf.lstrip(_WS))
            if start < len(buf):
                break
            buf.clear()
        del chunk
        first = buf[start]
        if first == 0x5B:  # '['
            self.layout = "array"
            p = start
        elif first == 0x7B:  # '{'
            self.layout = "object"
            p = self._find_events_array(buf, start)
        else:
            raise _Decline("top level is not an object or an array")
        cb = bytearray(b"[")
        cb += memoryview(buf)[p + 1:]
        del buf
        suffix = self._events(cb)
        self._flush()
        self._trailer(suffix)
        cols, info = self.sink.result()
        return cols, info, self.header

    def _find_events_array(self, buf: bytearray, start: int) -> int:
        """Scan the top-level object for the key traceEvents with an array value; parse the keys before it."""
        state = (False, 0, 0)
        pos = start
        while True:
            while pos < len(buf):
                window = np.frombuffer(bytes(buf[pos:pos + _SCAN_WINDOW]), dtype=np.uint8)
                (at, cls, depths), state = scan(window, *state)
                for i in np.flatnonzero(((cls == OPEN_ARRAY) & (depths == 2)) | (depths <= 0)).tolist():
                    p = pos + int(at[i])
                    if depths[i] <= 0:
                        raise _Decline("the top-level object ends without a traceEvents array")
                    if _is_events_key(buf, p):
                        self._header(bytes(buf[:p]))
                        return p
                pos += len(window)
            if len(buf) > _SIDE_LIMIT:
                raise _Decline("no traceEvents array near the start")
            chunk = self.fh.read(_CHUNK)
            if not chunk:
                raise _Decline("no traceEvents array")
            buf += chunk

    def _header(self, prefix: bytes) -> None:
        if prefix.count(_EVENTS_KEY) != 1 or has_big_int(prefix):
            raise _Decline("unusual header")
        doc = _loads(prefix + b"[]}")
        self.header = {k: doc[k] for k in HEADER_KEYS if k in doc}

    def _emit(self, cb: bytearray, cut: int) -> bool:
        """Parse the events cb[1:cut] (cb[cut] is the separator, or the array's "]"), feed them to the columns.
        False if they do not parse (a wrong guess, or malformed JSON)."""
        saved = cb[cut]
        cb[cut] = 0x5D  # ']'
        try:
            with memoryview(cb) as mv, mv[:cut + 1] as region:
                try:
                    events = _loads(region)
                except ValueError:  # orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError
                    return False
                if has_big_int(region):
                    raise _Decline("an integer beyond 64 bits")
        finally:
            cb[cut] = saved
        self.batch += events
        self.batch_bytes += cut
        if self.batch_bytes >= _BATCH_BYTES:
            self._flush()
        return True

    def _flush(self) -> None:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self.sink.consume_batch(batch)

    def _events(self, cb: bytearray) -> bytearray:
        """The event array, from cb = "[" + the bytes after its "[". Returns the bytes after its "]"."""
        fh = self.fh
        # exact scanner state over cb[1:scanned], depths relative to the array's content
        scanned, state = 1, (False, 0, 0)
        search_from = 1  # where the guess looks from: bytes before it were searched already
        seen_separator = False
        eof = False
        while True:
            cut = _guess_cut(cb, search_from) if not eof else -1
            if cut > 0 and self._emit(cb, cut):
                seen_separator = True
                del cb[1:cut + 1]
                scanned, state = 1, (False, 0, 0)
            elif scanned < len(cb):
                a = np.frombuffer(bytes(memoryview(cb)[scanned:]), dtype=np.uint8)
                (at, cls, depths), state = scan(a, *state)
                del a
                end = np.flatnonzero(depths < 0)
                if len(end):  # the array's "]"
                    i = int(end[0])
                    if cls[i] != CLOSE_ARRAY:
                        raise _Decline("mismatched brackets")
                    e = scanned + int(at[i])
                    if cb[1:e].strip(_WS):
                        if not self._emit(cb, e):
                            raise _Decline("invalid JSON in the events")
                    elif seen_separator:
                        raise _Decline("a comma before ]")
                    return bytearray(memoryview(cb)[e + 1:])
                seps = np.flatnonzero((cls == COMMA) & (depths == 0))
                if len(seps):
                    s = scanned + int(at[seps[-1]])
                    if not cb[1:s].strip(_WS) or not self._emit(cb, s):
                        raise _Decline("invalid JSON in the events")
                    seen_separator = True
                    del cb[1:s + 1]
                    scanned = len(cb)  # the state is that of the end of cb
                else:
                    scanned = len(cb)
            if eof:
                raise _Decline("the event array does not end")
            search_from = max(1, len(cb) - 1)
            chunk = fh.read(_CHUNK)
            if chunk:
                cb += chunk
            else:
                eof = True
            del chunk

    def _trailer(self, suffix: bytearray) -> None:
        """The bytes after the event array: the rest of the top-level object (keys written after the events
        fill header keys not seen before them), or only whitespace after a bare array."""
        while True:
            chunk = self.fh.read(_CHUNK)
            if not chunk:
                break
            suffix += chunk
            if len(suffix) > _SIDE_LIMIT:
                raise _Decline("long trailer")
        if self.layout == "array":
            _loads(b"[]" + suffix)  # raises unless only whitespace follows
            return
        if _EVENTS_KEY in suffix or has_big_int(suffix):
            raise _Decline("unusual trailer")
        trailer = _loads(b'{"traceEvents":[]' + suffix)
        for k in HEADER_KEYS:
            if k not in self.header and k in trailer:
                self.header[k] = trailer[k]


def read_fast(path: Path, keep_python: bool) -> tuple[dict, dict, dict]:
    """The typed columns, their counts and the top-level metadata of the trace at `path`, as `read_ijson` gives
    them; raises (anything) where this path gives up."""
    fh, raw, _ = open_trace(path, limit_depth=False)  # orjson bounds nesting itself, in linear time
    enabled = gc.isenabled()
    gc.disable()  # the parse allocates millions of containers and frees them by reference counts, no cycles
    try:
        return _FastReader(fh, keep_python).run()
    finally:
        if enabled:
            gc.enable()
        close_trace(fh, raw)
