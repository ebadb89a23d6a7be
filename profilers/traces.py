"""Streaming reader for PyTorch Profiler (Kineto) Chrome-trace JSON files.

`read_trace(path)` parses a trace once into a normalized, columnar table (in the spirit of HTA's "parse
once into a normalized table") that the diff engine and the CLI work from.

Streaming: the JSON document is never held in memory, and neither is a list of all its event dicts (at most
a batch of them, a bounded number of bytes' worth); each kept event is reduced to primitives appended to
typed arrays (`array('d')`, `array('q')`, `array('i')`), and every string column is interned into a
dictionary of distinct values plus an int32 code per row. Memory is thus bounded by the number of kept
events times a few dozen bytes, not by the file size.

Two paths give the same result:

- The fast path (`_FastReader`, the default) reads the decoded stream in chunks of `_CHUNK` bytes and parses
  each chunk's complete events with one orjson call on the bytes themselves (cut at the last boundary
  between two events; the rest carries over to the next chunk). Boundaries are guessed from the `}, {`
  between two events and checked by that parse (a cut inside an event or a string cannot parse as an array);
  when the guess fails, or to find where the event array ends, a vectorized numpy scanner (`_scan`: string
  bounds from the unescaped quotes, brackets outside strings, cumulative depth) finds them exactly. The events
  then go to the columns a batch at a time, a column at a time (`_Columns.consume_batch`). The keys before
  and after the event array are parsed from those bytes, kept aside (at most `_SIDE_LIMIT`). Memory: a chunk,
  its parse (about ten times the chunk in the JSON parser, transiently), a batch of event dicts
  (`_BATCH_BYTES` of JSON), and the columns.
- The ijson path (yajl2_c) builds one event dict at a time (`_Columns.consume`). Top-level metadata
  (`deviceProperties`, `distributedInfo`, `schemaVersion`, ...) is read by a short token-level pass that stops
  where `traceEvents` begins (Kineto writes it first); keys written after the event array are recovered from
  the last bytes of the stream.

Whatever the fast path does not read (malformed JSON, an unusual layout, integers beyond 64 bits, which yajl
rejects and orjson reads) is read again by the ijson path, which also words every error. Both paths feed the
same column builder (`_Columns`), so the rows, codes, categories and counts are the same.

Speed (control.json.gz, 33 MiB of JSON, 109k events, on a slow 2-core machine): the ijson path ~1.8 s
(yajl building each event dict about two thirds of it); the fast path ~0.8 s: orjson ~0.2 s and freeing its
dicts ~0.1 s, the column batches ~0.35 s, decompression, the big-integer check and the table ~0.05 s each.
Scanning every chunk with the numpy scanner instead of guessing the cut would add ~0.5 s (pretty-printed
JSON has a quote every few bytes). The cyclic garbage collector is paused during the fast path (~0.1 s: it
would otherwise walk the event dicts again and again; nothing there forms a cycle). Nesting, steps and the
table are vectorized numpy.
"""

from __future__ import annotations

import gc
import gzip
import json
import marshal
import math
import re
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import eq, itemgetter
from pathlib import Path

import ijson
import numpy as np
import pandas as pd

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; json is the (slower) stand-in
    orjson = None

from diagnose.core.errors import UserError

try:  # the C backend (yajl2_c) explicitly: ijson's default would quietly fall back to pure Python (~10x slower)
    _ijson = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - wheels ship the C backend on every common platform
    _ijson = ijson
IJSON_BACKEND = _ijson.backend

CATEGORIES = ("cpu_op", "kernel", "runtime", "memcpy", "memset", "annotation", "gpu_annotation", "python", "other")

_CPU_OP, _KERNEL, _RUNTIME, _MEMCPY, _MEMSET, _ANNOTATION, _GPU_ANNOTATION, _PYTHON, _OTHER = range(len(CATEGORIES))
# categories whose events run on a CPU thread and nest on it (runtime calls are children of the op that
# made them, as in PyTorch's own self-CPU-time); the others run on a GPU stream and get no parent
_NESTING_CATS = (_CPU_OP, _ANNOTATION, _PYTHON, _RUNTIME)
_STEP_CATS = (_CPU_OP, _ANNOTATION)

_RAW_CATEGORY = {
    "cpu_op": _CPU_OP, "operator": _CPU_OP,
    "kernel": _KERNEL,
    "cuda_runtime": _RUNTIME, "runtime": _RUNTIME, "cuda_driver": _RUNTIME, "driver": _RUNTIME,
    "hip_runtime": _RUNTIME, "hip_driver": _RUNTIME,
    "gpu_memcpy": _MEMCPY, "memcpy": _MEMCPY,
    "gpu_memset": _MEMSET, "memset": _MEMSET,
    "user_annotation": _ANNOTATION, "record_param_comms": _ANNOTATION,
    "gpu_user_annotation": _GPU_ANNOTATION,
    "python_function": _PYTHON,
}

_NS_MEDIAN_THRESHOLD = 1e17  # a median ts above this is nanoseconds since the epoch, not microseconds
_INT64_MAX = 2**63 - 1
_INF = math.inf
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_TAIL_BYTES = 1 << 18  # how much of the end of the stream is kept to recover keys after traceEvents
_HEADER_KEYS = ("schemaVersion", "deviceProperties", "distributedInfo", "displayTimeUnit", "traceName",
                "baseTimeNanoseconds")
_TRACE_SUFFIXES = (".json", ".json.gz")


class TraceError(UserError):
    """A trace file that cannot be read: the message names the file and what is wrong."""


@dataclass
class Trace:
    path: str
    events: pd.DataFrame = field(repr=False)
    steps: pd.DataFrame = field(repr=False)
    metadata: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # the tables are too big to print
        return (f"Trace(path={self.path!r}, events={len(self.events)} rows, steps={len(self.steps)}, "
                f"vendor={self.metadata.get('device_vendor')!r}, rank={self.metadata.get('rank')!r})")


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


# ----------------------------------------------------------------------------------------------------
# input streams


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


def _open(path: Path):
    """Open `path` for binary reading, through gzip when it starts with the gzip magic bytes."""
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
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw, True
    return raw, raw, False


def _close(fh, raw) -> None:
    for f in (fh, raw):
        try:
            f.close()
        except Exception:  # closing a broken gzip stream can raise again; nothing left to report
            pass


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


# ----------------------------------------------------------------------------------------------------
# header (top-level keys before traceEvents)


def _read_header(path: Path) -> tuple[str, dict]:
    """Token-level pass over the start of the file, stopping where the event array begins.

    Returns (layout, header): layout is "object" (events under "traceEvents") or "array" (a bare
    top-level array of events); header holds the top-level keys seen before traceEvents.
    """
    fh, raw, gz = _open(path)
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
            if prefix == key and key in _HEADER_KEYS:
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
        _close(fh, raw)
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


# ----------------------------------------------------------------------------------------------------
# value helpers (rare paths: the common cases are inlined in the event loop)


def _as_int(v) -> int:
    """args.device/stream/correlation/External id as int64, -1 when absent or not an integer."""
    t = type(v)
    if t is int:
        return v if -_INT64_MAX <= v <= _INT64_MAX else -1
    if t is float:
        if v == v and abs(v) < 9.2e18 and v == int(v):
            return int(v)
        return -1
    if t is str:
        s = v.strip()
        try:
            i = int(s, 0)  # "7", "0x0"
        except ValueError:
            m = re.search(r"-?\d+$", s)  # "stream 7"
            if not m:
                return -1
            i = int(m.group())
        return i if -_INT64_MAX <= i <= _INT64_MAX else -1
    return -1


def _category_of(raw_cat) -> int:
    if not isinstance(raw_cat, str):
        return _OTHER
    low = raw_cat.strip().lower()
    c = _RAW_CATEGORY.get(low)
    if c is not None:
        return c
    if low.endswith("_runtime") or low.endswith("_driver"):  # xpu_runtime, privateuse1_driver, ...
        return _RUNTIME
    return _OTHER


def _label(k) -> str:
    if type(k) is str:
        return k
    if k is None:
        return ""
    if type(k) is float and k.is_integer():
        return str(int(k))
    return str(k)


def _categorical(codes: np.ndarray, keys) -> pd.Categorical:
    """Codes into a dict of interned raw values -> Categorical of str labels (merging 7 and "7")."""
    return _from_labels(codes, [_label(k) for k in keys])


def _from_labels(codes: np.ndarray, labels: list[str]) -> pd.Categorical:
    """Categorical from codes and their labels; labels that coincide are merged, unused ones dropped (a
    value interned for an event that was then dropped as malformed, a raw category of dropped events)."""
    used = np.bincount(codes, minlength=len(labels)) > 0
    if not used.all() or len(set(labels)) != len(labels):
        kept = np.array(labels, dtype=object)[used]
        uniq, inverse = np.unique(kept, return_inverse=True)
        remap = np.full(len(labels), -1, dtype=np.int32)
        remap[used] = inverse
        codes = remap[codes]
        labels = list(uniq)
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels, dtype=object))


def _json_compact(v) -> str:
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(v)


# ----------------------------------------------------------------------------------------------------
# nesting


def nest(group: np.ndarray, ts: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Parent of each interval: the innermost interval of the same group that encloses its start.

    Vectorized, O(n log n): the same result as a stack over intervals sorted by (group, ts, -dur) that pops
    every interval ending at or before the next start. In that order the ancestors of interval i are
    exactly the earlier intervals of its group still open at ts_i, so its depth is
        #(earlier in group) - #(earlier in group ending at or before ts_i)
    (the second count by searchsorted over the ends), and its parent is the latest earlier interval of
    its group one level up. Times are compared at nanosecond resolution (ts and dur in microseconds).
    Returns indices into the inputs, -1 for roots.
    """
    n = len(ts)
    parent = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return parent
    ts = np.asarray(ts, dtype=np.float64)
    dur = np.asarray(dur, dtype=np.float64)
    # integer nanoseconds relative to the earliest start: exact comparisons, one int64 key with the group
    t0 = float(ts.min())
    tq = np.rint((ts - t0) * 1000.0).astype(np.int64)
    eq = np.rint((ts + dur - t0) * 1000.0).astype(np.int64)
    np.maximum(eq, tq, out=eq)
    order = np.lexsort((-eq, tq, np.asarray(group)))
    tq = tq[order]
    eq = eq[order]
    g = np.asarray(group)[order]
    idx = np.arange(n, dtype=np.int64)

    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(g[1:], g[:-1], out=new_group[1:])
    del g
    gid = np.cumsum(new_group, dtype=np.int64)
    gid -= 1
    gstart = np.where(new_group, idx, 0)
    np.maximum.accumulate(gstart, out=gstart)

    width = int(eq.max()) + 2
    if width * (int(gid[-1]) + 1) < 2**62:
        key = gid * width
        key += eq
        key.sort()
        q = gid * width
        ended = np.searchsorted(key, q, side="left")
        q += tq
        ended = np.searchsorted(key, q, side="right") - ended
        del key, q
    else:  # absurdly long trace x many threads: count per group
        ended = np.empty(n, dtype=np.int64)
        bounds = np.append(np.flatnonzero(new_group), n)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            ends = np.sort(eq[a:b])
            ended[a:b] = np.searchsorted(ends, tq[a:b], side="right")
    del gid

    # `ended` also counts zero-length intervals at ts_i placed at or after i (they sort last among equal ts)
    zero = eq == tq
    del eq
    new_block = new_group
    new_block[1:] |= tq[1:] != tq[:-1]
    del tq
    block_starts = np.flatnonzero(new_block)
    block_end = np.append(block_starts[1:], n)
    block_end -= 1
    block_end = block_end[np.cumsum(new_block) - 1]
    del block_starts, new_block, new_group
    cz = np.cumsum(zero, dtype=np.int64)
    depth = cz[block_end]
    del block_end
    depth -= cz
    depth += zero  # zero-length intervals from i to the end of its block
    del cz, zero
    depth -= ended
    del ended
    depth += idx
    depth -= gstart  # = (idx - gstart) - (ended - later_zero)

    # parent: the latest earlier interval of the group at depth - 1
    keys = depth * n
    keys += idx
    keys.sort()
    q = depth - 1
    q *= n
    q += idx
    pos = np.searchsorted(keys, q, side="left")
    del q
    pos -= 1
    cand = keys[np.maximum(pos, 0)]
    del keys
    cand_depth, cand_idx = np.divmod(cand, n)
    del cand
    ok = (depth >= 1) & (pos >= 0) & (cand_depth == depth - 1) & (cand_idx >= gstart)
    parent[order[ok]] = order[cand_idx[ok]]
    return parent


# ----------------------------------------------------------------------------------------------------
# event dicts -> typed columns


class _Columns:
    """The kept events as typed column arrays and interned strings, fed one event at a time (`consume`, the
    ijson path) or a list of events at a time (`consume_batch`, the fast path). Both give the same columns,
    codes and counts for the same events in the same order, and may be mixed."""

    def __init__(self, keep_python: bool):
        self.keep_python = keep_python
        self.name_c, self.rawcat_c, self.pid_c, self.tid_c = array("i"), array("i"), array("i"), array("i")
        self.dims_c, self.types_c, self.module_c = array("i"), array("i"), array("i")
        self.ts_c, self.dur_c, self.flops_c = array("d"), array("d"), array("d")
        self.device_c, self.stream_c, self.corr_c, self.ext_c = array("q"), array("q"), array("q"), array("q")
        self.names: dict = {}
        self.rawcats: dict = {}
        self.rawcat_kind: list[int] = []
        self.pids: dict = {}
        self.tids: dict = {}
        # interning keys (see _value_key) -> codes; b"N" (null, the marshal of None) is code 0 too
        self.dims: dict = {"": 0, _NULL_KEY: 0}
        self.dims_labels = [""]
        self.types: dict = {"": 0, _NULL_KEY: 0}
        self.types_labels = [""]
        self.modules: dict = {"": 0}
        self.ph_counts: Counter = Counter()
        self.unknown: Counter = Counter()
        self.n_read = self.n_missing = self.n_invalid = self.n_python = self.n_malformed = 0
        self.base = None

    def consume(self, events) -> None:
        """One event at a time: any iterable of decoded JSON values (errors of the iterable propagate)."""
        name_c, rawcat_c, pid_c, tid_c = self.name_c, self.rawcat_c, self.pid_c, self.tid_c
        ts_c, dur_c, flops_c = self.ts_c, self.dur_c, self.flops_c
        device_c, stream_c, corr_c, ext_c = self.device_c, self.stream_c, self.corr_c, self.ext_c
        names, rawcats, rawcat_kind, pids, tids = self.names, self.rawcats, self.rawcat_kind, self.pids, self.tids
        dims, dims_labels, types, types_labels, modules = (self.dims, self.dims_labels, self.types, self.types_labels,
                                                           self.modules)
        ph_counts, unknown, keep_python = self.ph_counts, self.unknown, self.keep_python
        n_read, n_missing, n_invalid, n_python, n_malformed = (self.n_read, self.n_missing, self.n_invalid,
                                                               self.n_python, self.n_malformed)
        base = self.base
        nan = math.nan

        ap_ts, ap_dur, ap_flops = ts_c.append, dur_c.append, flops_c.append
        ap_name, ap_rawcat, ap_pid, ap_tid = name_c.append, rawcat_c.append, pid_c.append, tid_c.append
        ap_dims, ap_types, ap_module = self.dims_c.append, self.types_c.append, self.module_c.append
        ap_device, ap_stream, ap_corr, ap_ext = device_c.append, stream_c.append, corr_c.append, ext_c.append

        top_fields = itemgetter("cat", "ts", "dur", "name", "pid", "tid")
        mdumps = marshal.dumps  # the key of an args value: see _value_key
        try:
            for ev in events:
                n_read += 1
                try:
                    try:  # fast path: a complete event with every top-level field
                        ph = ev["ph"]
                        if ph != "X":
                            ph_counts[ph] += 1
                            continue
                        rc, ts, dur, name, pid, tid = top_fields(ev)
                    except KeyError:
                        ph = ev.get("ph")
                        if ph != "X":
                            ph_counts[ph] += 1
                            continue
                        rc = ev.get("cat")
                        ts = ev.get("ts")
                        dur = ev.get("dur")
                        name = ev.get("name", "")
                        pid = ev.get("pid")
                        tid = ev.get("tid")
                    k = rawcats.get(rc)
                    if k is None:
                        k = rawcats[rc] = len(rawcat_kind)
                        rawcat_kind.append(_category_of(rc))
                    kind = rawcat_kind[k]
                    if kind == _OTHER:
                        unknown[rc] += 1
                        continue
                    if kind == _PYTHON and not keep_python:
                        n_python += 1
                        continue
                    t1 = type(ts)
                    t2 = type(dur)
                    if not ((t1 is float or t1 is int) and (t2 is float or t2 is int)
                            and 0 <= ts < _INF and 0 <= dur < _INF):
                        if ts is None or dur is None:
                            n_missing += 1
                        else:
                            n_invalid += 1
                        continue
                    if base is None:
                        base = ts
                    ni = names.get(name)
                    if ni is None:
                        ni = names[name] = len(names)
                    pi = pids.get(pid)
                    if pi is None:
                        pi = pids[pid] = len(pids)
                    ti = tids.get(tid)
                    if ti is None:
                        ti = tids[tid] = len(tids)
                    args = ev.get("args")
                    if args:
                        aget = args.get
                        dv = aget("device", -1)
                        if type(dv) is not int:
                            dv = _as_int(dv)
                        sv = aget("stream", -1)
                        if type(sv) is not int:
                            sv = _as_int(sv)
                        cv = aget("correlation", -1)
                        if type(cv) is not int:
                            cv = _as_int(cv)
                        xv = aget("External id")
                        if xv is None:
                            xv = aget("external id", -1)
                        if type(xv) is not int:
                            xv = _as_int(xv)
                        fv = aget("flops")
                        if fv is None:
                            fv = nan
                        elif type(fv) is not float:
                            fv = float(fv) if type(fv) is int else nan
                        v = aget("Input Dims")
                        if v is None:
                            di = 0
                        else:
                            r = mdumps(v, 0)
                            di = dims.get(r)
                            if di is None:
                                di = dims[r] = len(dims_labels)
                                dims_labels.append(_json_compact(v))
                        v = aget("Input type")
                        if v is None:
                            yi = 0
                        else:
                            r = mdumps(v, 0)
                            yi = types.get(r)
                            if yi is None:
                                yi = types[r] = len(types_labels)
                                types_labels.append(v if type(v) is str else _json_compact(v))
                        v = aget("Module Hierarchy")
                        if v is None:
                            mi = 0
                        else:
                            if type(v) is not str:
                                v = _json_compact(v)
                            mi = modules.get(v)
                            if mi is None:
                                mi = modules[v] = len(modules)
                    else:
                        if args is not None and type(args) is not dict:
                            raise TypeError("args is not an object")
                        dv = sv = cv = xv = -1
                        fv = nan
                        di = yi = mi = 0
                except (TypeError, AttributeError, ValueError, OverflowError):
                    # not an object, unhashable name/cat/pid, args not an object, ...
                    n_malformed += 1
                    continue
                try:
                    ap_device(dv)
                    ap_stream(sv)
                    ap_corr(cv)
                    ap_ext(xv)
                except OverflowError:  # an id beyond int64: store -1 (roll back the columns appended so far)
                    n = len(ts_c)
                    for col in (device_c, stream_c, corr_c, ext_c):
                        del col[n:]
                    for col, v in ((device_c, dv), (stream_c, sv), (corr_c, cv), (ext_c, xv)):
                        col.append(v if -_INT64_MAX <= v <= _INT64_MAX else -1)
                ap_ts(ts - base)
                ap_dur(dur)
                ap_name(ni)
                ap_rawcat(k)
                ap_pid(pi)
                ap_tid(ti)
                ap_flops(fv)
                ap_dims(di)
                ap_types(yi)
                ap_module(mi)
        finally:
            self.n_read, self.n_missing, self.n_invalid, self.n_python, self.n_malformed = (
                n_read, n_missing, n_invalid, n_python, n_malformed)
            self.base = base

    def consume_batch(self, evs: list) -> None:
        """A list of events at once, a column at a time (map/compress over the dicts, numpy for numbers): the
        same result as `consume(evs)`, with fewer Python steps per event (a quarter less time on Kineto
        traces). A batch with anything unusual (an event that is not an object, a ts of another type than
        int/float/null, args that are neither an object nor null, an unhashable name, ...) goes through
        `consume` instead: nothing is changed before that is decided."""
        if not evs:
            return
        try:
            plan = self._plan(evs)
        except (TypeError, AttributeError, ValueError, OverflowError):
            plan = None
        if plan is None:
            self.consume(evs)
        else:
            self._commit(*plan)

    def _plan(self, evs: list):
        """Everything `consume_batch` needs, computed without changing any state; None: not a plain batch
        (or an exception, from a value `consume` handles one event at a time)."""
        get = dict.get
        phs = list(map(get, evs, repeat("ph")))  # TypeError if an event is not an object
        distinct = dict.fromkeys(phs)  # TypeError if a ph is unhashable
        ph_n = {ph: phs.count(ph) for ph in distinct} if len(distinct) > 1 or "X" not in distinct else {"X": len(phs)}
        n_x = ph_n.pop("X", 0)
        if not n_x:
            return len(evs), ph_n
        xs = list(compress(evs, map(eq, phs, repeat("X")))) if n_x < len(evs) else evs
        del phs, distinct

        # raw categories: the code each would get in `consume` (new ones numbered on, first seen first)
        cats = list(map(get, xs, repeat("cat")))
        rawcats = self.rawcats
        codes = list(map(rawcats.get, cats))  # TypeError if unhashable
        new_cats = []
        if None in codes:  # new raw categories: numbered on, first seen first, as `consume` numbers them
            code_of = {}
            for rc in dict.fromkeys(cats):
                k = rawcats.get(rc)
                if k is None:
                    k = len(self.rawcat_kind) + len(new_cats)
                    new_cats.append(rc)
                code_of[rc] = k
            codes = map(code_of.__getitem__, cats)
        new_kinds = [_category_of(rc) for rc in new_cats]
        codes = np.fromiter(codes, dtype=np.int32, count=len(cats))
        kinds = np.array(self.rawcat_kind + new_kinds, dtype=np.int8)[codes]
        drop = kinds == _OTHER
        unknown = Counter(compress(cats, drop.tolist())) if drop.any() else None
        del cats
        n_python = 0
        if not self.keep_python:
            py = kinds == _PYTHON
            n_python = int(np.count_nonzero(py))
            drop |= py
        if drop.any():
            keep = ~drop
            xs = list(compress(xs, keep.tolist()))
            codes = codes[keep]
        del kinds, drop

        tsl = list(map(get, xs, repeat("ts")))
        durl = list(map(get, xs, repeat("dur")))
        ts_types = set(map(type, tsl))
        t_types = ts_types | set(map(type, durl))
        if not t_types <= _NUMBER_OR_NONE:
            return None
        if _NONE_TYPE in t_types:
            missing = np.fromiter(map(_either_none, tsl, durl), dtype=bool, count=len(tsl))
            tsa = np.array([0 if t is None else t for t in tsl], dtype=np.float64)
            dura = np.array([0 if d is None else d for d in durl], dtype=np.float64)
        else:
            missing = None
            tsa = np.array(tsl, dtype=np.float64)
            dura = np.array(durl, dtype=np.float64)
        del durl
        ok = (tsa >= 0) & (tsa < _INF) & (dura >= 0) & (dura < _INF)
        del tsa
        n_missing = 0
        if missing is not None:
            n_missing = int(np.count_nonzero(missing))
            ok &= ~missing
        n_invalid = len(tsl) - n_missing - int(np.count_nonzero(ok))
        if not ok.all():
            keep = ok.tolist()
            xs = list(compress(xs, keep))
            tsl = list(compress(tsl, keep))
            ts_types = None
            codes = codes[ok]
            dura = dura[ok]
        del ok, missing
        counts = (len(evs), ph_n, unknown, n_python, n_missing, n_invalid, new_cats, new_kinds)
        if not xs:
            return counts
        base = self.base if self.base is not None else tsl[0]
        rel = _minus_base(tsl, base, ts_types)
        del tsl

        # TypeError (-> consume, which counts the event as malformed) if a value is unhashable
        names = _lookup(self.names, list(map(get, xs, repeat("name"), repeat(""))))
        pids = _lookup(self.pids, list(map(get, xs, repeat("pid"))))
        tids = _lookup(self.tids, list(map(get, xs, repeat("tid"))))
        args_l = list(map(get, xs, repeat("args")))
        del xs
        if None in args_l:
            args_l = [_EMPTY if a is None else a for a in args_l]
        # (args that are neither an object nor null: TypeError from dict.get)
        ids = [self._ids(args_l, key) for key in ("device", "stream", "correlation")]
        ext = list(map(get, args_l, repeat("External id")))
        if None in ext:
            ext = [x if x is not None else a.get("external id", -1) for x, a in zip(ext, args_l, strict=True)]
        ids.append(_int64s(ext))
        del ext
        fl = list(map(get, args_l, repeat("flops")))
        if set(map(type, fl)) == _NONE_ONLY:
            flops = np.full(len(fl), math.nan)
        else:
            flops = np.array([_flops(v) for v in fl], dtype=np.float64)
        del fl
        dims = _keyed(self.dims, list(map(get, args_l, repeat("Input Dims"))))
        types = _keyed(self.types, list(map(get, args_l, repeat("Input type"))))
        modules = list(map(get, args_l, repeat("Module Hierarchy")))
        if not set(map(type, modules)) <= _STR_OR_NONE:
            modules = [v if v is None or type(v) is str else _json_compact(v) for v in modules]
        modules = _lookup({None: 0, **self.modules}, modules)  # (null is code 0, not a label)
        cols = (base, rel, dura, codes, names, pids, tids, ids, flops, dims, types, modules)
        return counts + (cols,)

    @staticmethod
    def _ids(args_l: list, key: str) -> np.ndarray:
        return _int64s(list(map(dict.get, args_l, repeat(key), repeat(-1))))

    def _commit(self, n_read, ph_n, unknown=None, n_python=0, n_missing=0, n_invalid=0, new_cats=(), new_kinds=(),
                cols=None):
        self.n_read += n_read
        ph_counts = self.ph_counts
        for ph, c in ph_n.items():
            ph_counts[ph] += c
        rawcats, rawcat_kind = self.rawcats, self.rawcat_kind
        for rc, kind in zip(new_cats, new_kinds, strict=True):
            rawcats[rc] = len(rawcat_kind)
            rawcat_kind.append(kind)
        if unknown:
            mine = self.unknown
            for rc, c in unknown.items():
                mine[rc] += c
        self.n_python += n_python
        self.n_missing += n_missing
        self.n_invalid += n_invalid
        if cols is None:
            return
        base, rel, dura, codes, names, pids, tids, ids, flops, dims, types, modules = cols
        n = len(rel)
        self.base = base
        self.ts_c.frombytes(rel.tobytes())
        self.dur_c.frombytes(dura.tobytes())
        self.name_c.frombytes(_intern(self.names, names).tobytes())
        self.pid_c.frombytes(_intern(self.pids, pids).tobytes())
        self.tid_c.frombytes(_intern(self.tids, tids).tobytes())
        self.rawcat_c.frombytes(codes.tobytes())
        for col, arr in zip((self.device_c, self.stream_c, self.corr_c, self.ext_c), ids, strict=True):
            col.frombytes(arr.tobytes())
        self.flops_c.frombytes(flops.tobytes())
        self.dims_c.frombytes(_intern_keyed(self.dims, self.dims_labels, dims, _json_compact).tobytes())
        self.types_c.frombytes(_intern_keyed(self.types, self.types_labels, types, _type_label).tobytes())
        keys, known, distinct = modules
        if distinct is not None:
            table = self.modules
            for k in distinct:
                if k is not None and k not in table:
                    table[k] = len(table)
            known = map(table.get, keys, repeat(0))
        self.module_c.frombytes(np.fromiter(known, dtype=np.int32, count=n).tobytes())

    def result(self) -> tuple[dict, dict]:
        dropped = {f"ph={_label(ph) if ph is not None else 'missing'}": n for ph, n in self.ph_counts.items()}
        for reason, n in (("missing ts/dur", self.n_missing), ("invalid ts/dur", self.n_invalid),
                          ("python_function", self.n_python), ("malformed event", self.n_malformed)):
            if n:
                dropped[reason] = n
        cols = {
            "name": (self.name_c, self.names), "raw_cat": (self.rawcat_c, self.rawcats),
            "pid": (self.pid_c, self.pids), "tid": (self.tid_c, self.tids),
            "input_dims": (self.dims_c, self.dims_labels), "input_types": (self.types_c, self.types_labels),
            "module": (self.module_c, self.modules),
            "ts": self.ts_c, "dur": self.dur_c, "flops": self.flops_c,
            "device": self.device_c, "stream": self.stream_c, "correlation": self.corr_c, "external_id": self.ext_c,
        }
        info = {
            "base": self.base, "rawcat_kind": self.rawcat_kind, "n_read": self.n_read, "dropped": dropped,
            "unknown": {_label(k) if k is not None else "(missing)": n for k, n in self.unknown.items()},
        }
        return cols, info


_NONE_TYPE = type(None)
_NUMBER_OR_NONE = frozenset((int, float, _NONE_TYPE))
_NONE_ONLY = frozenset((_NONE_TYPE,))
_INT_ONLY = frozenset((int,))
_STR_OR_NONE = frozenset((str, _NONE_TYPE))
_EMPTY: dict = {}  # stands for absent args (never written to)


def _either_none(a, b) -> bool:
    return a is None or b is None


def _flops(v) -> float:
    t = type(v)
    if t is float:
        return v
    return float(v) if t is int else math.nan


def _type_label(v) -> str:
    return v if type(v) is str else _json_compact(v)


def _int64s(vals: list) -> np.ndarray:
    """args ids as `consume` stores them: ints as they are, anything else through _as_int."""
    if set(map(type, vals)) != _INT_ONLY:
        vals = [v if type(v) is int else _as_int(v) for v in vals]
    return np.fromiter(vals, dtype=np.int64, count=len(vals))  # OverflowError beyond int64: through `consume`


_NULL_KEY = marshal.dumps(None, 0)


def _value_key(v) -> bytes:
    """The interning key of a JSON value (args "Input Dims", "Input type"): marshal format 0 is a plain
    serialization (no back-references, no interned-string marks), so equal keys <=> the same value with the
    same types (1, 1.0 and true differ), like repr, and about three times faster."""
    return marshal.dumps(v, 0)


def _lookup(table: dict, vals: list):
    """The codes of `vals` in an interning table, as far as known: (vals, codes, None), or, when some are not in
    the table yet, (vals, codes with None for those, their distinct values first seen first)."""
    codes = list(map(table.get, vals))  # TypeError if a value is unhashable
    return vals, codes, (dict.fromkeys(vals) if None in codes else None)


def _intern(table: dict, looked_up) -> np.ndarray:
    """Codes of the values of `_lookup`, adding the new values to the table (the next codes, in order)."""
    vals, codes, distinct = looked_up
    if distinct is not None:
        for v in distinct:
            if v not in table:
                table[v] = len(table)
        codes = map(table.__getitem__, vals)
    return np.fromiter(codes, dtype=np.int32, count=len(vals))


def _keyed(table: dict, vals: list):
    """An args column interned by value (see _value_key): the key of each row, the codes known so far, and
    {key: a value with it} when some keys are new."""
    keys = list(map(marshal.dumps, vals, repeat(0)))
    codes = list(map(table.get, keys))
    return keys, codes, (dict(zip(keys, vals, strict=True)) if None in codes else None)


def _intern_keyed(table: dict, labels: list, keyed, label) -> np.ndarray:
    keys, codes, first = keyed
    if first is not None:
        for k, v in first.items():
            if k not in table:
                table[k] = len(labels)
                labels.append(label(v))
        codes = map(table.__getitem__, keys)
    return np.fromiter(codes, dtype=np.int32, count=len(keys))


def _minus_base(tsl: list, base, kinds: set | None = None) -> np.ndarray:
    """`ts - base` for each ts, as Python computes it: exact integer difference when both are ints, else the
    float difference. `kinds`: the types in tsl, if known."""
    if kinds is None:
        kinds = set(map(type, tsl))
    if type(base) is int:
        if kinds == _INT_ONLY:
            return (np.array(tsl, dtype=np.int64) - base).astype(np.float64)
        if int in kinds:  # ints and floats mixed (float kernel times, int CPU times): each kind its own way
            is_int = np.fromiter(map(eq, map(type, tsl), repeat(int)), dtype=bool, count=len(tsl))
            out = np.empty(len(tsl), dtype=np.float64)
            out[is_int] = np.array(list(compress(tsl, is_int.tolist())), dtype=np.int64) - base
            out[~is_int] = np.array(list(compress(tsl, (~is_int).tolist())), dtype=np.float64) - float(base)
            return out
        return np.array(tsl, dtype=np.float64) - float(base)
    return np.array(tsl, dtype=np.float64) - base


# ----------------------------------------------------------------------------------------------------
# the fast path: chunks of the stream, whole runs of events parsed by one orjson call


_CHUNK = 1 << 16  # bytes of decoded JSON read (and parsed) at a time: the JSON parser's transient memory is
# about ten times its input
_BATCH_BYTES = 1 << 18  # JSON bytes of events gathered before they go to the columns (a call per batch)
_SIDE_LIMIT = 16 << 20  # most bytes of top-level JSON outside the event array (header, trailer) held at once
_SCAN_WINDOW = 1 << 16  # bytes scanned at a time while looking for the event array
_WS = b" \t\r\n"  # JSON whitespace
_WS_SET = frozenset(_WS)
_EVENTS_KEY = b'"traceEvents"'
_DIGITS_19 = b"\x01" * 19
_INT64_MAX_DIGITS = str(_INT64_MAX).encode()

# byte classes of the scanner: [ { ] } , " and backslash; the rest is 0
_CLASS = np.zeros(256, dtype=np.uint8)
for _ch, _v in ((b"[", 1), (b"{", 2), (b"]", 3), (b"}", 4), (b",", 5), (b'"', 6), (b"\\", 7)):
    _CLASS[_ch[0]] = _v
del _ch, _v
_DEPTH_STEP = np.array([0, 1, 1, -1, -1, 0, 0, 0], dtype=np.int64)
_OPEN_ARRAY, _CLOSE_ARRAY, _COMMA = 1, 3, 5


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


def _has_big_int(data) -> bool:
    """Whether `data` may hold an integer beyond int64, which yajl (the ijson path) rejects and orjson reads.
    Digit runs of 19 or more are rare (nanosecond epoch times have 19 digits, below 9.2e18): only then the
    runs are looked at. Conservative: a long digit run inside a string also counts."""
    a = np.frombuffer(data, dtype=np.uint8)
    digit = np.subtract(a, 48, dtype=np.uint8)
    np.less(digit, 10, out=digit)
    if digit.tobytes().find(_DIGITS_19) < 0:
        return False
    edges = np.diff(digit.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    del edges, digit
    long = (ends - starts) >= 19
    for s, e in zip(starts[long].tolist(), ends[long].tolist(), strict=True):
        if e - s == 19 and bytes(a[s:e]) <= _INT64_MAX_DIGITS:
            continue
        after = a[e] if e < len(a) else 0
        before = a[s - 1] if s else 0
        if after in b".eE" or before in b".eE+":  # the integer or fraction part, or the exponent, of a float
            continue
        return True
    return False


def _scan(a: np.ndarray, in_str: bool, backslashes: int, depth: int):
    """The structural bytes of JSON text `a` ([ { ] } , outside strings) when it continues from the given state
    (inside a string or not, the run of backslashes just before it, the bracket depth).

    Vectorized: string bounds are the quotes not escaped (a quote after an odd run of backslashes is escaped);
    a byte is inside a string when an odd number of string bounds precede it; the depth after each
    structural byte is a cumulative sum. Returns (positions, classes, depth after each), (state at the end).
    """
    cls = np.take(_CLASS, a)
    at = np.flatnonzero(cls)
    cls = cls[at]
    is_quote = cls == 6
    is_bs = cls == 7
    quotes = at[is_quote]
    if is_bs.any():
        bs = at[is_bs]
        new_run = np.empty(len(bs), dtype=bool)
        new_run[0] = True
        np.not_equal(bs[1:], bs[:-1] + 1, out=new_run[1:])
        run_start = bs[np.maximum.accumulate(np.where(new_run, np.arange(len(bs)), 0))]
        j = np.minimum(np.searchsorted(bs, quotes - 1), len(bs) - 1)
        after_bs = bs[j] == quotes - 1
        run = np.where(after_bs, quotes - run_start[j], 0)
        if backslashes:  # a run that starts the text continues the one before it
            run += np.where((after_bs & (run_start[j] == 0)) | (quotes == 0), backslashes, 0)
        quotes = quotes[(run & 1) == 0]
        n = len(a)
        if bs[-1] == n - 1:
            backslashes = n - int(run_start[-1]) + (backslashes if run_start[-1] == 0 else 0)
        else:
            backslashes = 0
    else:
        if backslashes & 1 and len(quotes) and quotes[0] == 0:
            quotes = quotes[1:]
        backslashes = 0
    other = ~(is_quote | is_bs)
    pos = at[other]
    cls = cls[other]
    outside = np.searchsorted(quotes, pos)
    if in_str:
        outside += 1
    outside = (outside & 1) == 0
    pos = pos[outside]
    cls = cls[outside]
    depths = np.cumsum(_DEPTH_STEP[cls])
    depths += depth
    in_str = bool(in_str) ^ bool(len(quotes) & 1)
    end_depth = int(depths[-1]) if len(depths) else depth
    return (pos, cls, depths), (in_str, backslashes, end_depth)


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
    """One pass over the decoded stream, `_CHUNK` bytes at a time, for the fast path (see read_trace).

    The event array's content is kept in `cb` as "[" + the bytes not parsed yet; a run of complete events
    cb[1:cut] is parsed by one call on cb[:cut] + "]" (the separator at `cut` overwritten by "]", no copy).
    The cut is the last event boundary in the chunk: first guessed (`_guess_cut`, the `}, {` between two
    events) and accepted only if everything before it parses as a JSON array (a cut inside an event or a
    string cannot: it leaves a bracket or the string open); else found exactly by the vectorized scanner
    (`_scan`), which also finds where the array ends. Every byte of the document is parsed once by the JSON
    parser, so anything malformed raises (and the ijson path then reports it)."""

    def __init__(self, fh, keep_python: bool):
        self.fh = fh
        self.sink = _Columns(keep_python)
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
                (at, cls, depths), state = _scan(window, *state)
                for i in np.flatnonzero(((cls == _OPEN_ARRAY) & (depths == 2)) | (depths <= 0)).tolist():
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
        if prefix.count(_EVENTS_KEY) != 1 or _has_big_int(prefix):
            raise _Decline("unusual header")
        doc = _loads(prefix + b"[]}")
        self.header = {k: doc[k] for k in _HEADER_KEYS if k in doc}

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
                if _has_big_int(region):
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
                (at, cls, depths), state = _scan(a, *state)
                del a
                end = np.flatnonzero(depths < 0)
                if len(end):  # the array's "]"
                    i = int(end[0])
                    if cls[i] != _CLOSE_ARRAY:
                        raise _Decline("mismatched brackets")
                    e = scanned + int(at[i])
                    if cb[1:e].strip(_WS):
                        if not self._emit(cb, e):
                            raise _Decline("invalid JSON in the events")
                    elif seen_separator:
                        raise _Decline("a comma before ]")
                    return bytearray(memoryview(cb)[e + 1:])
                seps = np.flatnonzero((cls == _COMMA) & (depths == 0))
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
        if _EVENTS_KEY in suffix or _has_big_int(suffix):
            raise _Decline("unusual trailer")
        trailer = _loads(b'{"traceEvents":[]' + suffix)
        for k in _HEADER_KEYS:
            if k not in self.header and k in trailer:
                self.header[k] = trailer[k]


def _read_fast(path: Path, keep_python: bool):
    fh, raw, _ = _open(path)
    enabled = gc.isenabled()
    gc.disable()  # the parse allocates millions of containers and frees them by reference counts, no cycles
    try:
        return _FastReader(fh, keep_python).run()
    finally:
        if enabled:
            gc.enable()
        _close(fh, raw)


# ----------------------------------------------------------------------------------------------------
# the reader


def read_trace(path: str | Path, keep_python: bool = False, *, parser: str = "auto") -> Trace:
    """Parse one Kineto trace (.json or .json.gz) into a `Trace`; TraceError for any bad input.

    parser: "auto" (the fast path, and the ijson path for whatever it does not read: the same result, and
    the ijson path's messages for bad input), "ijson" (only the streaming ijson path), or "fast" (only the
    fast path: raises whatever made it give up; for tests and benchmarks).
    """
    if parser not in ("auto", "fast", "ijson"):
        raise ValueError(f"parser must be 'auto', 'fast' or 'ijson', not {parser!r}")
    path = Path(path)
    if path.is_dir():
        raise TraceError("is a folder, not a trace file", path=path)
    if not path.exists():
        raise TraceError("file not found", path=path)
    try:
        if path.stat().st_size == 0:
            raise TraceError("empty file", path=path)
    except OSError as e:
        raise TraceError(f"cannot read: {e.strerror or e}", path=path) from None

    if parser != "ijson":
        try:
            cols, info, header = _read_fast(path, keep_python)
        except Exception:
            if parser == "fast":
                raise
        else:
            return _build(path, cols, info, header)

    layout, header = _read_header(path)
    cols, info, tail = _parse_events(path, "traceEvents.item" if layout == "object" else "item", keep_python)
    if layout == "object":
        missing = [k for k in _HEADER_KEYS if k not in header]
        if missing and tail:
            try:
                trailer = _read_trailer(tail)
            except Exception:  # metadata after the events is optional: never fail the parse on it
                trailer = {}
            for k in missing:
                if k in trailer:
                    header[k] = trailer[k]
    return _build(path, cols, info, header)


def _parse_events(path: Path, prefix: str, keep_python: bool):
    """The streaming ijson pass: one event dict at a time into typed column arrays."""
    sink = _Columns(keep_python)
    fh, raw, gz = _open(path)
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
        _close(fh, raw)

    tail = b""
    if reader.tail is not None:
        # the last event ended within the chunk read before it was yielded: start the search there
        start = max(0, last_item_pos - 65536 - reader.tail_start)
        tail = bytes(reader.tail[start:])
    cols, info = sink.result()
    return cols, info, tail


def _vendor(devices: list[str], runtime_names: list[str], has_gpu_events: bool, gpu_backend: bool = False) -> str:
    """nvidia/amd from deviceProperties names, else from runtime call names (cuda*/hip*); "cpu" when the
    trace shows no GPU at all (no devices, no GPU events, no NCCL backend); "unknown" otherwise."""
    text = " ".join(devices).lower()
    if devices:
        if any(w in text for w in ("nvidia", "tesla", "geforce", "quadro", "rtx", "a100", "h100", "h200", "v100")):
            return "nvidia"
        if any(w in text for w in ("amd", "radeon", "instinct", "mi250", "mi300", "gfx")):
            return "amd"
    low = [n.lower() for n in runtime_names]
    if any(n.startswith("hip") for n in low):
        return "amd"
    if any(n.startswith(("cuda", "cu")) for n in low):
        return "nvidia"
    if not devices and not has_gpu_events and not gpu_backend:
        return "cpu"
    return "unknown"


def _int_or_none(v):
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    if type(v) is str and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


def _build(path: Path, cols: dict, info: dict, header: dict) -> Trace:
    """Typed column arrays -> the events/steps tables. Each array is released as soon as it is converted,
    so the peak stays near twice the compact columns."""
    n = len(cols["ts"])
    if n == 0:
        seen = info["n_read"]
        detail = f"{seen:,} trace events read"
        reasons = {**info["dropped"], **{f"cat={k}": v for k, v in info["unknown"].items()}}
        if reasons:
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:4]
            detail += ", dropped: " + ", ".join(f"{k} x{v:,}" for k, v in top)
        raise TraceError("no profiler events (no complete 'X' events of a known category with a valid ts and "
                         f"dur; {detail})", path=path)

    ts = np.array(cols.pop("ts"), dtype=np.float64)  # copies, and frees the typed array
    dur = np.array(cols.pop("dur"), dtype=np.float64)
    base = info["base"]
    ns = float(base) + float(np.median(ts)) > _NS_MEDIAN_THRESHOLD
    tmin = float(ts.min())
    origin = float(base) + tmin
    ts -= tmin
    if ns:
        ts /= 1000.0
        dur /= 1000.0
        origin /= 1000.0
    # float parsing leaves sub-nanosecond noise on large absolute times (4203669612512.74 - 4203669603187.439
    # = 9325.30126953125): no profiler records below a nanosecond, so round to it
    np.round(ts, 3, out=ts)
    np.round(dur, 3, out=dur)

    # rows in time order, longer first at equal start (so a parent always precedes its children)
    order = np.lexsort((-dur, ts))
    ts = ts[order]
    dur = dur[order]

    def take(key: str, dtype) -> np.ndarray:
        col = cols.pop(key)
        arr = col[0] if isinstance(col, tuple) else col
        out = np.frombuffer(arr, dtype=dtype)[order]
        del col, arr
        return out

    def take_cat(key: str, by_keys: bool) -> pd.Categorical:
        labels = cols[key][1]
        c = take(key, np.int32)
        return _categorical(c, labels) if by_keys else _from_labels(c, labels)

    rawcat_labels = cols["raw_cat"][1]
    rawcat_codes = take("raw_cat", np.int32)
    kind = np.array(info["rawcat_kind"], dtype=np.int8)[rawcat_codes]
    raw_cat = _categorical(rawcat_codes, rawcat_labels)
    del rawcat_codes
    cat = pd.Categorical.from_codes(kind.astype(np.int32), categories=pd.Index(list(CATEGORIES), dtype=object))
    name_cat = take_cat("name", True)
    pid_cat = take_cat("pid", True)
    tid_cat = take_cat("tid", True)

    steps, step = _steps(name_cat, kind, ts, dur)

    # nesting on each (pid, tid) among CPU-side events
    parent = np.full(n, -1, dtype=np.int64)
    cpu_rows = np.flatnonzero(np.isin(kind, _NESTING_CATS))
    if len(cpu_rows):
        group = pid_cat.codes[cpu_rows].astype(np.int64)
        group *= max(len(tid_cat.categories), 1)
        group += tid_cat.codes[cpu_rows]
        local = nest(group, ts[cpu_rows], dur[cpu_rows])
        del group
        has = local >= 0
        parent[cpu_rows[has]] = cpu_rows[local[has]]
        del local, has
    del cpu_rows
    child = parent >= 0
    # (bincount with no children at all returns int64: subtract into a fresh float array)
    self_us = dur - np.bincount(parent[child], weights=dur[child], minlength=n)
    del child
    np.maximum(self_us, 0.0, out=self_us)

    data = {
        "name": name_cat,
        "cat": cat,
        "raw_cat": raw_cat,
        "ts_us": ts,
        "dur_us": dur,
        "pid": pid_cat,
        "tid": tid_cat,
    }
    for key in ("device", "stream", "correlation", "external_id"):
        data[key] = take(key, np.int64)
    data["input_dims"] = take_cat("input_dims", False)
    data["input_types"] = take_cat("input_types", False)
    data["module"] = take_cat("module", True)
    data["flops"] = take("flops", np.float64)
    data["step"] = step
    data["parent"] = parent
    data["self_us"] = self_us
    events = pd.DataFrame(data, copy=False)
    del data

    # metadata
    dist = header.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else {}
    props = header.get("deviceProperties")
    devices = [str(d.get("name", "")) for d in props if isinstance(d, dict)] if isinstance(props, list) else []
    has_gpu = bool(np.isin(kind, (_KERNEL, _MEMCPY, _MEMSET, _GPU_ANNOTATION)).any())
    is_runtime = kind == _RUNTIME
    runtime_names = [str(x) for x in name_cat[is_runtime].unique()[:200]] if is_runtime.any() else []
    metadata = {
        "rank": _int_or_none(dist.get("rank")),
        "world_size": _int_or_none(dist.get("world_size")),
        "devices": devices,
        "device_vendor": _vendor(devices, runtime_names, has_gpu, str(dist.get("backend", "")).lower() in ("nccl", "rccl")),
        "time_unit_detected": "ns" if ns else "us",
        "schema_version": header.get("schemaVersion"),
        "n_events_read": info["n_read"],
        "n_events_kept": n,
        "unknown_categories": dict(info["unknown"]),
        "dropped": dict(info["dropped"]),
        "display_time_unit": header.get("displayTimeUnit"),
        "ts_origin_us": origin,
    }
    return Trace(path=str(path), events=events, steps=steps, metadata=metadata)


def _steps(name_cat: pd.Categorical, kind: np.ndarray, ts: np.ndarray, dur: np.ndarray):
    """ProfilerStep#N windows (from CPU-side events named so) and the step of each row by its start."""
    n = len(ts)
    step_of_code = np.full(len(name_cat.categories), -1, dtype=np.int64)
    for i, lab in enumerate(name_cat.categories):
        m = _STEP_RE.match(lab)
        if m:
            step_of_code[i] = int(m.group(1))
    is_marker = None
    if (step_of_code >= 0).any():
        ev_step_no = step_of_code[name_cat.codes]
        is_marker = (ev_step_no >= 0) & np.isin(kind, _STEP_CATS)
    if is_marker is None or not is_marker.any():
        end = float((ts + dur).max())
        steps = pd.DataFrame({"step": np.array([0], dtype=np.int64), "name": ["whole trace"],
                              "start_us": np.array([0.0]), "end_us": np.array([end])})
        return steps, np.zeros(n, dtype=np.int64)
    marks = pd.DataFrame({"step": ev_step_no[is_marker], "start_us": ts[is_marker],
                          "end_us": ts[is_marker] + dur[is_marker]})
    steps = marks.groupby("step", sort=False).agg(start_us=("start_us", "min"), end_us=("end_us", "max"))
    steps = steps.reset_index().sort_values(["start_us", "step"], kind="stable").reset_index(drop=True)
    steps.insert(1, "name", [f"ProfilerStep#{s}" for s in steps["step"]])
    steps = steps.astype({"step": np.int64, "start_us": np.float64, "end_us": np.float64})
    starts = steps["start_us"].to_numpy()
    ends = steps["end_us"].to_numpy()
    j = np.searchsorted(starts, ts, side="right") - 1
    jj = np.maximum(j, 0)
    inside = (j >= 0) & ((ts < ends[jj]) | (ts == starts[jj]))
    step = np.where(inside, steps["step"].to_numpy()[jj], -1).astype(np.int64)
    return steps, step
