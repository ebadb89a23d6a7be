"""The two-sample statistics drift tests a feature with: KS, chi-square, normed Wasserstein, Jensen-Shannon, PSI.

Evidently's default selection (`method_for`): a small reference gets a statistical test (a p-value), a large
one a distance (a threshold). Every statistic is exactly zero on equal samples, ties included (Evidently#171).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from collectors.drift_column import json_scalar

SMALL_SAMPLE = 1000  # Evidently: <= 1000 rows in the reference -> statistical tests, above -> distances
DISTANCE_THRESHOLD = 0.1  # normed Wasserstein (numeric) / Jensen-Shannon distance (categorical), large samples
PSI_THRESHOLD = 0.2
PSI_BINS = 10
PSI_EPSILON = 1e-4
METHODS = ("auto", "ks", "chisquare", "wasserstein", "jensenshannon", "psi")
P_VALUE_METHODS = ("ks", "chisquare")
QUANTILE_P = tuple(i / 20 for i in range(21))  # the probabilities a numeric feature's quantiles are kept at
TOP_CATEGORIES = 10  # the most frequent categories (both sides pooled) whose shares are kept
SIGNIFICANT_DIGITS = 6


def method_for(method: str, type_: str, old_n: int) -> str:
    """The method a feature gets: for `auto`, Evidently's choice by type and reference size."""
    if method == "auto":
        if type_ == "numeric":
            return "ks" if old_n <= SMALL_SAMPLE else "wasserstein"
        return "chisquare" if old_n <= SMALL_SAMPLE else "jensenshannon"
    # an explicit method applies to the features of its type; the other type gets its counterpart
    if type_ == "numeric":
        return {"chisquare": "ks", "jensenshannon": "wasserstein"}.get(method, method)
    return {"ks": "chisquare", "wasserstein": "jensenshannon"}.get(method, method)


def _wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between two samples given sorted: the integral of |F_u^-1(t) - F_v^-1(t)| over t (exact)."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.abs(u - v).mean())
    # quantile breakpoints i/n and j/m on the common grid of n*m
    grid = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    widths = np.diff(grid, prepend=0) / (n * m)
    iu = -(-grid // m) - 1
    iv = -(-grid // n) - 1
    return float(np.sum(widths * np.abs(u[iu] - v[iv])))


def category_counts(old: pd.Series, new: pd.Series) -> tuple[list, np.ndarray, np.ndarray]:
    ca = old.value_counts(dropna=True, sort=False)
    cb = new.value_counts(dropna=True, sort=False)
    table: dict = {}
    for side, counts in enumerate((ca, cb)):
        for key, count in counts.items():
            key = json_scalar(key)
            table.setdefault(key, [0, 0])[side] += int(count)
    keys = list(table)
    try:
        order = sorted(range(len(keys)), key=lambda i: keys[i])
    except TypeError:
        order = sorted(range(len(keys)), key=lambda i: (type(keys[i]).__name__, str(keys[i])))
    keys = [keys[i] for i in order]
    counts = np.array([table[k] for k in keys], dtype=np.float64).reshape(-1, 2)
    return keys, counts[:, 0], counts[:, 1]


def significant(value, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """A float rounded to `digits` significant digits (None for a missing or infinite one)."""
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def top_categories(keys: list, old: np.ndarray, new: np.ndarray, most: int = TOP_CATEGORIES) -> dict:
    """The `most` most frequent categories over both sides (counts pooled; ties in `keys`' order), as strings, and
    each one's share of its side's values: {"values", "old", "new"}."""
    order = np.argsort(-(old + new), kind="stable")[:most]
    return {"values": [str(keys[i]) for i in order],
            "old": [significant(old[i] / old.sum()) for i in order],
            "new": [significant(new[i] / new.sum()) for i in order]}


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.where(p == 0, PSI_EPSILON, p)
    q = np.where(q == 0, PSI_EPSILON, q)
    return float(np.sum((q - p) * np.log(q / p)))


class Sorted:
    """One sample in sorted order. Integer data (every size feature) is kept as counts per value, a counting
    sort in O(n); anything else is sorted. Both answer the same questions exactly."""

    def __init__(self, values: np.ndarray | None = None, lo: float = 0.0, counts: np.ndarray | None = None):
        self.values, self.lo = values, lo
        self.cum = np.cumsum(counts) if counts is not None else None
        self.n = len(values) if values is not None else int(self.cum[-1])

    def at(self, index):
        """The values at these positions of the sorted sample."""
        if self.values is not None:
            return self.values[index]
        return self.lo + np.searchsorted(self.cum, np.asarray(index) + 1)

    def median(self) -> float:
        n = self.n
        return float(self.at(n // 2)) if n % 2 else float((self.at(n // 2 - 1) + self.at(n // 2)) / 2)

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Linear interpolation between order statistics (numpy's default method)."""
        h = (self.n - 1) * np.asarray(q, dtype=np.float64)
        low = np.floor(h).astype(np.int64)
        below, above = self.at(low), self.at(np.minimum(low + 1, self.n - 1))
        return below + (h - low) * (above - below)

    def count_le(self, edges: np.ndarray) -> np.ndarray:
        if self.values is not None:
            return np.searchsorted(self.values, edges, side="right")
        index = np.floor(edges).astype(np.int64) - int(self.lo)
        return np.where(index < 0, 0, self.cum[np.clip(index, 0, len(self.cum) - 1)])


def sorted_pair(old: np.ndarray, new: np.ndarray, integer: bool) -> tuple[Sorted, Sorted]:
    if integer:
        lo, hi = min(old.min(), new.min()), max(old.max(), new.max())
        span = int(hi - lo) + 1
        if span <= max(1 << 16, 4 * (len(old) + len(new))):
            counts = [np.bincount((side - lo).astype(np.int64), minlength=span) for side in (old, new)]
            return Sorted(lo=lo, counts=counts[0]), Sorted(lo=lo, counts=counts[1])
    return Sorted(np.sort(old).astype(np.float64, copy=False)), Sorted(np.sort(new).astype(np.float64, copy=False))


def _wasserstein(a: Sorted, b: Sorted) -> float:
    if a.values is not None:
        return _wasserstein_sorted(a.values, b.values)
    # integers a unit apart: the integral of |F_a - F_b| is a plain sum over the support
    return float(np.abs(a.cum[:-1] / a.n - b.cum[:-1] / b.n).sum())


def numeric_test(method: str, old: np.ndarray, new: np.ndarray, a: Sorted, b: Sorted) -> tuple[float, float | None]:
    """(statistic, p-value or None): the raw samples for KS, their sorted forms for the rest."""
    if method == "ks":
        if (a.values is not None and np.array_equal(a.values, b.values)) or (a.values is None and np.array_equal(a.cum, b.cum)):
            return 0.0, 1.0
        from scipy import stats as sps  # imported on first use: a second of start-up that large samples never need

        result = sps.ks_2samp(old, new)
        return float(result.statistic), float(result.pvalue)
    if method == "wasserstein":
        std = float(np.std(old, dtype=np.float64))
        if std == 0 or not math.isfinite(std):
            same = b.at(0) == b.at(b.n - 1) == a.at(0)
            return (0.0 if same else math.inf), None
        return _wasserstein(a, b) / std, None
    if method == "psi":
        edges = np.unique(a.quantiles(np.arange(1, PSI_BINS) / PSI_BINS))
        cuts_a = np.concatenate([[0], a.count_le(edges), [a.n]])
        cuts_b = np.concatenate([[0], b.count_le(edges), [b.n]])
        return _psi(np.diff(cuts_a) / a.n, np.diff(cuts_b) / b.n), None
    raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")


def categorical_test(method: str, a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    if method == "chisquare":
        if len(a) < 2 or np.array_equal(a / a.sum(), b / b.sum()):
            return 0.0, 1.0
        from scipy import stats as sps

        result = sps.chi2_contingency(np.vstack([a, b]))
        return float(result.statistic), float(result.pvalue)
    p, q = a / a.sum(), b / b.sum()
    if method == "jensenshannon":
        return (0.0 if np.array_equal(p, q) else _jensenshannon(p, q)), None
    if method == "psi":
        return _psi(p, q), None
    raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (as scipy.spatial.distance.jensenshannon(p, q, base=2)), in [0, 1]."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        right = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max(0.0, (left + right) / (2 * math.log(2)))))


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(counts[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
