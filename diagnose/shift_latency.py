"""Tie an input shift to latency: how much of the change would the old model show under the new input mix?

Drift tests say *that* a feature moved; an on-call engineer needs to know whether it matters. The benchmark
times every request on its own (batch size 1) and records which request it was, so each sample can be joined
to that request's size features (text length, list length, image size, payload bytes). For each model we
learn latency as a function of one size feature, from every request that model ran (old and new requests
alike, so the fit covers both ranges), then ask:

    shift_ms  = f_old(new mix) - f_old(old mix)      what the new inputs alone cost the old model
    share     = shift_ms / (observed new p50 - observed old p50)

where "f(mix)" is the median of the fitted latency over the mix's requests. The fit is a piecewise-linear
curve through the medians of quantile bins of the feature (robust to outliers and to the mild curvature of
attention cost), extended by the least-squares line through those medians when a mix reaches past the data.
The feature chosen is the one whose rank correlation with latency is strongest for the old model. A
bootstrap over samples and requests gives the share a confidence interval. When the crossed cell (old model
on new requests) ran, its observed median checks the prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 20
MIN_SAMPLES = 30  # per model, with size features joined: fewer cannot support a curve
TIE_CORRELATION = 0.05  # |Spearman| this close to the best feature's is a tie
MIN_CORRELATION = 0.3  # |Spearman| below this: the feature does not drive latency, do not tie through it
N_BOOT = 200


def join_sizes(samples: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Samples of batch size 1 with the size features of the request each one timed.

    `sizes` holds one row per request: `side` ("old" | "new"), `request_index` (the row in that side's log),
    then one column per size feature.
    """
    single = samples[samples["batch_size"] == 1]
    joined = single.merge(sizes, left_on=["requests", "request_index"], right_on=["side", "request_index"], how="inner")
    return joined.drop(columns=["side"])


class _Curve:
    """Median latency against a size feature: binned medians, interpolated inside, linear outside."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        edges = np.unique(np.quantile(x, np.linspace(0, 1, BINS + 1)))
        if len(edges) < 2:
            edges = np.array([x.min(), x.max() + 1e-9])
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        xs, ys, ws = [], [], []
        for b in np.unique(which):
            mask = which == b
            xs.append(np.median(x[mask]))
            ys.append(np.median(y[mask]))
            ws.append(mask.sum())
        self.x, self.y = np.array(xs), np.array(ys)
        order = np.argsort(self.x)
        self.x, self.y, w = self.x[order], self.y[order], np.array(ws)[order]
        if len(self.x) >= 2 and np.ptp(self.x) > 0:
            self.slope, self.intercept = np.polyfit(self.x, self.y, 1, w=np.sqrt(w))
        else:
            self.slope, self.intercept = 0.0, float(np.median(y))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        inside = np.interp(x, self.x, self.y)
        line = self.intercept + self.slope * x
        low, high = x < self.x[0], x > self.x[-1]
        # past the data: continue from the curve's end with the fitted slope, never below zero
        inside[low] = self.y[0] + (line[low] - (self.intercept + self.slope * self.x[0]))
        inside[high] = self.y[-1] + (line[high] - (self.intercept + self.slope * self.x[-1]))
        return np.maximum(inside, 0.0)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def _pick_feature(frame: pd.DataFrame, features: list[str], preferred: list[str]) -> tuple[str | None, dict]:
    """The size feature most rank-correlated with the old model's latency. Features within TIE_CORRELATION of the
    best measure the same thing (a text's chars, words and bytes move together), and which of them leads is noise
    on a busy machine; among those, drifted features win, then a column's own feature (`text.chars`) over the
    whole request's (`payload_bytes`), because it names the input that moved."""
    correlations = {}
    for feature in features:
        data = frame[[feature, "latency_ms"]].dropna()
        if len(data) >= MIN_SAMPLES:
            correlations[feature] = round(_spearman(data[feature].to_numpy(), data["latency_ms"].to_numpy()), 4)
    if not correlations or max(abs(c) for c in correlations.values()) < MIN_CORRELATION:
        return None, correlations
    top = max(abs(c) for c in correlations.values())
    tied = [f for f, c in correlations.items() if abs(c) >= top - TIE_CORRELATION]
    best = min(tied, key=lambda f: (f not in preferred, "." not in f, -abs(correlations[f]), f))
    return best, correlations


def tie_to_latency(samples: pd.DataFrame, sizes: pd.DataFrame, drifted: list[str] | None = None,
                   seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """How much of the old -> new change of the median the shift in one size feature explains.

    Returns a JSON-able dict with `status` "ok" or "unavailable" (and a `reason`).
    """
    features = [c for c in sizes.columns if c not in ("side", "request_index")]
    if not features:
        return {"status": "unavailable", "reason": "the requests have no size features (no text, list or bytes columns)"}
    joined = join_sizes(samples, sizes)
    old_model = joined[joined["model"] == "old"]
    if len(old_model) < MIN_SAMPLES:
        return {"status": "unavailable",
                "reason": f"only {len(old_model)} single-request samples of the old model (batch size 1 is needed "
                          "to join a latency to its request)"}
    feature, correlations = _pick_feature(old_model, features, list(drifted or []))
    if feature is None:
        return {"status": "unavailable", "correlations": correlations,
                "reason": "no size feature correlates with the old model's latency (|Spearman| < "
                          f"{MIN_CORRELATION}): request size does not drive latency here"}

    observed = {key: float(group["latency_ms"].median()) for key, group in samples.groupby("cell")}
    old_p50, new_p50 = observed.get("old_model/old_requests"), observed.get("new_model/new_requests")
    mix = {side: sizes.loc[sizes["side"] == side, feature].dropna().to_numpy(dtype=float) for side in ("old", "new")}
    if not len(mix["old"]) or not len(mix["new"]):
        return {"status": "unavailable", "reason": f"{feature} has no values on one side"}
    rng = np.random.default_rng(seed)
    data = old_model[[feature, "latency_ms"]].dropna()
    x, y = data[feature].to_numpy(dtype=float), data["latency_ms"].to_numpy(dtype=float)

    def estimate(xs, ys, old_mix, new_mix) -> tuple[float, float]:
        curve = _Curve(xs, ys)
        return float(np.median(curve(old_mix))), float(np.median(curve(new_mix)))

    at_old, at_new = estimate(x, y, mix["old"], mix["new"])
    shift = at_new - at_old
    total = (new_p50 - old_p50) if old_p50 is not None and new_p50 is not None else None
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        a, b = estimate(x[i], y[i], rng.choice(mix["old"], len(mix["old"])), rng.choice(mix["new"], len(mix["new"])))
        boots.append(b - a)
    low, high = np.percentile(boots, [2.5, 97.5])
    covered = (x.min() <= np.median(mix["new"]) <= x.max())
    result = {
        "status": "ok",
        "feature": feature,
        "method": "binned-median curve of the old model's latency against the feature, over every request it ran",
        "spearman": correlations[feature],
        "correlations": correlations,
        "old_mix_median": float(np.median(mix["old"])),
        "new_mix_median": float(np.median(mix["new"])),
        "mix_ratio": float(np.median(mix["new"]) / np.median(mix["old"])) if np.median(mix["old"]) else None,
        "old_model_at_old_mix_ms": round(at_old, 4),
        "old_model_at_new_mix_ms": round(at_new, 4),
        "shift_ms": round(shift, 4),
        "shift_ci_ms": [round(float(low), 4), round(float(high), 4)],
        "significant": bool(low > 0 or high < 0),
        "observed_old_p50_ms": old_p50,
        "observed_new_p50_ms": new_p50,
        "total_ms": round(total, 4) if total is not None else None,
        "share": round(shift / total, 4) if total and abs(total) > 1e-9 else None,
        "extrapolated": not bool(covered),
        "samples": int(len(x)),
    }
    crossed = observed.get("old_model/new_requests")
    if crossed is not None:
        result["observed_old_model_new_requests_ms"] = crossed
        result["prediction_error_pct"] = round(100 * (at_new - crossed) / crossed, 2) if crossed else None
    result["text"] = _text(result)
    return result


def _text(r: dict) -> str:
    lo, hi = r["shift_ci_ms"]
    words = (f"{r['feature']}: median {r['old_mix_median']:.4g} -> {r['new_mix_median']:.4g}"
             + (f" ({r['mix_ratio']:.2f}x)" if r["mix_ratio"] else "")
             + f"; at the new mix the old model's p50 would be {r['old_model_at_new_mix_ms']:.2f} ms "
               f"(vs {r['old_model_at_old_mix_ms']:.2f} ms at the old mix): {r['shift_ms']:+.2f} ms "
               f"(95% CI {lo:+.2f} .. {hi:+.2f})")
    if r["share"] is not None:
        words += f", {100 * r['share']:.0f}% of the observed change"
    if r["observed_new_p50_ms"] is not None:
        words += f"; the new version measured {r['observed_new_p50_ms']:.2f} ms"
    if r["extrapolated"]:
        words += " (extrapolated past the old model's measured range)"
    return words
