"""Raw JSON values of trace events -> what the table stores: int64 ids, str labels, pandas Categoricals.

Kineto writes the same thing several ways (a stream id as 7, "7" or "stream 7"; a name or pid as 7 or 7.0;
Input Dims as nested lists): these helpers give one stored value for each, for the column builder while
events are read (the rare paths: the common cases are inlined in its event loop) and for the table when the
interned codes become Categoricals.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

INT64_MAX = 2**63 - 1  # an id beyond it, either sign, is stored as -1 (absent)


def as_int(v) -> int:
    """args.device/stream/correlation/External id as int64, -1 when absent or not an integer."""
    t = type(v)
    if t is int:
        return v if -INT64_MAX <= v <= INT64_MAX else -1
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
        return i if -INT64_MAX <= i <= INT64_MAX else -1
    return -1


def label(k) -> str:
    """The str label of an interned raw value: a name, pid or tid written 7, 7.0 or "7" reads "7" alike."""
    if type(k) is str:
        return k
    if k is None:
        return ""
    if type(k) is float and k.is_integer():
        return str(int(k))
    return str(k)


def categorical(codes: np.ndarray, keys) -> pd.Categorical:
    """Codes into a dict of interned raw values -> Categorical of str labels (merging 7 and "7")."""
    return from_labels(codes, [label(k) for k in keys])


def from_labels(codes: np.ndarray, labels: list[str]) -> pd.Categorical:
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


def json_compact(v) -> str:
    """A non-string args value (Input Dims, a module path given as a list) as one compact JSON label."""
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(v)
