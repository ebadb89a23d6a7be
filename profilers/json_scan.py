"""Vectorized scans over JSON bytes, for the fast trace reader: where the structure is, and big integers.

Finding the bytes that matter ([ { ] } , outside strings) a byte at a time in Python would cost more than the
JSON parse itself; numpy finds them for a whole chunk in a few array passes, carrying the state (inside a
string, a pending run of backslashes, the bracket depth) from one chunk to the next. `has_big_int` tells the
fast reader which documents it must leave to the ijson path (yajl rejects integers beyond 64 bits; orjson
reads them), so that both paths accept and reject the same files.
"""

from __future__ import annotations

import numpy as np

OPEN_ARRAY, CLOSE_ARRAY, COMMA = 1, 3, 5  # the classes of [ ] and , among the structural bytes `scan` returns

# The deepest nesting a trace may have. Kineto writes 6 levels at most (the top object, traceEvents, an event,
# its args, "Input Dims", one shape); yajl (the ijson path) builds a prefix string as long as the depth for
# every token, so a 200 KB file of nested brackets would take minutes there. 64 leaves room for any writer.
MAX_DEPTH = 64

_DIGITS_19 = b"\x01" * 19
_INT64_MAX_DIGITS = str(2**63 - 1).encode()

# byte classes of the scanner: [ { ] } , " and backslash; the rest is 0
_CLASS = np.zeros(256, dtype=np.uint8)
for _ch, _v in ((b"[", 1), (b"{", 2), (b"]", 3), (b"}", 4), (b",", 5), (b'"', 6), (b"\\", 7)):
    _CLASS[_ch[0]] = _v
del _ch, _v
_DEPTH_STEP = np.array([0, 1, 1, -1, -1, 0, 0, 0], dtype=np.int64)


def has_big_int(data) -> bool:
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


def scan(a: np.ndarray, in_str: bool, backslashes: int, depth: int):
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
