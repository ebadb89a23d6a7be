"""The CI gate: is a latency change significant *and* beyond the budget? (`diagnose ci`, docs/ci.md)

pytest-benchmark's `--benchmark-compare-fail` fails a build on a threshold alone, so noise fails builds. Here a
statistic fails its budget only when the change is a regression the compare's own tests stand behind (the p50:
Mann-Whitney p < alpha and the whole CI above the 1% noise floor; a tail quantile: enough samples and the whole
block-bootstrap CI above the tail's 5% floor) and its estimate is beyond the budget. A change the statistics
cannot settle, whose estimate is beyond the budget, is `inconclusive`: it passes unless `--strict`, and says so.
"""

from __future__ import annotations

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


def check(metric: str, max_pct: float, delta: stats.Delta, n: int,
          limits: stats.Thresholds = stats.WITHIN_RUN) -> GateCheck:
    """One statistic against its budget; `n` is the smaller side's sample count, `limits` the verdict's floors
    (wider against a baseline run)."""
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
        status, message = "inconclusive", (f"{figure} with {n} samples a side; the {metric} needs "
                                           f"{stats.MIN_TAIL_SAMPLES} to be judged: give the compare a larger --budget")
    elif change > max_pct:
        status, message = "inconclusive", (f"{figure}: beyond {budget} but not a significant change; "
                                           "rerun with a larger --budget to settle it")
    elif significant:
        status, message = "pass", f"{figure}: slower, within {budget}"
    else:
        status, message = "pass", f"{figure}: no significant change"
    return GateCheck(metric, max_pct, round(change, 3), (round(lo, 3), round(hi, 3)), bool(significant), status, message)


def evaluate(settings: dict | None, delta: stats.Delta | None, n: int,
             limits: stats.Thresholds = stats.WITHIN_RUN) -> Gate | None:
    """The gate of a run: `settings` from run.json's `gate` ({max_regression: {metric: pct}, strict}), else the
    default budgets. None without a benchmark (nothing measured to gate)."""
    if delta is None:
        return None
    budgets = (settings or {}).get("max_regression") or DEFAULT_MAX_REGRESSION
    strict = bool((settings or {}).get("strict"))
    checks = tuple(check(m, float(budgets[m]), delta, n, limits) for m in METRICS if m in budgets)
    statuses = {c.status for c in checks}
    status = "fail" if "fail" in statuses or (strict and "inconclusive" in statuses) else \
        "inconclusive" if "inconclusive" in statuses else "pass"
    return Gate("ci" if settings else "default", strict, checks, status)
