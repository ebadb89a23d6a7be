"""Where the p99 latency jumped: binary segmentation for shifts in the mean of log p99 (docs/signals.md).

A penalty on the gain of each split (BIC-like, on a robust noise estimate) keeps noise from being called a
jump; the caller decides which change point is the deploy's.
"""

from __future__ import annotations

import math

import numpy as np

MIN_SEGMENT = 3             # bins on each side of a change point, at least
MAX_CHANGE_POINTS = 5
PENALTY = 2.0               # split when the SSE gain exceeds PENALTY * sigma^2 * log(n)
SIGMA_FLOOR = 0.02          # log-scale noise floor: 2% (bucket interpolation makes a flat p99 look noiseless)


def _split(x: np.ndarray, lo: int, hi: int, min_size: int) -> tuple[int | None, float]:
    """The best single split of x[lo:hi] (least squares on two means) and its SSE gain."""
    seg = x[lo:hi]
    n = len(seg)
    if n < 2 * min_size:
        return None, 0.0
    cs, cs2 = np.cumsum(seg), np.cumsum(seg * seg)
    k = np.arange(min_size, n - min_size + 1)
    sse_left = cs2[k - 1] - cs[k - 1] ** 2 / k
    right_sum, right_sq = cs[-1] - cs[k - 1], cs2[-1] - cs2[k - 1]
    sse_right = right_sq - right_sum ** 2 / (n - k)
    gain = (cs2[-1] - cs[-1] ** 2 / n) - sse_left - sse_right
    best = int(np.argmax(gain))
    return lo + int(k[best]), float(gain[best])


def change_points(x, *, min_size: int = MIN_SEGMENT, max_points: int = MAX_CHANGE_POINTS, penalty: float = PENALTY,
                  sigma_floor: float = SIGMA_FLOOR) -> list[dict]:
    """Binary segmentation for shifts in the mean of x (log p99): split where two means fit best, while the
    SSE gain exceeds penalty * sigma^2 * log(n); sigma is robust (MAD of first differences / sqrt 2, at least
    sigma_floor). Returns [{index, gain, left_mean, right_mean, left, right}] by index; `index` starts the
    new segment, `left`/`right` are the neighbouring segments' bounds."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2 * min_size:
        return []
    diffs = np.diff(x)
    sigma = max(1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2), sigma_floor)
    threshold = penalty * sigma * sigma * math.log(n)
    bounds = [0, n]
    for _ in range(max_points):
        best = (None, 0.0)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            k, gain = _split(x, lo, hi, min_size)
            if k is not None and gain > best[1]:
                best = (k, gain)
        if best[0] is None or best[1] <= threshold:
            break
        bounds = sorted(bounds + [best[0]])
    out = []
    for i in range(1, len(bounds) - 1):
        lo, k, hi = bounds[i - 1], bounds[i], bounds[i + 1]
        left, right = x[lo:k], x[k:hi]
        gain = float(((x[lo:hi] - x[lo:hi].mean()) ** 2).sum() - ((left - left.mean()) ** 2).sum()
                     - ((right - right.mean()) ** 2).sum())
        out.append({"index": k, "gain": gain, "left_mean": float(left.mean()), "right_mean": float(right.mean()),
                    "left_median": float(np.median(left)), "right_median": float(np.median(right)),
                    "left": (lo, k), "right": (k, hi)})
    return out
