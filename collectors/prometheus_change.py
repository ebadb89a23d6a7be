"""How sure a production latency change is: the serving system's headline statistic in the hour after the deploy
against the hour before, with a moving-block bootstrap CI over the grid steps.

A step's requests are not independent of its neighbours' (traffic, caches and GC come in waves), so steps are
resampled in blocks (`BLOCK`, 2.5 min at 30 s), each window on its own, and the statistic is recomputed from the
resampled steps exactly as the window's figure is: a histogram's quantile from the summed bucket counts, the
counters' average from the summed time and request increases, a summary's quantile as the mean over its steps.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

BLOCK = 5          # steps per resampled block
N_BOOT = 1000
CONFIDENCE = 0.95
MIN_STEPS = 6      # steps with requests on each side, at least, for a CI
METHOD = (f"after vs before the deploy; {CONFIDENCE:.0%} CI from a moving-block bootstrap over the steps "
          f"({BLOCK} steps a block, {N_BOOT} resamples)")


def _resample(rows: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    """As many rows as given, drawn as circular blocks of consecutive rows with random starts."""
    n = len(rows)
    starts = rng.integers(0, n, size=math.ceil(n / block))
    idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n] % n
    return rows[idx]


def window_change(before: np.ndarray, after: np.ndarray, stat: Callable[[np.ndarray], float], *, seed: int = 0,
                  n_boot: int = N_BOOT, block: int = BLOCK) -> dict | None:
    """`stat(rows)` of the after window against the before window (rows = steps): the change in percent and its
    CI. None when either window has fewer than MIN_STEPS steps or the before figure is not positive."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if len(before) < MIN_STEPS or len(after) < MIN_STEPS:
        return None
    b, a = stat(before), stat(after)
    if not (b > 0 and math.isfinite(b) and math.isfinite(a)):
        return None
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_boot):
        rb, ra = stat(_resample(before, block, rng)), stat(_resample(after, block, rng))
        if rb > 0 and math.isfinite(rb) and math.isfinite(ra):
            ratios.append(ra / rb)
    if len(ratios) < n_boot // 2:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return {"before_ms": round(float(b), 3), "after_ms": round(float(a), 3), "pct": round(float(a / b - 1) * 100, 1),
            "ci_pct": [round(float(lo - 1) * 100, 1), round(float(hi - 1) * 100, 1)], "confidence": CONFIDENCE,
            "steps": {"before": len(before), "after": len(after)}, "method": METHOD}
