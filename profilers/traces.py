"""Streaming reader for PyTorch Profiler (Kineto) Chrome-trace JSON files.

`read_trace(path)` parses a trace once into a normalized, columnar table (in the spirit of HTA's "parse
once into a normalized table") that the diff engine and the CLI work from.

Streaming: the JSON document is never held in memory, and neither is a list of event dicts. ijson's C
backend (yajl2_c) builds one event dict at a time; each kept event is reduced to primitives appended to
typed arrays (`array('d')`, `array('q')`, `array('i')`), and every string column is interned into a
dictionary of distinct values plus an int32 code per row. Memory is thus bounded by the number of kept
events times a few dozen bytes, not by the file size.

Top-level metadata (`deviceProperties`, `distributedInfo`, `schemaVersion`, ...) is read by a short
token-level pass that stops where `traceEvents` begins (Kineto writes it first); keys written after the
event array are recovered from the last bytes of the stream. The file is thus decoded once, plus its
first few kilobytes a second time.

Speed: the yajl2_c parser building each event dict is about two thirds of the time; the per-event Python
code (validation, interning, appends) the rest. Nesting, steps and the table are vectorized numpy.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import ijson
import numpy as np
import pandas as pd

from diagnose.errors import UserError

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
# the reader


def read_trace(path: str | Path, keep_python: bool = False) -> Trace:
    """Parse one Kineto trace (.json or .json.gz) into a `Trace`; TraceError for any bad input."""
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
    """The streaming pass: one event dict at a time into typed column arrays."""
    name_c, rawcat_c, pid_c, tid_c = array("i"), array("i"), array("i"), array("i")
    dims_c, types_c, module_c = array("i"), array("i"), array("i")
    ts_c, dur_c, flops_c = array("d"), array("d"), array("d")
    device_c, stream_c, corr_c, ext_c = array("q"), array("q"), array("q"), array("q")

    names: dict = {}
    rawcats: dict = {}
    rawcat_kind: list[int] = []
    pids: dict = {}
    tids: dict = {}
    dims: dict = {"": 0}
    dims_labels = [""]
    types: dict = {"": 0}
    types_labels = [""]
    modules: dict = {"": 0}

    ph_counts: Counter = Counter()
    unknown: Counter = Counter()
    n_read = n_missing = n_invalid = n_python = n_malformed = 0
    base = None
    nan = math.nan

    ap_ts, ap_dur, ap_flops = ts_c.append, dur_c.append, flops_c.append
    ap_name, ap_rawcat, ap_pid, ap_tid = name_c.append, rawcat_c.append, pid_c.append, tid_c.append
    ap_dims, ap_types, ap_module = dims_c.append, types_c.append, module_c.append
    ap_device, ap_stream, ap_corr, ap_ext = device_c.append, stream_c.append, corr_c.append, ext_c.append

    top_fields = itemgetter("cat", "ts", "dur", "name", "pid", "tid")

    fh, raw, gz = _open(path)
    reader = _Reader(fh, keep_tail=(prefix != "item"))
    last_item_pos = 0
    try:
        for ev in _ijson.items(reader, prefix, use_float=True):
            n_read += 1
            last_item_pos = reader.pos
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
                        r = repr(v)
                        di = dims.get(r)
                        if di is None:
                            di = dims[r] = len(dims_labels)
                            dims_labels.append(_json_compact(v))
                    v = aget("Input type")
                    if v is None:
                        yi = 0
                    else:
                        r = repr(v)
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
    except _READ_ERRORS as e:
        raise _read_error(path, e, reader, gz) from None
    finally:
        _close(fh, raw)

    tail = b""
    if reader.tail is not None:
        # the last event ended within the chunk read before it was yielded: start the search there
        start = max(0, last_item_pos - 65536 - reader.tail_start)
        tail = bytes(reader.tail[start:])

    dropped = {f"ph={_label(ph) if ph is not None else 'missing'}": n for ph, n in ph_counts.items()}
    for reason, n in (("missing ts/dur", n_missing), ("invalid ts/dur", n_invalid),
                      ("python_function", n_python), ("malformed event", n_malformed)):
        if n:
            dropped[reason] = n
    cols = {
        "name": (name_c, names), "raw_cat": (rawcat_c, rawcats), "pid": (pid_c, pids), "tid": (tid_c, tids),
        "input_dims": (dims_c, dims_labels), "input_types": (types_c, types_labels), "module": (module_c, modules),
        "ts": ts_c, "dur": dur_c, "flops": flops_c,
        "device": device_c, "stream": stream_c, "correlation": corr_c, "external_id": ext_c,
    }
    info = {
        "base": base, "rawcat_kind": rawcat_kind, "n_read": n_read, "dropped": dropped,
        "unknown": {_label(k) if k is not None else "(missing)": n for k, n in unknown.items()},
    }
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
