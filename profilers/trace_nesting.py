"""Nesting of intervals on one timeline: the parent of each CPU-side trace event.

A Kineto trace records complete events (start, duration) with no parent link; self time and the call tree
need each event's enclosing event on its thread. A stack walk in Python over 100k+ events is the slowest step
of a parse, so the nesting is computed with sorts and searches over numpy arrays instead.
"""

from __future__ import annotations

import numpy as np


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
