"""The CI gate: is a latency change significant *and* beyond the budget? (`diagnose ci`, docs/ci.md)

pytest-benchmark's `--benchmark-compare-fail` fails a build on a threshold alone, so noise fails builds. Here a
statistic fails its budget only when the change is a regression the compare's own tests stand behind (the p50:
Mann-Whitney p < alpha and the whole CI above the 1% noise floor; a tail quantile: enough samples and the whole
block-bootstrap CI above the tail's 5% floor) and its estimate is beyond the budget. A change the statistics
cannot settle, whose estimate is beyond the budget, is `inconclusive`: it passes unless `--strict`, and says so.
"""

from __future__ import annotations

import math

from diagnose.core import stats
from diagnose.core.errors import UserError
from diagnose.core.report import Gate, GateCheck

METRICS = ("p50", "p90", "p99")
DEFAULT_MAX_REGRESSION = {"p50": 5.0, "p99": 5.0}  # what a run that `diagnose ci` did not make is gated on


def parse_budget(text: str) -> tuple[str, float]:
    """"p99=5%" (or "p99=5") -> ("p99", 5.0)."""
    metric, sep, value = text.partition("=")
    metric = metric.strip().lower()
    if not sep or metric not in METRICS:
        raise UserError(f"expected METRIC=PERCENT with METRIC one of {', '.join(METRICS)}, e.g. p99=5%; got {text!r}",
                        key="--max-regression")
    try:
        pct = float(value.strip().rstrip("%"))
    except ValueError:
        raise UserError(f"expected a percentage after {metric}=, e.g. {metric}=5%; got {value!r}",
                        key="--max-regression") from None
    if not 0 <= pct < 1e6:
        raise UserError(f"the budget must be a percentage >= 0, got {value!r}", key="--max-regression")
    return metric, pct


def _pct(x: float) -> str:
    return f"{x:+.1f}%"


MAX_ADVISED_FACTOR = 20.0  # past this many times the run's samples, a larger --budget is no practical advice
# A rerun at the advised size fails a true change of this estimate 4 times in 5: its CI's lower half-width must be
# (z of the 95% CI) / (that z + z of 80% power) of the distance from the estimate to the floor.
SETTLE_MARGIN = ((1.96 + 0.84) / 1.96) ** 2


def settle_advice(factor: float, measured_s: float | None, metric: str) -> str:
    """What would settle an inconclusive check: `factor` times this run's samples, as a --budget when the run's
    measured seconds are known (samples grow with the measuring time)."""
    if factor > MAX_ADVISED_FACTOR:
        return (f"more than {MAX_ADVISED_FACTOR:g}x this run's samples would be needed: this machine is too noisy to "
                f"judge this {metric} budget; gate a larger --max-regression, or run on a quieter machine")
    if not measured_s:
        return f"about {factor:.1f}x this run's samples would settle it: give the compare a larger --budget"
    budget = 5 * math.ceil(measured_s * factor / 5)
    return f"about {factor:.1f}x this run's samples would settle it: --budget {budget} (this run measured {measured_s:.0f} s)"


def check(metric: str, max_pct: float, delta: stats.Delta, n: int,
          limits: stats.Thresholds = stats.WITHIN_RUN, measured_s: float | None = None) -> GateCheck:
    """One statistic against its budget; `n` is the smaller side's sample count, `limits` the verdict's floors
    (wider against a baseline run), `measured_s` the benchmark's seconds (for the advice an inconclusive check
    gives: a CI narrows as one over the root of the samples, so the advice is the samples that bring the CI's lower
    half-width under the distance between the estimate and the floor, with `SETTLE_MARGIN` for the estimate's own
    move)."""
    change = float(getattr(delta, f"{metric}_pct"))
    lo, hi = (float(v) for v in getattr(delta, f"{metric}_pct_ci"))
    if metric == "p50":
        significant = delta.p_value < stats.ALPHA and lo > limits.noise_floor_pct
        settled = True
    else:
        significant = n >= stats.MIN_TAIL_SAMPLES and lo > limits.tail_noise_floor_pct
        settled = n >= stats.MIN_TAIL_SAMPLES
    figure = f"{metric} {_pct(change)} (95% CI {_pct(lo)} .. {_pct(hi)})"
    budget = f"the {_pct(max_pct)} budget"
    if significant and change > max_pct:
        status, message = "fail", f"{figure} is beyond {budget}"
    elif hi <= max_pct:
        status, message = "pass", f"{figure}: within {budget}"
    elif change > max_pct and not settled:
        advice = settle_advice(stats.MIN_TAIL_SAMPLES / max(n, 1), measured_s, metric)
        status, message = "inconclusive", (f"{figure} with {n} samples a side; the {metric} needs "
                                           f"{stats.MIN_TAIL_SAMPLES} to be judged: {advice}")
    elif change > max_pct:
        floor = limits.noise_floor_pct if metric == "p50" else limits.tail_noise_floor_pct
        factor = SETTLE_MARGIN * ((change - lo) / (change - floor)) ** 2
        advice = (f"if the estimate held, {settle_advice(factor, measured_s, metric)}"
                  if change > floor else f"a change within the {metric}'s {floor:g}% noise floor is never called "
                  "a regression: a budget under the floor cannot fail")
        status, message = "inconclusive", f"{figure}: beyond {budget} but not a significant change; {advice}"
    elif significant:
        status, message = "pass", f"{figure}: slower, within {budget}"
    else:
        status, message = "pass", f"{figure}: no significant change"
    return GateCheck(metric, max_pct, round(change, 3), (round(lo, 3), round(hi, 3)), bool(significant), status, message)


def evaluate(settings: dict | None, delta: stats.Delta | None, n: int,
             limits: stats.Thresholds = stats.WITHIN_RUN, measured_s: float | None = None) -> Gate | None:
    """The gate of a run: `settings` from run.json's `gate` ({max_regression: {metric: pct}, strict}), else the
    default budgets. None without a benchmark (nothing measured to gate)."""
    if delta is None:
        return None
    budgets = (settings or {}).get("max_regression") or DEFAULT_MAX_REGRESSION
    strict = bool((settings or {}).get("strict"))
    checks = tuple(check(m, float(budgets[m]), delta, n, limits, measured_s) for m in METRICS if m in budgets)
    statuses = {c.status for c in checks}
    status = "fail" if "fail" in statuses or (strict and "inconclusive" in statuses) else \
        "inconclusive" if "inconclusive" in statuses else "pass"
    return Gate("ci" if settings else "default", strict, checks, status)
