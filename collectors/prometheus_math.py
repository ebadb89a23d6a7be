"""The series math on one time grid: points around the deploy, reset-aware counter increases, histogram quantiles.

Every series goes on the same grid before any arithmetic, so a recorded file and a live query_range give the
same numbers; the counter and quantile rules are PromQL's (increase() without extrapolation, bucketQuantile).
"""

from __future__ import annotations

import math

import numpy as np


def make_grid(deploy_s: float, window_s: float, step_s: int) -> np.ndarray:
    """Points every step_s seconds from deploy - window to deploy + window, anchored on the deploy second."""
    anchor = round(deploy_s)
    n = math.ceil(window_s / step_s)
    return anchor + step_s * np.arange(-n, n + 1, dtype=float)


def on_grid(ts: np.ndarray, vs: np.ndarray, grid: np.ndarray, lookback_s: float) -> np.ndarray:
    """The value at each grid point: the latest sample at or before it if that is less than `lookback_s` old,
    else NaN. With lookback_s = the grid step, every sample lands on one grid point (the first at or after it)
    and none is repeated; with Prometheus's 5 min it is what query_range returns."""
    ts, vs = np.asarray(ts, dtype=float), np.asarray(vs, dtype=float)
    out = np.full(len(grid), np.nan)
    if len(ts) == 0:
        return out
    idx = np.searchsorted(ts, grid, side="right") - 1
    ok = idx >= 0
    ok[ok] = (grid[ok] - ts[idx[ok]]) < lookback_s
    out[ok] = vs[idx[ok]]
    return out


def counter_deltas(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reset-aware increases between consecutive valid grid values, put at the later point (NaN elsewhere),
    and the seconds each spans. A drop means a reset: the increase across it is the new value."""
    deltas, spans = np.full(len(values), np.nan), np.full(len(values), np.nan)
    idx = np.flatnonzero(~np.isnan(values))
    if len(idx) < 2:
        return deltas, spans
    prev, cur = values[idx[:-1]], values[idx[1:]]
    deltas[idx[1:]] = np.where(cur < prev, cur, cur - prev)
    spans[idx[1:]] = grid[idx[1:]] - grid[idx[:-1]]
    return deltas, spans


def increase(values: np.ndarray, grid: np.ndarray, mask: np.ndarray) -> float | None:
    """A counter's reset-aware increase over the grid points in `mask` (None: no two samples there)."""
    deltas, _ = counter_deltas(values, grid)
    picked = deltas[mask]
    return float(np.nansum(picked)) if np.any(~np.isnan(picked)) else None


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's bucketQuantile: (upper bound, cumulative count) pairs -> the q-quantile, linearly
    interpolated inside its bucket; the +Inf bucket gives the largest finite bound; NaN without +Inf or counts."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    bounds = [b for b, _ in buckets]
    counts = list(np.maximum.accumulate([c for _, c in buckets]))  # counts must not fall with le
    total = counts[-1]
    if not total > 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(buckets) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if b == 0 else (bounds[b - 1], counts[b - 1])
    in_bucket = counts[b] - below
    return start + (bounds[b] - start) * ((rank - below) / in_bucket) if in_bucket > 0 else bounds[b]
