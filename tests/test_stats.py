"""Tests for diagnose.core.stats: quantile CIs, relative change, verdicts, warnings."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diagnose.core import stats as S  # noqa: E402
from diagnose.core.stats import (  # noqa: E402
    ALPHA,
    EQUIVALENCE_PCT,
    NOISE_FLOOR_PCT,
    Delta,
    SideStats,
    bootstrap_quantile,
    noise_warnings,
    relative_change,
    settled,
    summarize,
    verdict,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite_latency = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
latency_lists = st.lists(finite_latency, min_size=1, max_size=300)


def _delta(lo: float, hi: float, p: float, point: float | None = None) -> Delta:
    point = (lo + hi) / 2.0 if point is None else point
    return Delta(
        p50_pct=point,
        p50_pct_ci=(lo, hi),
        p90_pct=point,
        p90_pct_ci=(lo, hi),
        p99_pct=point,
        p99_pct_ci=(lo, hi),
        p_value=p,
    )


# --------------------------------------------------------------------------- #
# constants
# --------------------------------------------------------------------------- #
def test_constants():
    assert S.NOISE_FLOOR_PCT == 1.0
    assert S.ALPHA == 0.01
    assert S.EQUIVALENCE_PCT == 3.0
    assert S.MAX_IQR_RATIO == 0.10


# --------------------------------------------------------------------------- #
# summarize
# --------------------------------------------------------------------------- #
def test_summarize_exact_quantiles_on_arange():
    x = np.arange(1, 101, dtype=float)  # 1..100
    s = summarize(x)
    assert s.n == 100
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    # p25 = 25.75, p75 = 75.25 (linear interpolation)
    assert s.iqr_ratio == pytest.approx(49.5 / 50.5)


def test_summarize_order_statistic_ci_known_ranks():
    # n=100, median, 95%: binomial ranks l=40, u=61 (1-based), coverage 0.965.
    x = np.arange(1, 101, dtype=float)
    s = summarize(x)
    assert s.p50_ci == (40.0, 61.0)
    n, a = 100, 0.05
    lo_rank = int(sps.binom.ppf(a / 2, n, 0.9))
    hi_rank = int(sps.binom.ppf(1 - a / 2, n, 0.9)) + 1
    assert s.p90_ci == (float(lo_rank), float(hi_rank))
    cov = sps.binom.cdf(hi_rank - 1, n, 0.9) - sps.binom.cdf(lo_rank - 1, n, 0.9)
    assert cov >= 0.95


def test_summarize_order_is_irrelevant():
    x = np.random.default_rng(0).lognormal(2.0, 0.4, 257)
    assert summarize(x) == summarize(x[::-1]) == summarize(np.random.default_rng(1).permutation(x))


def test_summarize_p99_small_n_clamps_to_max():
    x = np.random.default_rng(3).lognormal(0.0, 1.0, 50)
    s = summarize(x)
    assert s.p99_ci[1] == x.max()
    assert s.p99_ci[0] <= s.p99_ms <= s.p99_ci[1]


def test_summarize_single_sample():
    s = summarize([7.5])
    assert s.n == 1
    assert s.p50_ms == s.p90_ms == s.p99_ms == s.mean_ms == 7.5
    assert s.p50_ci == s.p90_ci == s.p99_ci == (7.5, 7.5)
    assert s.iqr_ratio == 0.0


def test_summarize_narrower_ci_at_lower_confidence():
    x = np.random.default_rng(4).lognormal(1.0, 0.5, 500)
    wide, narrow = summarize(x, 0.99), summarize(x, 0.80)
    assert wide.p50_ci[0] <= narrow.p50_ci[0] and narrow.p50_ci[1] <= wide.p50_ci[1]
    assert (narrow.p50_ci[1] - narrow.p50_ci[0]) < (wide.p50_ci[1] - wide.p50_ci[0])


@pytest.mark.parametrize(
    "dist,q,true_q,field",
    [
        ("lognormal", 0.5, 10.0, "p50_ci"),  # median of lognormal(log 10, s) is 10
        ("exponential", 0.9, -math.log(0.1) * 4.0, "p90_ci"),  # scale 4
    ],
)
def test_summarize_ci_coverage(dist, q, true_q, field):
    hits = 0
    trials = 400
    for seed in range(trials):
        rng = np.random.default_rng(10_000 + seed)
        if dist == "lognormal":
            x = rng.lognormal(math.log(10.0), 0.5, 101)
        else:
            x = rng.exponential(4.0, 151)
        lo, hi = getattr(summarize(x, 0.95), field)
        hits += lo <= true_q <= hi
    coverage = hits / trials
    assert 0.90 <= coverage <= 0.995, coverage


@FAST
@given(latency_lists, st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]))
def test_summarize_ci_contains_point_estimate(values, confidence):
    s = summarize(values, confidence)
    lo_x, hi_x = min(values), max(values)
    for point, (lo, hi) in ((s.p50_ms, s.p50_ci), (s.p90_ms, s.p90_ci), (s.p99_ms, s.p99_ci)):
        assert lo <= point <= hi
        assert lo_x <= lo and hi <= hi_x
    assert s.p50_ms <= s.p90_ms <= s.p99_ms
    assert s.iqr_ratio >= 0.0


@pytest.mark.parametrize("bad", [[], np.array([]), [1.0, float("nan")], [1.0, float("inf")], [-float("inf")]])
def test_summarize_rejects_empty_and_non_finite(bad):
    with pytest.raises(ValueError):
        summarize(bad)


@pytest.mark.parametrize("conf", [0.0, 1.0, 1.5, -0.1])
def test_summarize_rejects_bad_confidence(conf):
    with pytest.raises(ValueError):
        summarize([1.0, 2.0], conf)


def test_sidestats_to_dict_is_json_and_exact_fields():
    s = summarize(np.random.default_rng(5).lognormal(1.0, 0.3, 80))
    d = s.to_dict()
    assert set(d) == {
        "n", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p50_ci", "p90_ci", "p99_ci", "iqr_ratio",
    }
    assert isinstance(d["p50_ci"], list) and len(d["p50_ci"]) == 2
    assert json.loads(json.dumps(d)) == d
    assert type(d["n"]) is int and type(d["p50_ms"]) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n = 3  # frozen


# --------------------------------------------------------------------------- #
# bootstrap_quantile
# --------------------------------------------------------------------------- #
def test_bootstrap_quantile_shape_determinism_range():
    x = np.random.default_rng(6).lognormal(0.0, 0.5, 400)
    a = bootstrap_quantile(x, 0.9, 300, np.random.default_rng(1))
    b = bootstrap_quantile(x, 0.9, 300, np.random.default_rng(1))
    c = bootstrap_quantile(x, 0.9, 300, 1)  # a seed works too
    d = bootstrap_quantile(x, 0.9, 300, np.random.default_rng(2))
    assert a.shape == (300,)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, d)
    assert np.all((a >= x.min()) & (a <= x.max()))


def test_bootstrap_quantile_matches_naive_resampling():
    # The fast path (partition of sorted indices) must equal np.quantile of the
    # resampled values for the same index matrix.
    x = np.random.default_rng(7).lognormal(0.0, 0.5, 301)
    got = bootstrap_quantile(x, 0.99, 64, np.random.default_rng(11))
    idx = np.random.default_rng(11).integers(0, x.size, size=(64, x.size), dtype=np.int32)
    want = np.quantile(np.sort(x)[idx], 0.99, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_bootstrap_quantile_standard_error_matches_theory():
    # SE of the sample median of N(0,1): sqrt(q(1-q)/n) / pdf(0).
    n = 2000
    x = np.random.default_rng(8).normal(0.0, 1.0, n)
    reps = bootstrap_quantile(x, 0.5, 2000, np.random.default_rng(0))
    theory = math.sqrt(0.25 / n) / sps.norm.pdf(0.0)
    assert reps.std() == pytest.approx(theory, rel=0.25)
    assert abs(reps.mean() - np.median(x)) < 0.5 * theory


def test_bootstrap_quantile_is_fast():
    x = np.random.default_rng(9).lognormal(0.0, 0.5, 5000)
    bootstrap_quantile(x, 0.5, 10, 0)  # warm-up
    t0 = time.perf_counter()
    reps = bootstrap_quantile(x, 0.99, 2000, 0)
    elapsed = time.perf_counter() - t0
    assert reps.shape == (2000,)
    assert elapsed < 1.0, elapsed


def test_bootstrap_quantile_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_quantile([], 0.5, 10, 0)
    with pytest.raises(ValueError):
        bootstrap_quantile([1.0, 2.0], 0.5, 0, 0)
    with pytest.raises(ValueError):
        bootstrap_quantile([1.0, 2.0], 1.5, 10, 0)


# --------------------------------------------------------------------------- #
# relative_change
# --------------------------------------------------------------------------- #
def test_relative_change_scaled_copy_is_ten_percent():
    old = np.random.default_rng(20).lognormal(math.log(20.0), 0.3, 2000)
    d = relative_change(old, old * 1.10, seed=1)
    for pct, (lo, hi) in ((d.p50_pct, d.p50_pct_ci), (d.p90_pct, d.p90_pct_ci), (d.p99_pct, d.p99_pct_ci)):
        assert pct == pytest.approx(10.0, abs=1e-9)
        assert lo < 10.0 < hi
    assert d.p_value < 1e-6
    assert d.test == "mann-whitney-u" and d.confidence == 0.95
    assert verdict(d) == "regression"


def test_relative_change_identical_inputs():
    # sigma 0.1, n=1000: the p50 CI is about +/-1.1%, inside the +/-3% equivalence band
    old = np.random.default_rng(21).lognormal(0.0, 0.1, 1000)
    d = relative_change(old, old.copy(), seed=2)
    assert d.p50_pct == 0.0 and d.p90_pct == 0.0 and d.p99_pct == 0.0
    assert d.p_value == pytest.approx(1.0, abs=1e-6)
    assert d.p50_pct_ci[0] < 0.0 < d.p50_pct_ci[1]
    assert verdict(d) == "no_regression"


def test_relative_change_constant_inputs_have_p_one():
    d = relative_change(np.full(50, 3.0), np.full(60, 3.0))
    assert d.p_value == 1.0
    assert d.p50_pct_ci == (0.0, 0.0)


def test_relative_change_sign_convention():
    rng = np.random.default_rng(22)
    old = rng.lognormal(math.log(50.0), 0.2, 1500)
    new = rng.lognormal(math.log(40.0), 0.2, 1500)  # 20% faster
    d = relative_change(old, new, seed=3)
    assert d.p50_pct < 0 and d.p50_pct_ci[1] < 0
    assert d.p50_pct == pytest.approx(-20.0, abs=3.0)
    assert verdict(d) == "improvement"
    back = relative_change(new, old, seed=3)
    assert back.p50_pct > 0 and verdict(back) == "regression"


def test_relative_change_deterministic_and_seeded():
    rng = np.random.default_rng(23)
    old, new = rng.lognormal(0, 0.3, 500), rng.lognormal(0.02, 0.3, 500)
    assert relative_change(old, new, seed=5) == relative_change(old, new, seed=5)
    assert relative_change(old, new, seed=5).p50_pct_ci != relative_change(old, new, seed=6).p50_pct_ci


def test_relative_change_ci_narrows_with_confidence_and_n():
    rng = np.random.default_rng(24)
    old, new = rng.lognormal(0, 0.3, 3000), rng.lognormal(0.05, 0.3, 3000)
    d95 = relative_change(old, new, confidence=0.95, seed=0)
    d50 = relative_change(old, new, confidence=0.50, seed=0)
    assert d95.confidence == 0.95 and d50.confidence == 0.50
    assert d95.p50_pct_ci[0] < d50.p50_pct_ci[0] < d50.p50_pct_ci[1] < d95.p50_pct_ci[1]
    small = relative_change(old[:200], new[:200], seed=0)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(small.p50_pct_ci) > width(d95.p50_pct_ci)


def test_relative_change_rejects_bad_input():
    with pytest.raises(ValueError):
        relative_change([], [1.0])
    with pytest.raises(ValueError):
        relative_change([1.0], [float("nan")])
    with pytest.raises(ValueError):
        relative_change([0.0, 0.0, 0.0], [1.0, 2.0])  # ratio undefined


def test_relative_change_fast_enough():
    rng = np.random.default_rng(25)
    old, new = rng.lognormal(0, 0.3, 5000), rng.lognormal(0, 0.3, 5000)
    relative_change(old[:50], new[:50], n_boot=10)  # warm-up
    t0 = time.perf_counter()
    relative_change(old, new, n_boot=2000)
    assert time.perf_counter() - t0 < 2.0


def test_delta_to_dict_is_json():
    d = relative_change([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0], n_boot=50)
    out = d.to_dict()
    assert set(out) == {
        "p50_pct", "p50_pct_ci", "p90_pct", "p90_pct_ci", "p99_pct", "p99_pct_ci",
        "p_value", "test", "confidence",
    }
    assert out["test"] == "mann-whitney-u"
    assert isinstance(out["p99_pct_ci"], list) and len(out["p99_pct_ci"]) == 2
    assert json.loads(json.dumps(out)) == out


# --------------------------------------------------------------------------- #
# verdict: error rates on known distributions
# --------------------------------------------------------------------------- #
# The rate tests use n_boot=500 to keep runtime low; 500 resamples are plenty
# for the 2.5% / 97.5% percentiles at this accuracy.
def test_verdict_a_a_false_positive_rate():
    trials, n = 200, 300
    verdicts, ps = [], []
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        old = rng.lognormal(math.log(30.0), 0.25, n)
        new = rng.lognormal(math.log(30.0), 0.25, n)
        d = relative_change(old, new, n_boot=500, seed=seed)
        verdicts.append(verdict(d))
        ps.append(d.p_value)
    assert verdicts.count("regression") / trials <= 0.02
    assert verdicts.count("improvement") / trials <= 0.02
    # Mann-Whitney is calibrated under H0: ~5% of p-values below 0.05.
    assert np.mean(np.array(ps) < 0.05) <= 0.10


def test_verdict_detects_true_five_percent_shift():
    trials, n = 100, 1000
    hits = 0
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        old = rng.lognormal(math.log(30.0), 0.1, n)
        new = rng.lognormal(math.log(30.0 * 1.05), 0.1, n)
        d = relative_change(old, new, n_boot=500, seed=seed)
        hits += verdict(d) == "regression"
    assert hits / trials >= 0.95


# --------------------------------------------------------------------------- #
# verdict / settled: hand-made deltas
# --------------------------------------------------------------------------- #
def test_verdict_four_outcomes():
    assert verdict(_delta(4.0, 9.0, 1e-6)) == "regression"
    assert verdict(_delta(-9.0, -4.0, 1e-6)) == "improvement"
    assert verdict(_delta(-1.0, 1.5, 0.4)) == "no_regression"
    assert verdict(_delta(-2.0, 8.0, 0.2)) == "inconclusive"


def test_verdict_edge_cases():
    # significant but tiny (CI inside +/-3%, not above the 1% floor): no_regression
    assert verdict(_delta(0.3, 0.9, 1e-9)) == "no_regression"
    # big CI above the floor but not significant: not a regression
    assert verdict(_delta(2.0, 12.0, 0.05)) == "inconclusive"
    # significant, above the floor, but within equivalence: regression wins
    assert verdict(_delta(1.5, 2.5, 1e-4)) == "regression"
    # straddles the floor: not a regression even if significant
    assert verdict(_delta(0.5, 6.0, 1e-4)) == "inconclusive"
    # parameters are honoured
    assert verdict(_delta(1.5, 2.5, 0.02), alpha=0.05) == "regression"
    assert verdict(_delta(1.5, 2.5, 1e-4), noise_floor_pct=2.0) == "no_regression"
    assert verdict(_delta(-4.0, 4.0, 0.5), equivalence_pct=5.0) == "no_regression"
    assert verdict(_delta(-4.0, 4.0, 0.5)) == "inconclusive"


def test_settled_hand_made():
    assert settled(_delta(3.0, 8.0, 1e-5))  # decisive regression
    assert settled(_delta(-8.0, -3.0, 1e-5))  # decisive improvement
    assert settled(_delta(-1.0, 1.0, 0.6))  # tightly equivalent
    assert not settled(_delta(3.0, 8.0, 0.005))  # verdict says regression, but p not small enough
    assert verdict(_delta(3.0, 8.0, 0.005)) == "regression"
    assert not settled(_delta(1.5, 8.0, 1e-8))  # CI not clear of 2x noise floor
    assert not settled(_delta(-2.0, 2.0, 0.6))  # no_regression, but not within +/-1.5
    assert verdict(_delta(-2.0, 2.0, 0.6)) == "no_regression"


ci_bound = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False)
p_values = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1e-4, 0.0009, 0.001, 0.009, 0.01]))


@settings(max_examples=250, deadline=None)
@given(ci_bound, ci_bound, p_values)
def test_settled_is_stricter_than_verdict(a, b, p):
    lo, hi = min(a, b), max(a, b)
    d = _delta(lo, hi, p)
    v = verdict(d)
    if settled(d):
        assert v != "inconclusive"
        if p < 0.001 and lo > 2 * NOISE_FLOOR_PCT:
            assert v == "regression"
        if p < 0.001 and hi < -2 * NOISE_FLOOR_PCT:
            assert v == "improvement"
    # settled via significance always agrees with verdict's direction
    if settled(d) and p < 0.001 and (lo > 2.0 or hi < -2.0):
        assert v in ("regression", "improvement")
    # verdict is always one of the four strings
    assert v in {"regression", "improvement", "no_regression", "inconclusive"}


@settings(max_examples=200, deadline=None)
@given(ci_bound, ci_bound, p_values)
def test_verdict_regression_requires_evidence_and_size(a, b, p):
    lo, hi = min(a, b), max(a, b)
    v = verdict(_delta(lo, hi, p))
    if v == "regression":
        assert p < ALPHA and lo > NOISE_FLOOR_PCT
    if v == "improvement":
        assert p < ALPHA and hi < -NOISE_FLOOR_PCT
    if v == "no_regression":
        assert -EQUIVALENCE_PCT < lo and hi < EQUIVALENCE_PCT


# --------------------------------------------------------------------------- #
# noise_warnings
# --------------------------------------------------------------------------- #
def test_noise_warnings_quiet_is_empty():
    rng = np.random.default_rng(30)
    assert noise_warnings(rng.lognormal(3, 0.02, 500), rng.lognormal(3, 0.02, 500)) == []


def test_noise_warnings_noisy_side_only():
    rng = np.random.default_rng(31)
    quiet = rng.lognormal(3, 0.02, 500)
    noisy = rng.lognormal(3, 0.5, 500)
    w = noise_warnings(quiet, noisy)
    assert len(w) == 1
    assert w[0].startswith("new: spread IQR/median = ")
    assert "(> 10%)" in w[0] and "noisy" in w[0] and "--budget" in w[0]
    both = noise_warnings(noisy, noisy)
    assert [s.split(":")[0] for s in both] == ["old", "new"]


def test_noise_warnings_exact_message():
    # linspace(a, b) has IQR (b - a) / 2 and median (a + b) / 2 -> 14.2%
    old = np.linspace(85.8, 114.2, 1001)
    w = noise_warnings(old, np.full(100, 5.0))
    assert w == [
        "old: spread IQR/median = 14.2% (> 10%): the machine was noisy; "
        "rerun on a quieter machine or raise --budget"
    ]


def test_noise_warnings_threshold_parameter():
    old = np.linspace(85.8, 114.2, 1001)  # 14.2%
    assert noise_warnings(old, old, max_iqr_ratio=0.2) == []
    assert len(noise_warnings(old, old, max_iqr_ratio=0.1)) == 2


def test_noise_warnings_few_samples():
    w = noise_warnings(np.full(10, 5.0), np.full(19, 5.0))
    assert len(w) == 2
    assert w[0].startswith("old:") and "10 samples" in w[0]
    assert w[1].startswith("new:") and "19 samples" in w[1]
    assert noise_warnings(np.full(20, 5.0), np.full(20, 5.0)) == []
    # an empty side is warned about, not an exception
    assert any("0 samples" in s for s in noise_warnings([], np.full(50, 5.0)))
    with pytest.raises(ValueError):
        noise_warnings([1.0, float("nan")], np.full(50, 5.0))


def test_summarize_iqr_ratio_agrees_with_noise_warnings():
    x = np.random.default_rng(32).lognormal(3, 0.3, 400)
    s = summarize(x)
    warned = bool(noise_warnings(x, np.full(400, 1.0)))
    assert warned == (s.iqr_ratio > S.MAX_IQR_RATIO)
    assert isinstance(s, SideStats)


def test_spread_explained_by_request_size_is_not_noise():
    rng = np.random.default_rng(5)
    sizes = rng.integers(10, 130, 400).astype(float)
    latency = 2.0 + 0.15 * sizes + rng.normal(0, 0.05, 400)  # cost follows size; machine noise is tiny
    assert S.unexplained_spread(latency) > 0.3
    assert S.unexplained_spread(latency, sizes) < 0.02
    assert S.noise_warnings(latency, latency, old_sizes=sizes, new_sizes=sizes) == []
    noisy = latency * np.exp(rng.normal(0, 0.3, 400))
    assert any("not explained by request size" in w for w in S.noise_warnings(noisy, latency, old_sizes=sizes,
                                                                                new_sizes=sizes))


def _tail_delta(p50: float, p99_ci: tuple[float, float]) -> Delta:
    return Delta(p50, (p50 - 1.0, p50 + 1.0), p50, (p50 - 1.0, p50 + 1.0), sum(p99_ci) / 2, p99_ci, 1e-6)


@pytest.mark.parametrize("median, tail, p50, p99_ci, expected", [
    ("regression", "regression", 2.2, (300.0, 800.0), ("regression", "tail")),  # 2% slow calls nudge the median
    ("no_regression", "regression", 0.2, (20.0, 40.0), ("regression", "tail")),
    ("regression", "regression", 30.0, (25.0, 40.0), ("regression", "median")),  # everything slower
    ("regression", "regression", 6.2, (120.0, 500.0), ("regression", "tail")),  # on a busy machine
    ("regression", "regression", 4.0, (8.0, 20.0), ("regression", "median")),  # the tail not clearly dominant
    ("regression", "regression", 12.0, (60.0, 90.0), ("regression", "median")),  # the median moved too much
    ("regression", "no_regression", 3.0, (-2.0, 4.0), ("regression", "median")),
    ("no_regression", "unsettled", 0.1, (-8.0, 30.0), ("no_regression", None)),
])
def test_the_regression_kind_names_the_part_that_carries_the_change(median, tail, p50, p99_ci, expected):
    assert S.overall_verdict(median, tail, _tail_delta(p50, p99_ci)) == expected
    if expected[1] == "median":  # without the changes, a median regression is the median's
        assert S.overall_verdict(median, tail) == expected


def test_block_bootstrap_matches_the_plain_one_for_blocks_of_one():
    x = np.random.default_rng(3).lognormal(0.0, 0.3, 3000)
    qs = np.array([0.9, 0.99])
    blocked = S._block_bootstrap_quantiles(x, np.arange(x.size), qs, 2000, np.random.default_rng(0))
    plain = S._bootstrap_quantiles(x, qs, 2000, np.random.default_rng(0))
    assert np.allclose(blocked.mean(axis=1), plain.mean(axis=1), rtol=0.01)
    assert np.allclose(blocked.std(axis=1), plain.std(axis=1), rtol=0.15)


def test_a_few_noisy_blocks_do_not_make_a_settled_tail_regression():
    """An A/A pair timed in blocks of 8 (500 rounds), where five blocks of the new side hit bursts of machine
    noise (2x slower), as in a real noise-only compare whose top samples sat in three rounds: a per-sample
    bootstrap calls the p99 a settled regression, resampling the blocks leaves it unsettled."""
    rng = np.random.default_rng(5)
    blocks = np.repeat(np.arange(500), 8)
    old = rng.lognormal(0.0, 0.15, blocks.size)
    new = rng.lognormal(0.0, 0.15, blocks.size)
    new[np.isin(blocks, (40, 41, 300, 301, 450))] *= 2.0
    plain = S.relative_change(old, new, seed=1)
    blocked = S.relative_change(old, new, seed=1, blocks=(blocks, blocks))
    assert S.tail_verdict(plain, blocks.size) == "regression"
    assert S.tail_verdict(blocked, blocks.size) == "unsettled", blocked.p99_pct_ci
    assert blocked.p50_pct_ci == plain.p50_pct_ci  # the median's CI stays per sample
    with pytest.raises(ValueError, match="one block id per sample"):
        S.relative_change(old, new, blocks=(blocks[:-1], blocks))
