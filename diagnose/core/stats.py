"""Statistics for comparing two sets of per-request latency samples.

The question this module answers is "did the new build make serving slower,
and by how much?", asked of two piles of per-request latencies in
milliseconds.  The approach follows pyperf / criterion / asv:

* Report quantiles (p50, p90, p99), not only the mean: latency distributions
  are skewed and heavy-tailed, and users feel the tail.
* Give every quantile a distribution-free confidence interval, because we
  cannot assume normality (or any shape) for latencies.
* Express changes relative to the old build (percent), with a bootstrap CI,
  so one threshold works for a 2 ms and a 2 s endpoint.
* Decide with both a rank test (is there *any* shift?) and the size of the
  change (is it bigger than the machine's noise floor?), because with enough
  samples a meaningless 0.1 % shift becomes "significant".

Everything is deterministic: each random resampling takes a ``seed`` (or a
``numpy.random.Generator``) and uses ``np.random.default_rng``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _sps

__all__ = [
    "NOISE_FLOOR_PCT",
    "ALPHA",
    "EQUIVALENCE_PCT",
    "MAX_IQR_RATIO",
    "MIN_SAMPLES",
    "QUANTILES",
    "SideStats",
    "Delta",
    "summarize",
    "relative_change",
    "bootstrap_quantile",
    "verdict",
    "settled",
    "tail_verdict",
    "tail_settled",
    "Thresholds",
    "overall_verdict",
    "production_verdict",
    "joint_verdict",
    "noise_warnings",
]

NOISE_FLOOR_PCT = 1.0  # criterion's noise threshold: changes smaller than this are noise
ALPHA = 0.01  # significance level for the verdict
EQUIVALENCE_PCT = 3.0  # a change whose CI lies inside +/-this is "no_regression"
MAX_IQR_RATIO = 0.10  # spread (IQR/median) above this -> noise warning
MIN_SAMPLES = 20  # below this many samples per side, tail quantiles are guesses
# The tail (p99) is judged on its own: it moves more with machine noise than the median, and below a few hundred
# samples a side it sits among the top two or three samples, where a bootstrap CI is not to be trusted.
TAIL_NOISE_FLOOR_PCT = 5.0
TAIL_EQUIVALENCE_PCT = 10.0
MIN_TAIL_SAMPLES = 200
# Samples from two runs (a `diagnose ci --baseline`) were not interleaved: whatever else the machine did between the
# runs shifts one side. An A/A pair measured that way moved the p50 by -6% .. +8% on this project's CI machines, far
# beyond the within-run floors, so a between-runs comparison calls a change only beyond these wider bounds.
BETWEEN_RUNS_FLOOR_PCT = 10.0
BETWEEN_RUNS_EQUIVALENCE_PCT = 10.0
BETWEEN_RUNS_TAIL_FLOOR_PCT = 15.0
BETWEEN_RUNS_TAIL_EQUIVALENCE_PCT = 20.0


@dataclass(frozen=True)
class Thresholds:
    """The floors and equivalence bounds the verdicts and the CI gate judge a change with."""

    noise_floor_pct: float = NOISE_FLOOR_PCT
    equivalence_pct: float = EQUIVALENCE_PCT
    tail_noise_floor_pct: float = TAIL_NOISE_FLOOR_PCT
    tail_equivalence_pct: float = TAIL_EQUIVALENCE_PCT

    @classmethod
    def for_run(cls, between_runs: bool) -> "Thresholds":
        """Within one interleaved run, or between two runs (a baseline's samples against this run's)."""
        if not between_runs:
            return cls()
        return cls(BETWEEN_RUNS_FLOOR_PCT, BETWEEN_RUNS_EQUIVALENCE_PCT, BETWEEN_RUNS_TAIL_FLOOR_PCT,
                   BETWEEN_RUNS_TAIL_EQUIVALENCE_PCT)


WITHIN_RUN = Thresholds()  # the bounds of one interleaved run: the default everywhere

QUANTILES = (0.5, 0.9, 0.99)  # the quantiles reported everywhere (p50, p90, p99)

# Bootstrap resamples are drawn in row blocks of at most this many elements, so
# memory stays bounded (~16 MB of int32 indices) whatever n_boot * n is.
_BOOT_CHUNK_ELEMS = 4_000_000


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _as_samples(samples, name: str = "samples", allow_empty: bool = False) -> np.ndarray:
    """Validate and convert to a 1-D float64 array.

    NaN/inf latencies always mean a broken collector, and silently dropping
    them would bias the quantiles, so they are rejected instead.
    """
    x = np.asarray(samples, dtype=float)
    if x.ndim != 1:
        x = x.ravel()
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")
    return x


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return confidence


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _pair(a: float, b: float) -> tuple[float, float]:
    return (float(a), float(b))


def _order_stat_ci(sorted_x: np.ndarray, q: float, confidence: float, point: float) -> tuple[float, float]:
    """Distribution-free CI for the q-quantile from order statistics.

    The number of samples below the true q-quantile is Binomial(n, q), whatever
    the latency distribution.  With 1-based ranks l < u,
    P(X_(l) <= xi_q <= X_(u)) = F(u-1) - F(l-1), where F is that binomial CDF.
    Picking l = ppf(a/2) and u = ppf(1-a/2) + 1 makes this >= confidence.
    When n is too small (e.g. p99 from 50 samples) the ideal rank falls off the
    end of the sample and we clamp to the min/max: the interval is then the
    honest "somewhere up to the largest value we saw", with lower coverage.
    """
    n = sorted_x.size
    a = 1.0 - confidence
    lo_rank = int(_sps.binom.ppf(a / 2.0, n, q))  # 1-based rank l
    hi_rank = int(_sps.binom.ppf(1.0 - a / 2.0, n, q)) + 1  # 1-based rank u
    lo_i = min(max(lo_rank - 1, 0), n - 1)
    hi_i = min(max(hi_rank - 1, 0), n - 1)
    lo, hi = float(sorted_x[lo_i]), float(sorted_x[hi_i])
    # The interpolated point estimate lies between two adjacent order
    # statistics; for tiny n the binomial ranks can land just inside it.
    return _pair(min(lo, point), max(hi, point))


def _bootstrap_quantiles(x: np.ndarray, qs: Sequence[float], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of several quantiles from the *same* resamples.

    Returns an array of shape (len(qs), n_boot).  Quantiles use numpy's
    default ("linear", Hyndman-Fan type 7) definition, like ``np.quantile``.

    Speed: instead of materialising x[idx] and calling np.quantile, we sort x
    once and partition the (int32) index matrix along axis=1 at only the ranks
    the interpolation needs; since x is sorted, the k-th smallest index is the
    k-th smallest resampled value.  2000 x 5000 takes ~0.2 s.
    """
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    qs = np.asarray(qs, dtype=float)
    if np.any((qs < 0.0) | (qs > 1.0)):
        raise ValueError(f"quantiles must be in [0, 1], got {qs}")
    xs = np.sort(x)
    n = xs.size
    h = qs * (n - 1)
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = h - lo
    kth = np.unique(np.concatenate([lo, hi]))
    idx_dtype = np.int32 if n < 2**31 else np.int64

    out = np.empty((qs.size, n_boot), dtype=float)
    rows = max(1, _BOOT_CHUNK_ELEMS // n)
    for start in range(0, n_boot, rows):
        stop = min(start + rows, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=idx_dtype)
        idx.partition(kth, axis=1)
        v_lo = xs[idx[:, lo]]  # (rows, len(qs))
        v_hi = xs[idx[:, hi]]
        out[:, start:stop] = (v_lo + frac * (v_hi - v_lo)).T
    return out


def _block_bootstrap_quantiles(x: np.ndarray, blocks: np.ndarray, qs: Sequence[float], n_boot: int,
                               rng: np.random.Generator) -> np.ndarray:
    """Like `_bootstrap_quantiles`, resampling whole blocks instead of single samples (a cluster bootstrap).

    The harness times each cell in blocks of up to 8 batches per visit, so a burst of machine noise lands on one
    block of one cell: its samples are not independent. For the p99 of a thousand samples (the top ten) one
    such block can be most of the tail, and a per-sample bootstrap calls that a settled +20%; resampling the
    blocks (the unit that was randomized) keeps it as uncertain as it is.

    Each replicate draws as many blocks as there are, with replacement (counted per block); a sample weighs its
    block's count, and the type-7 quantile is read off the weighted sorted samples.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    _, block_of = np.unique(np.asarray(blocks)[order], return_inverse=True)
    n_blocks = int(block_of.max()) + 1
    sizes = np.bincount(block_of, minlength=n_blocks)
    qs = np.asarray(qs, dtype=float)
    # Only the top of the sorted samples is weighed: a resample's p90 lies in the top quarter unless blocks are
    # few and large, and a replicate where it does not is read off all the samples instead.
    top = xs.size if qs.min() < 0.75 else min(xs.size, max(64, int(np.ceil((1.0 - qs.min()) * 2.5 * xs.size))))
    desc, blocks_desc = xs[::-1], block_of[::-1]  # largest first
    top_blocks = blocks_desc[:top]
    out = np.empty((qs.size, int(n_boot)), dtype=float)
    rows = max(1, _BOOT_CHUNK_ELEMS // (4 * top))
    for start in range(0, int(n_boot), rows):
        stop = min(start + rows, int(n_boot))
        drawn = rng.integers(0, n_blocks, size=(stop - start, n_blocks)) + n_blocks * np.arange(stop - start)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=(stop - start) * n_blocks).reshape(stop - start, n_blocks)
        total = counts @ sizes  # samples in each resample
        cum = np.cumsum(counts[:, top_blocks], axis=1)  # (rows, top): resampled samples at or above each value
        h = qs[:, None] * (total - 1)  # (len(qs), rows)
        lo = np.floor(h)
        # the k-th smallest resampled value (0-based) is the (total - 1 - k)-th largest: top_desc[j] for the
        # first j with cum[j] > total - 1 - k
        from_top = (total - 1) - np.concatenate([lo, np.minimum(lo + 1, total - 1)])
        j = np.empty(from_top.shape, dtype=np.intp)
        for r in range(stop - start):
            if from_top[:, r].max() < cum[r, -1]:
                j[:, r] = np.searchsorted(cum[r], from_top[:, r], side="right")
            else:  # the quantile lies below the top: weigh every sample of this replicate
                full = np.cumsum(counts[r, blocks_desc])
                j[:, r] = np.searchsorted(full, from_top[:, r], side="right")
        v = desc[np.minimum(j, xs.size - 1)]
        out[:, start:stop] = v[: qs.size] + (h - lo) * (v[qs.size :] - v[: qs.size])
    return out


# --------------------------------------------------------------------------- #
# one side
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SideStats:
    """Summary of one set of latency samples (milliseconds)."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p50_ci: tuple[float, float]
    p90_ci: tuple[float, float]
    p99_ci: tuple[float, float]
    iqr_ratio: float  # (p75 - p25) / p50: relative spread, the noise indicator

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become 2-item lists)."""
        return {
            "n": int(self.n),
            "mean_ms": float(self.mean_ms),
            "p50_ms": float(self.p50_ms),
            "p90_ms": float(self.p90_ms),
            "p99_ms": float(self.p99_ms),
            "p50_ci": [float(v) for v in self.p50_ci],
            "p90_ci": [float(v) for v in self.p90_ci],
            "p99_ci": [float(v) for v in self.p99_ci],
            "iqr_ratio": float(self.iqr_ratio),
        }


def _iqr_ratio(p25: float, p50: float, p75: float) -> float:
    iqr = p75 - p25
    if p50 == 0.0:
        return 0.0 if iqr == 0.0 else float("inf")
    return float(iqr / abs(p50))


def summarize(samples, confidence: float = 0.95) -> SideStats:
    """Quantiles of one side with distribution-free order-statistic CIs.

    Order-statistic (binomial) intervals need no distributional assumption
    and no resampling, so they are exact-coverage-or-better and cheap.
    Raises ValueError on an empty array or non-finite values.
    """
    confidence = _check_confidence(confidence)
    x = _as_samples(samples)
    xs = np.sort(x)
    p25, p50, p75, p90, p99 = (float(v) for v in np.quantile(xs, [0.25, 0.5, 0.75, 0.9, 0.99]))
    return SideStats(
        n=int(xs.size),
        mean_ms=float(np.mean(xs)),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p50_ci=_order_stat_ci(xs, 0.5, confidence, p50),
        p90_ci=_order_stat_ci(xs, 0.9, confidence, p90),
        p99_ci=_order_stat_ci(xs, 0.99, confidence, p99),
        iqr_ratio=_iqr_ratio(p25, p50, p75),
    )


# --------------------------------------------------------------------------- #
# two sides
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Delta:
    """Relative change new vs old, in percent (positive = new is slower)."""

    p50_pct: float
    p50_pct_ci: tuple[float, float]
    p90_pct: float
    p90_pct_ci: tuple[float, float]
    p99_pct: float
    p99_pct_ci: tuple[float, float]
    p_value: float  # two-sided Mann-Whitney U
    test: str = "mann-whitney-u"
    confidence: float = 0.95

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become 2-item lists)."""
        return {
            "p50_pct": float(self.p50_pct),
            "p50_pct_ci": [float(v) for v in self.p50_pct_ci],
            "p90_pct": float(self.p90_pct),
            "p90_pct_ci": [float(v) for v in self.p90_pct_ci],
            "p99_pct": float(self.p99_pct),
            "p99_pct_ci": [float(v) for v in self.p99_pct_ci],
            "p_value": float(self.p_value),
            "test": str(self.test),
            "confidence": float(self.confidence),
        }


def bootstrap_quantile(samples, q: float, n_boot: int, rng) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the q-quantile of ``samples``.

    The bootstrap makes no assumption about the latency distribution; it is
    the building block for CIs of any statistic built from quantiles (ratios
    here, factorial attribution elsewhere).  ``rng`` is a
    ``numpy.random.Generator`` or a seed for ``np.random.default_rng``.
    """
    x = _as_samples(samples)
    q = float(q)
    return _bootstrap_quantiles(x, [q], n_boot, _as_rng(rng))[0]


def _mann_whitney_p(old: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value.

    A rank test: robust to the outliers and skew that latencies always have.
    The asymptotic method is used for speed (exact is O(n^2) memory).
    """
    if np.ptp(np.concatenate([old, new])) == 0.0:
        return 1.0  # all values identical: no evidence of any shift
    with np.errstate(all="ignore"):
        p = _sps.mannwhitneyu(new, old, alternative="two-sided", method="asymptotic").pvalue
    p = float(p)
    if not np.isfinite(p):
        return 1.0
    return min(max(p, 0.0), 1.0)


def relative_change(old, new, confidence: float = 0.95, n_boot: int = 2000, seed=0, blocks=None) -> Delta:
    """Percent change of p50/p90/p99 from ``old`` to ``new`` with bootstrap CIs.

    pct = 100 * (q(new) / q(old) - 1): positive means the new build is slower.
    The CI is a percentile bootstrap, resampling each side independently
    (the two runs are independent), so it needs no distributional assumption.
    ``blocks`` = (old block ids, new block ids), one per sample: the p90 and p99
    CIs then resample whole blocks (`_block_bootstrap_quantiles`), since a few
    correlated samples can make up the whole tail; the p50's stays per sample
    (one block among hundreds barely moves a median, and the rank test beside
    it is per sample too).
    Raises ValueError if an old quantile is <= 0 (a ratio is meaningless).
    """
    confidence = _check_confidence(confidence)
    old_x = _as_samples(old, "old")
    new_x = _as_samples(new, "new")
    qs = np.asarray(QUANTILES)
    q_old = np.quantile(old_x, qs)
    q_new = np.quantile(new_x, qs)
    if np.any(q_old <= 0.0):
        raise ValueError("old: quantiles must be > 0 for a relative change")
    pct = 100.0 * (q_new / q_old - 1.0)

    rng = np.random.default_rng(seed)
    if blocks is None:
        b_old = _bootstrap_quantiles(old_x, qs, n_boot, rng)
        b_new = _bootstrap_quantiles(new_x, qs, n_boot, rng)
    else:  # the p50 from the same per-sample resamples as above (the same draws give the same p50 replicates)
        old_blocks, new_blocks = (np.asarray(b) for b in blocks)
        if old_blocks.shape != old_x.shape or new_blocks.shape != new_x.shape:
            raise ValueError("blocks: one block id per sample on each side")
        b_old = _bootstrap_quantiles(old_x, qs[:1], n_boot, rng)
        b_new = _bootstrap_quantiles(new_x, qs[:1], n_boot, rng)
        b_old = np.vstack([b_old, _block_bootstrap_quantiles(old_x, old_blocks, qs[1:], n_boot, rng)])
        b_new = np.vstack([b_new, _block_bootstrap_quantiles(new_x, new_blocks, qs[1:], n_boot, rng)])
    with np.errstate(divide="ignore", invalid="ignore"):
        b_pct = 100.0 * (b_new / b_old - 1.0)
    a = 1.0 - confidence
    lo, hi = np.quantile(b_pct, [a / 2.0, 1.0 - a / 2.0], axis=1)

    return Delta(
        p50_pct=float(pct[0]),
        p50_pct_ci=_pair(lo[0], hi[0]),
        p90_pct=float(pct[1]),
        p90_pct_ci=_pair(lo[1], hi[1]),
        p99_pct=float(pct[2]),
        p99_pct_ci=_pair(lo[2], hi[2]),
        p_value=_mann_whitney_p(old_x, new_x),
        test="mann-whitney-u",
        confidence=confidence,
    )


# --------------------------------------------------------------------------- #
# decisions
# --------------------------------------------------------------------------- #
def verdict(
    delta: Delta,
    alpha: float = ALPHA,
    noise_floor_pct: float = NOISE_FLOOR_PCT,
    equivalence_pct: float = EQUIVALENCE_PCT,
) -> str:
    """One of "regression", "improvement", "no_regression", "inconclusive".

    A regression needs both evidence (p < alpha) and size (the whole p50 CI
    above the noise floor): with many samples a 0.2 % shift is "significant"
    but nobody should be paged for it.  "no_regression" is an equivalence
    claim: the CI bounds the change to within +/-equivalence_pct (this also
    covers a significant but tiny change).  A wide CI straddling the bounds
    is "inconclusive": collect more samples rather than guess.
    """
    lo, hi = delta.p50_pct_ci
    significant = delta.p_value < alpha
    if significant and lo > noise_floor_pct:
        return "regression"
    if significant and hi < -noise_floor_pct:
        return "improvement"
    if -equivalence_pct < lo and hi < equivalence_pct:
        return "no_regression"
    return "inconclusive"


def settled(
    delta: Delta,
    interim_alpha: float = 0.001,
    noise_floor_pct: float = NOISE_FLOOR_PCT,
    equivalence_pct: float = EQUIVALENCE_PCT,
) -> bool:
    """Whether a time-budgeted benchmark may stop early at this interim look.

    True once the look is decisive enough that more samples would not change
    the verdict: p < interim_alpha and the p50 CI excludes +/-2 x noise floor,
    or the p50 CI lies inside +/-equivalence_pct/2.

    Deliberately stricter than ``verdict``: every interim look is another
    chance for noise to cross a threshold, so repeated looks inflate the
    false-positive rate (optional stopping).  Demanding a smaller alpha and a
    wider margin at each look keeps the overall error rate near ``ALPHA``;
    with the defaults, settled() implies verdict() is not "inconclusive".
    """
    lo, hi = delta.p50_pct_ci
    if delta.p_value < interim_alpha and (lo > 2.0 * noise_floor_pct or hi < -2.0 * noise_floor_pct):
        return True
    half = equivalence_pct / 2.0
    return -half < lo and hi < half


def tail_verdict(
    delta: Delta,
    n: int,
    noise_floor_pct: float = TAIL_NOISE_FLOOR_PCT,
    equivalence_pct: float = TAIL_EQUIVALENCE_PCT,
    min_samples: int = MIN_TAIL_SAMPLES,
) -> str:
    """The p99 alone: "regression", "improvement", "no_regression", or "unsettled".

    `n` is the smaller side's sample count. A regression needs the whole p99 change CI above the tail's noise
    floor (5%), "no_regression" needs it inside +-10%; with fewer than `min_samples` a side, or a CI that
    straddles those bounds, the p99 is "unsettled" and the verdict says so instead of guessing.
    """
    lo, hi = delta.p99_pct_ci
    if n < min_samples:
        return "unsettled"
    if lo > noise_floor_pct:
        return "regression"
    if hi < -noise_floor_pct:
        return "improvement"
    if -equivalence_pct < lo and hi < equivalence_pct:
        return "no_regression"
    return "unsettled"


def tail_settled(delta: Delta, n: int, min_samples: int = MIN_TAIL_SAMPLES,
                 noise_floor_pct: float = TAIL_NOISE_FLOOR_PCT, equivalence_pct: float = TAIL_EQUIVALENCE_PCT) -> bool:
    """Early-stop check of the p99, stricter than `tail_verdict` for the same reason as `settled`: the CI beyond
    twice the tail's noise floor, or inside half its equivalence bounds, with at least `min_samples` a side."""
    lo, hi = delta.p99_pct_ci
    if n < min_samples:
        return False
    half = equivalence_pct / 2.0
    return lo > 2.0 * noise_floor_pct or hi < -2.0 * noise_floor_pct or (-half < lo and hi < half)


TAIL_DOMINANCE = 4.0  # a p99 change whose CI stays this many times above the median's makes the regression the tail's


def overall_verdict(median: str, tail: str, delta: Delta | None = None) -> tuple[str, str | None]:
    """The verdict from the median's and the tail's, and which one regressed ("median", "tail" or None).

    A slower p99 is a regression even when the median holds: a lock, a GC pause or a slow path for some requests
    shows only there, and p99 is what the on-call page is usually about. Its kind is "tail" then. It is also
    "tail" when the median moved too but the tail carries the change (given `delta`): moving 2% of the calls to
    the top shifts the median up a percentile point, a real 1-6% on a spread-out or busy machine that the 1%
    floor calls a regression; while the median moved less than the tail's equivalence bound (10%) and the p99's
    whole CI lies at least `TAIL_DOMINANCE` times above the median's change, the slow calls are the story.
    """
    if median == "regression":
        if (tail == "regression" and delta is not None and delta.p50_pct < TAIL_EQUIVALENCE_PCT
                and delta.p99_pct_ci[0] > TAIL_DOMINANCE * max(delta.p50_pct, NOISE_FLOOR_PCT)):
            return "regression", "tail"
        return "regression", "median"
    if tail == "regression":
        return "regression", "tail"
    return median, None


PRODUCTION_FLOOR_PCT = 10.0  # a production change smaller than this is not a regression (traffic moves p99 this much)
PRODUCTION_MARGIN_PCT = 5.0  # ... and one whose CI reaches below this is not a settled one


def production_verdict(pct: float, ci_pct: tuple[float, float], floor_pct: float = PRODUCTION_FLOOR_PCT,
                       margin_pct: float = PRODUCTION_MARGIN_PCT) -> str:
    """Production's change across the deploy (the serving system's own latency, collectors/prometheus_change.py):
    "regression" when it is at least `floor_pct` and its whole CI above `margin_pct`, "improvement" likewise
    downwards, "no_regression" when the CI lies inside +-floor_pct, else "inconclusive".

    Wider than the lab's bounds on purpose: production latency moves with traffic and neighbours, and a healthy
    deploy must never be called a regression; what pages someone is a step of tens of percent.
    """
    lo, hi = ci_pct
    if pct >= floor_pct and lo > margin_pct:
        return "regression"
    if pct <= -floor_pct and hi < -margin_pct:
        return "improvement"
    if -floor_pct < lo and hi < floor_pct:
        return "no_regression"
    return "inconclusive"


def joint_verdict(lab: str, production: str | None) -> tuple[str, str | None]:
    """The report's verdict from the lab's (benchmark; "not_measured" without one) and production's (None
    without signals covering the deploy), and which source carries it: "lab", "production" or "lab and
    production". Production regressed is a regression even when the lab shows none (a memory limit, a CPU
    limit, GPU clocks or load that a replay cannot reproduce); a lab regression stays one when production does
    not show it, and the report says so."""
    if lab == "regression" and production == "regression":
        return "regression", "lab and production"
    if lab == "regression":
        return "regression", "lab"
    if production == "regression":
        return "regression", "production"
    if lab == "not_measured" and production is not None:
        return production, "production"
    return lab, (None if lab == "not_measured" else "lab")


def unexplained_spread(samples, sizes=None) -> float:
    """IQR/median of the latency that the request size does not explain.

    Replayed requests differ in cost (a 10-token text is cheaper than a 120-token one), so the raw spread
    mixes the workload's own variety with machine noise. With per-sample sizes (input elements), the
    latency is first fitted linearly on size and the spread is taken over the residuals around the median:
    what is left is noise the machine added.
    """
    x = _as_samples(samples, "samples")
    if sizes is not None:
        size = np.asarray(sizes, dtype=float)
        if size.shape == x.shape and np.ptp(size) > 0:
            slope, intercept = np.polyfit(size, x, 1)
            x = x - (slope * size + intercept) + float(np.median(x))
    p25, p50, p75 = np.quantile(x, [0.25, 0.5, 0.75])
    return _iqr_ratio(float(p25), float(p50), float(p75))


def noise_warnings(old, new, max_iqr_ratio: float = MAX_IQR_RATIO, old_sizes=None, new_sizes=None) -> list[str]:
    """Human-readable warnings about measurements too noisy or too small to trust.

    A relative spread (IQR/median) above ``max_iqr_ratio`` usually means
    another process, thermal throttling or frequency scaling interfered, so
    a few-percent change cannot be resolved.  With per-sample request sizes,
    only the spread the sizes do not explain counts (see unexplained_spread).
    Fewer than MIN_SAMPLES samples make tail quantiles meaningless.  Returns []
    when both sides look fine. Raises ValueError on non-finite values; an empty
    side is only warned about.
    """
    warnings: list[str] = []
    for name, samples, sizes in (("old", old, old_sizes), ("new", new, new_sizes)):
        x = _as_samples(samples, name, allow_empty=True)
        if x.size < MIN_SAMPLES:
            warnings.append(
                f"{name}: only {x.size} samples (< {MIN_SAMPLES}): quantiles and their "
                f"confidence intervals are unreliable; raise --budget"
            )
        if x.size == 0:
            continue
        ratio = unexplained_spread(x, sizes)
        if ratio > max_iqr_ratio:
            what = "spread IQR/median" if sizes is None else "spread IQR/median not explained by request size"
            warnings.append(
                f"{name}: {what} = {100.0 * ratio:.1f}% (> {100.0 * max_iqr_ratio:g}%): "
                f"the machine was noisy; rerun on a quieter machine or raise --budget"
            )
    return warnings
