"""The features two request logs are compared on, and each one's test and sentence.

A feature is a number, bool or categorical column present on both sides, or a size feature (text length,
list length, image dims, payload bytes); `pair_features` lines them up from the two profiles, `run_feature`
tests one (its Holm correction is over all of them, in `collectors.drift`), `describe` says it in one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from collectors.drift_column import CATEGORICAL_MAX_UNIQUE
from collectors.drift_profile import Profile
from collectors.drift_schema import share_text
from collectors.drift_statistics import (
    DISTANCE_THRESHOLD,
    P_VALUE_METHODS,
    PSI_THRESHOLD,
    QUANTILE_P,
    categorical_test,
    category_counts,
    method_for,
    numeric_test,
    significant,
    sorted_pair,
    top_categories,
    weighted_median,
)


@dataclass
class Feature:
    """One feature's values on both sides; `skip` says why it cannot be tested."""
    name: str
    source: str
    type: str  # numeric | categorical
    derived: bool
    old: object  # numeric: float64 values; categorical: pd.Series of labels
    new: object
    old_nulls: int
    new_nulls: int
    skip: str | None = None


def pair_features(a: Profile, b: Profile) -> list[Feature]:
    """Every feature both logs can be compared on: columns in order, then size features (a column
    added, removed or changing kind is schema_diff's finding, not a feature)."""
    features = []
    for name, ca in a.columns.items():
        cb = b.columns.get(name)
        if cb is None:
            continue
        kinds = {ca.kind, cb.kind} - {"empty"}
        if not kinds:
            features.append(Feature(name, name, "numeric", False, None, None, ca.nulls, cb.nulls,
                                    "no values in old or new"))
            continue
        if len(kinds) > 1:
            if kinds & {"number", "bool", "text"}:
                features.append(Feature(name, name, "categorical", False, None, None, ca.nulls, cb.nulls,
                                        f"kind changed: {ca.kind} -> {cb.kind}"))
            continue
        kind = kinds.pop()
        if kind not in ("number", "bool", "text"):
            continue
        if ca.mixed or cb.mixed:
            features.append(Feature(name, name, "categorical", False, None, None, ca.nulls, cb.nulls,
                                    "mixed kinds in one column"))
            continue
        domains = [c.domain for c in (ca, cb) if c.kind != "empty"]
        categorical = kind == "bool" or (all(d is not None for d in domains)
                                         and len({json.dumps(v) for d in domains for v in d}) <= CATEGORICAL_MAX_UNIQUE)
        if kind == "text" and not categorical:
            continue  # free text: tested through its size features
        if categorical:
            old = ca.labels if ca.labels is not None else pd.Series([], dtype=object)
            new = cb.labels if cb.labels is not None else pd.Series([], dtype=object)
            features.append(Feature(name, name, "categorical", False, old, new, ca.nulls, cb.nulls))
        else:
            old = ca.numeric if ca.numeric is not None else np.empty(0)
            new = cb.numeric if cb.numeric is not None else np.empty(0)
            features.append(Feature(name, name, "numeric", False, old, new, ca.nulls, cb.nulls))
    changed = {name for name, ca in a.columns.items() if name in b.columns
               and len({ca.kind, b.columns[name].kind} - {"empty"}) > 1}
    sizes_a, sizes_b = a.sizes(), b.sizes()
    for name in list(sizes_a) + [n for n in sizes_b if n not in sizes_a]:
        source = (sizes_a.get(name) or sizes_b.get(name))[0]
        if source != "*" and (source not in a.columns or source not in b.columns or source in changed):
            continue  # schema_diff names the added or removed column, or its change of kind
        sides = []
        for sizes, profile in ((sizes_a, a), (sizes_b, b)):
            values = sizes[name][1] if name in sizes else np.full(profile.rows, np.nan)
            nulls = np.isnan(values)
            sides.append((values[~nulls], int(nulls.sum())))
        features.append(Feature(name, source, "numeric", True, sides[0][0], sides[1][0], sides[0][1], sides[1][1]))
    return features


def finite(value) -> float | None:
    """A statistic as the report holds it: a float, or None for a missing or infinite one."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def _fmt_p(p: float) -> str:
    return "p < 1e-300" if p == 0 else f"p = {p:.2g}"


LABELS = {"ks": "KS", "chisquare": "chi-square", "wasserstein": "Wasserstein (normed)", "jensenshannon": "Jensen-Shannon",
          "psi": "PSI"}


def run_feature(feature: Feature, method: str, threshold: float | None) -> dict:
    """One feature's entry: method, statistic, p-value or threshold, means and medians, and what a plot overlays:
    a numeric feature's `quantiles`, a categorical one's `categories` (Holm's correction over all entries and the
    sentence come after; a skipped feature gets neither)."""
    entry = {"feature": feature.name, "source": feature.source, "type": feature.type, "derived": feature.derived,
             "status": "ok", "reason": None, "method": None, "statistic": None, "p_value": None, "p_adjusted": None,
             "threshold": None, "drift": False, "old_n": 0, "new_n": 0, "old_nulls": feature.old_nulls,
             "new_nulls": feature.new_nulls, "old_mean": None, "new_mean": None, "old_p50": None, "new_p50": None,
             "ratio_mean": None, "text": ""}
    if feature.skip is None:
        entry["old_n"], entry["new_n"] = len(feature.old), len(feature.new)
        if entry["old_n"] == 0 and entry["new_n"] == 0:
            feature.skip = "no values in old or new"
        elif entry["old_n"] == 0:
            feature.skip = "no values in old"
        elif entry["new_n"] == 0:
            feature.skip = "no values in new"
    if feature.skip is not None:
        entry.update(status="skipped", reason=feature.skip, text=f"{feature.name}: skipped ({feature.skip})")
        return entry
    chosen = method_for(method, feature.type, entry["old_n"])
    entry["method"] = chosen
    if chosen not in P_VALUE_METHODS:
        default = PSI_THRESHOLD if chosen == "psi" else DISTANCE_THRESHOLD
        entry["threshold"] = float(threshold) if threshold is not None else default
    if feature.type == "numeric":
        a, b = sorted_pair(feature.old, feature.new, integer=feature.derived)
        statistic, p_value = numeric_test(chosen, feature.old, feature.new, a, b)
        entry.update(old_mean=finite(feature.old.mean(dtype=np.float64)), new_mean=finite(feature.new.mean(dtype=np.float64)),
                     old_p50=finite(a.median()),
                     new_p50=finite(b.median()))
        entry["quantiles"] = {"p": list(QUANTILE_P), "old": [significant(x) for x in a.quantiles(QUANTILE_P)],
                              "new": [significant(x) for x in b.quantiles(QUANTILE_P)]}
        entry["_detail"] = ""
    else:
        keys, a, b = category_counts(feature.old, feature.new)
        statistic, p_value = categorical_test(chosen, a, b)
        if all(isinstance(k, (int, float)) for k in keys):
            values_a, values_b = np.asarray(keys, dtype=np.float64), np.asarray(keys, dtype=np.float64)
            entry.update(old_mean=finite(np.dot(values_a, a) / a.sum()), new_mean=finite(np.dot(values_b, b) / b.sum()),
                         old_p50=finite(weighted_median(values_a, a)), new_p50=finite(weighted_median(values_b, b)))
        shares_a, shares_b = a / a.sum(), b / b.sum()
        entry["categories"] = top_categories(keys, a, b)
        top = int(np.argmax(np.abs(shares_b - shares_a)))
        entry["_detail"] = f"share of {keys[top]!r} {share_text(shares_a[top])} -> {share_text(shares_b[top])}"
    entry["statistic"] = finite(statistic)
    entry["p_value"] = finite(p_value)
    if entry["old_mean"] not in (None, 0.0) and entry["new_mean"] is not None:
        entry["ratio_mean"] = finite(entry["new_mean"] / entry["old_mean"])
    if entry["threshold"] is not None:
        entry["drift"] = bool(statistic > entry["threshold"])
    return entry


def describe(entry: dict) -> str:
    """An entry in one line, as the summary prints it."""
    if entry["status"] != "ok":
        return entry["text"]
    parts = []
    if entry["type"] == "numeric" or entry["_detail"] == "":
        if entry["old_mean"] is not None:
            ratio = f" ({entry['ratio_mean']:.3g}x)" if entry["ratio_mean"] is not None else ""
            parts.append(f"mean {_fmt(entry['old_mean'])} -> {_fmt(entry['new_mean'])}{ratio}")
    else:
        parts.append(entry["_detail"])
    label = LABELS[entry["method"]]
    statistic = "inf" if entry["statistic"] is None else f"{entry['statistic']:.3g}"
    verdict = "drift" if entry["drift"] else "no drift"
    if entry["method"] in P_VALUE_METHODS:
        test = f"{label} {statistic}, {_fmt_p(entry['p_adjusted'])} (Holm) -> {verdict}"
    else:
        sign = ">" if entry["drift"] else "<="
        test = f"{label} {statistic} {sign} {entry['threshold']:.3g} -> {verdict}"
    return f"{entry['feature']}: {'; '.join(parts + [test])}"
