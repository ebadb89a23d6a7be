"""Event dicts -> typed columns: the kept events of a trace as compact arrays and interned strings.

Both readers (the fast path and the ijson path) feed the same builder, `Columns`, so the rows, codes,
categories and counts of a trace are the same whichever read it. Memory is bounded by the number of kept
events times a few dozen bytes, not by the file size: each kept event is reduced to primitives appended to
typed arrays (`array('d')`, `array('q')`, `array('i')`), and every string column is interned into a
dictionary of distinct values plus an int32 code per row.
"""

from __future__ import annotations

import marshal
import math
from array import array
from collections import Counter
from itertools import compress, repeat
from operator import eq, itemgetter

import numpy as np

from profilers.trace_categories import OTHER, PYTHON, category_of
from profilers.trace_values import INT64_MAX, as_int, json_compact, label

_INF = math.inf


class Columns:
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
        # interning keys (see _NULL_KEY) -> codes; b"N" (null, the marshal of None) is code 0 too
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
        mdumps = marshal.dumps  # the key of an args value: see _NULL_KEY
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
                        rawcat_kind.append(category_of(rc))
                    kind = rawcat_kind[k]
                    if kind == OTHER:
                        unknown[rc] += 1
                        continue
                    if kind == PYTHON and not keep_python:
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
                            dv = as_int(dv)
                        sv = aget("stream", -1)
                        if type(sv) is not int:
                            sv = as_int(sv)
                        cv = aget("correlation", -1)
                        if type(cv) is not int:
                            cv = as_int(cv)
                        xv = aget("External id")
                        if xv is None:
                            xv = aget("external id", -1)
                        if type(xv) is not int:
                            xv = as_int(xv)
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
                                dims_labels.append(json_compact(v))
                        v = aget("Input type")
                        if v is None:
                            yi = 0
                        else:
                            r = mdumps(v, 0)
                            yi = types.get(r)
                            if yi is None:
                                yi = types[r] = len(types_labels)
                                types_labels.append(v if type(v) is str else json_compact(v))
                        v = aget("Module Hierarchy")
                        if v is None:
                            mi = 0
                        else:
                            if type(v) is not str:
                                v = json_compact(v)
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
                        col.append(v if -INT64_MAX <= v <= INT64_MAX else -1)
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
        new_kinds = [category_of(rc) for rc in new_cats]
        codes = np.fromiter(codes, dtype=np.int32, count=len(cats))
        kinds = np.array(self.rawcat_kind + new_kinds, dtype=np.int8)[codes]
        drop = kinds == OTHER
        unknown = Counter(compress(cats, drop.tolist())) if drop.any() else None
        del cats
        n_python = 0
        if not self.keep_python:
            py = kinds == PYTHON
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
            modules = [v if v is None or type(v) is str else json_compact(v) for v in modules]
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
        self.dims_c.frombytes(_intern_keyed(self.dims, self.dims_labels, dims, json_compact).tobytes())
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
        dropped = {f"ph={label(ph) if ph is not None else 'missing'}": n for ph, n in self.ph_counts.items()}
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
            "unknown": {label(k) if k is not None else "(missing)": n for k, n in self.unknown.items()},
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
    return v if type(v) is str else json_compact(v)


def _int64s(vals: list) -> np.ndarray:
    """args ids as `consume` stores them: ints as they are, anything else through as_int."""
    if set(map(type, vals)) != _INT_ONLY:
        vals = [v if type(v) is int else as_int(v) for v in vals]
    return np.fromiter(vals, dtype=np.int64, count=len(vals))  # OverflowError beyond int64: through `consume`


# The interning key of a JSON value (args "Input Dims", "Input type") is marshal.dumps(value, 0): format 0 is a
# plain serialization (no back-references, no interned-string marks), so equal keys <=> the same value with the
# same types (1, 1.0 and true differ), like repr, and about three times faster.
_NULL_KEY = marshal.dumps(None, 0)


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
    """An args column interned by value (see _NULL_KEY): the key of each row, the codes known so far, and
    {key: a value with it} when some keys are new."""
    keys = list(map(marshal.dumps, vals, repeat(0)))
    codes = list(map(table.get, keys))
    return keys, codes, (dict(zip(keys, vals, strict=True)) if None in codes else None)


def _intern_keyed(table: dict, labels: list, keyed, to_label) -> np.ndarray:
    keys, codes, first = keyed
    if first is not None:
        for k, v in first.items():
            if k not in table:
                table[k] = len(labels)
                labels.append(to_label(v))
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
