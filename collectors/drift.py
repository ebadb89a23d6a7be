"""Feature-schema and distribution drift between two request logs (pure functions: no model, no latency).

A model update often ships with new inputs: longer texts, more recommender candidates, bigger images, a new
column, float64 where float32 was. Any of these can make serving slower with an innocent model, so this module
says what changed in the requests themselves, in two layers:

- the schema (TFDV-style): kinds, dtypes, nulls, list rank and shape, categorical domains; `schema_diff` names
  each change in one sentence, and `check_expected` holds a log against the manifest's optional `inputs.schema`;
- the distributions (Evidently's default test selection): every number, bool and categorical column and every
  size feature (text length, list length, image dims, payload bytes) gets a two-sample test or a distance.

Unlike `diagnose.core.requestlog.load_requests`, nothing here refuses nulls or odd cells: a null appearing or a
column turning all-null is a finding, never a crash (Evidently#1480), and identical samples give exactly no
drift, ties included (Evidently#171), because every statistic is exactly zero on equal inputs.

Everything is vectorized over rows (numpy kernels on Arrow buffers: text lengths and word counts from the UTF-8
bytes, list shapes from the offsets). Object columns cost a few C-level passes over their cells (type, len,
dtype); only irregular nested lists (ragged depth, odd leaves) are walked value by value.

This module compares two logs (`feature_drift`, `drift_report`: both profiles and the feature tests on threads
for large logs, Holm's correction over all tests of one report); the pieces are their own modules:

- `drift_profile`: the one pass over each column (`Profile`, of `drift_column.Column`s), with the text and list
  columns' structure and size features in `drift_text` and `drift_lists`;
- `drift_schema`: `size_features`, `schema`, `schema_diff` and `check_expected`;
- `drift_features`: the features two logs are compared on, each one's test and sentence, with the two-sample
  statistics in `drift_statistics`.

Request logs are read by `diagnose.core.requestlog.read_requests` (as they are: nulls kept, list columns in
Arrow), in `diagnose drift` and in a compare alike, and `identical` there is the one test of identical logs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from collectors.drift_features import describe, finite, pair_features, run_feature
from collectors.drift_profile import Profile
from collectors.drift_schema import check_expected, schema, schema_diff, size_features
from collectors.drift_statistics import DISTANCE_THRESHOLD, METHODS, P_VALUE_METHODS, PSI_THRESHOLD, SMALL_SAMPLE
from diagnose.core.requestlog import identical, read_requests

__all__ = ["ALPHA", "DISTANCE_THRESHOLD", "PSI_THRESHOLD", "check_expected", "drift_report", "feature_drift",
           "read_requests", "schema", "schema_diff", "size_features"]

ALPHA = 0.05  # family-wise, Holm-corrected over all p-value tests of one report
PARALLEL_VALUES = 2_000_000  # values in all features together above which features are tested on threads


def _cores() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _profiles(old: pd.DataFrame, new: pd.DataFrame) -> tuple[Profile, Profile]:
    """Both frames analysed, side by side on two threads when they are large (the work is mostly numpy and
    Arrow kernels, which release the GIL)."""
    if old.size + new.size < PARALLEL_VALUES or _cores() < 2:
        return Profile(old), Profile(new)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(Profile, old), pool.submit(Profile, new)
        return a.result(), b.result()


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, (m - j) * p_j, capped at 1, cumulative max."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for j, index in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _feature_drift(a: Profile, b: Profile, method: str, alpha: float, threshold: float | None) -> list[dict]:
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")
    features = pair_features(a, b)
    values = sum(len(f.old) + len(f.new) for f in features if f.old is not None and f.new is not None)
    if values >= PARALLEL_VALUES and _cores() > 1:
        # sorting dominates at scale and numpy releases the GIL while it sorts
        with ThreadPoolExecutor(min(4, _cores())) as pool:
            entries = list(pool.map(lambda feature: run_feature(feature, method, threshold), features))
    else:
        entries = [run_feature(feature, method, threshold) for feature in features]
    tested = [e for e in entries if e["status"] == "ok" and e["method"] in P_VALUE_METHODS]
    adjusted_all = _holm([e["p_value"] if e["p_value"] is not None else 1.0 for e in tested])
    for entry, adjusted in zip(tested, adjusted_all, strict=True):
        entry["p_adjusted"] = finite(adjusted)
        entry["drift"] = bool(adjusted <= alpha)
    for entry in entries:
        entry["text"] = describe(entry)
        entry.pop("_detail", None)
    return sorted(entries, key=lambda e: (not e["drift"], e["feature"]))


def feature_drift(old: pd.DataFrame, new: pd.DataFrame, method: str = "auto", alpha: float = ALPHA,
                  threshold: float | None = None) -> list[dict]:
    """Test every number, bool and categorical column and every size feature; drifted first, then by name."""
    return _feature_drift(*_profiles(old, new), method, alpha, threshold)


def drift_report(old: pd.DataFrame, new: pd.DataFrame, method: str = "auto", alpha: float = ALPHA,
                 threshold: float | None = None, expected: dict | None = None) -> dict:
    """Schema changes, expected-schema findings and feature drift between two request logs, JSON-able."""
    a, b = _profiles(old, new)
    schema_old, schema_new = a.schema(), b.schema()
    changes = schema_diff(schema_old, schema_new)
    expected_findings = check_expected(expected, schema_new) if expected else []
    features = _feature_drift(a, b, method, alpha, threshold)
    drifted = [f["feature"] for f in features if f["drift"]]
    tested = sum(1 for f in features if f["status"] == "ok")
    skipped = len(features) - tested
    summary = []
    if drifted:
        summary.append(f"drift in {len(drifted)} of {tested} features")
        summary.extend(f["text"] for f in features if f["drift"])
    else:
        summary.append(f"no drift in {tested} features")
    if skipped:
        reasons = "; ".join(f"{f['feature']} ({f['reason']})" for f in features if f["status"] == "skipped")
        summary.append(f"{skipped} feature{'s' if skipped > 1 else ''} skipped: {reasons}")
    summary.extend(f["text"] for f in changes)
    summary.extend(f["text"] for f in expected_findings)
    return {
        "status": "ok",
        "identical": identical(old, new),
        "rows": {"old": a.rows, "new": b.rows},
        "schema": {"old": schema_old, "new": schema_new},
        "schema_changes": changes,
        "expected_schema": expected_findings,
        "features": features,
        "drifted": drifted,
        "settings": {"method": method, "alpha": float(alpha), "threshold": None if threshold is None else float(threshold),
                     "small_sample": SMALL_SAMPLE, "correction": "holm"},
        "summary": summary,
    }
