"""The latency tie: per-request latencies joined to request sizes say how much of a change the shift explains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose.shift_latency import tie_to_latency

CELLS = {("old", "old"), ("new", "old"), ("old", "new"), ("new", "new")}


def _sizes(rng, old_len, new_len, rows=300) -> pd.DataFrame:
    parts = []
    for side, (low, high) in (("old", old_len), ("new", new_len)):
        lengths = rng.integers(low, high, rows).astype(float)
        parts.append(pd.DataFrame({"side": side, "request_index": np.arange(rows), "text.chars": lengths,
                                   "payload_bytes": rng.normal(500, 50, rows)}))
    return pd.concat(parts, ignore_index=True)


def _samples(rng, sizes, cost, cells=CELLS, per_cell=400, batch_size=1) -> pd.DataFrame:
    """Latency = cost[model](length) + noise, for requests drawn from each side's log."""
    rows = []
    for model, requests in sorted(cells):
        side = sizes[sizes["side"] == requests]
        picks = rng.integers(0, len(side), per_cell)
        lengths = side["text.chars"].to_numpy()[picks]
        latency = cost[model](lengths) + rng.gamma(2.0, 0.15, per_cell)
        rows.append(pd.DataFrame({"cell": f"{model}_model/{requests}_requests", "model": model, "requests": requests,
                                  "request_index": picks, "batch_size": batch_size, "latency_ms": latency}))
    return pd.concat(rows, ignore_index=True)


def test_longer_requests_explain_the_whole_change():
    rng = np.random.default_rng(0)
    sizes = _sizes(rng, (10, 40), (60, 160))
    cost = {"old": lambda n: 1 + 0.05 * n, "new": lambda n: 1 + 0.05 * n}
    tie = tie_to_latency(_samples(rng, sizes, cost), sizes, drifted=["text.chars"])
    assert tie["status"] == "ok" and tie["feature"] == "text.chars"
    assert tie["mix_ratio"] == pytest.approx(109.5 / 24.5, rel=0.1)
    assert tie["shift_ms"] == pytest.approx(0.05 * (110 - 25), rel=0.15)
    assert tie["significant"] and 0.85 < tie["share"] < 1.15
    assert not tie["extrapolated"]
    assert abs(tie["prediction_error_pct"]) < 5  # the crossed cell confirms the curve
    assert "text.chars" in tie["text"] and "% of the observed change" in tie["text"]


def test_a_model_change_on_the_same_mix_is_not_explained_by_inputs():
    rng = np.random.default_rng(1)
    sizes = _sizes(rng, (10, 40), (10, 40))
    cost = {"old": lambda n: 1 + 0.05 * n, "new": lambda n: 3 + 0.05 * n}
    tie = tie_to_latency(_samples(rng, sizes, cost), sizes)
    assert tie["status"] == "ok"
    assert abs(tie["share"]) < 0.15
    assert abs(tie["shift_ms"]) < 0.3


def test_without_the_crossed_cell_the_curve_extrapolates_and_says_so():
    rng = np.random.default_rng(2)
    sizes = _sizes(rng, (10, 40), (60, 160))
    cost = {"old": lambda n: 1 + 0.05 * n, "new": lambda n: 1 + 0.05 * n}
    samples = _samples(rng, sizes, cost, cells={("old", "old"), ("new", "new")})
    tie = tie_to_latency(samples, sizes)
    assert tie["extrapolated"]
    assert tie["shift_ms"] == pytest.approx(0.05 * (110 - 25), rel=0.3)
    assert "observed_old_model_new_requests_ms" not in tie
    assert "extrapolated" in tie["text"]


def test_no_size_feature_driving_latency_is_unavailable():
    rng = np.random.default_rng(3)
    sizes = _sizes(rng, (10, 40), (60, 160))
    flat = {"old": lambda n: np.full(len(n), 2.0), "new": lambda n: np.full(len(n), 2.0)}
    tie = tie_to_latency(_samples(rng, sizes, flat), sizes)
    assert tie["status"] == "unavailable" and "does not drive latency" in tie["reason"]


def test_batched_samples_cannot_be_joined_to_one_request():
    rng = np.random.default_rng(4)
    sizes = _sizes(rng, (10, 40), (60, 160))
    cost = {"old": lambda n: 1 + 0.05 * n, "new": lambda n: 1 + 0.05 * n}
    tie = tie_to_latency(_samples(rng, sizes, cost, batch_size=8), sizes)
    assert tie["status"] == "unavailable" and "batch size 1" in tie["reason"]


def test_requests_without_size_features():
    sizes = pd.DataFrame({"side": ["old", "new"], "request_index": [0, 0]})
    assert tie_to_latency(pd.DataFrame(), sizes)["status"] == "unavailable"


@pytest.mark.parametrize("drifted", [[], ["payload_bytes", "text.chars", "text.words"]])
def test_features_that_move_together_tie_on_the_column_feature(drifted):
    """chars, words and bytes of one text rank latency alike; which leads by a hair is noise, so the column's own
    feature is named (with or without drift flags), never the whole request's bytes."""
    rng = np.random.default_rng(1)
    sizes = _sizes(rng, (10, 40), (60, 160))
    sizes["payload_bytes"] = sizes["text.chars"] + 40  # the request's bytes follow its text exactly
    sizes["text.words"] = (sizes["text.chars"] / 5).round()
    cost = {"old": lambda n: 1 + 0.05 * n, "new": lambda n: 1 + 0.05 * n}
    tie = tie_to_latency(_samples(rng, sizes, cost), sizes, drifted=drifted)
    assert tie["status"] == "ok" and tie["feature"] == "text.chars", tie["correlations"]
    assert tie["correlations"]["payload_bytes"] == tie["correlations"]["text.chars"]
