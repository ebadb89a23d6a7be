"""Factorial attribution on cells with known effects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.attribution import NN, NO, ON, OO, attribute


def cells(a, b, c, d, n=400, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return {key: m * np.exp(rng.normal(0, noise, n)) for key, m in ((OO, a), (NO, b), (ON, c), (NN, d))}


def test_pure_model_effect():
    result = attribute(cells(10, 20, 10, 20))
    assert result["model"]["effect_ms"] == pytest.approx(10, rel=0.02)
    assert result["model"]["share"] == pytest.approx(1, abs=0.02) and result["model"]["significant"]
    assert abs(result["input"]["effect_ms"]) < 0.2 and not result["input"]["significant"]
    assert abs(result["interaction"]["effect_ms"]) < 0.3


def test_pure_input_effect():
    result = attribute(cells(10, 10, 25, 25))
    assert result["input"]["effect_ms"] == pytest.approx(15, rel=0.02) and result["input"]["share"] > 0.98
    assert not result["model"]["significant"]


def test_interaction_model_slower_only_on_new_inputs():
    result = attribute(cells(10, 10, 20, 40))
    assert result["interaction"]["effect_ms"] == pytest.approx(20, rel=0.05) and result["interaction"]["significant"]
    assert result["model"]["effect_ms"] == pytest.approx(10, rel=0.05)
    assert result["input"]["effect_ms"] == pytest.approx(20, rel=0.05)


@settings(max_examples=40, deadline=None)
@given(st.floats(1, 100), st.floats(1, 100), st.floats(1, 100), st.floats(1, 100))
def test_main_effects_add_up_to_the_total(a, b, c, d):
    result = attribute({k: np.full(5, v) for k, v in ((OO, a), (NO, b), (ON, c), (NN, d))}, n_boot=50)
    assert result["model"]["effect_ms"] + result["input"]["effect_ms"] == pytest.approx(d - a, abs=1e-3)
    assert result["total_ms"] == pytest.approx(d - a, abs=1e-3)


def test_ci_contains_point_and_covers_truth():
    result = attribute(cells(10, 13, 11, 14, noise=0.1))
    for name in ("model", "input"):
        low, high = result[name]["ci_ms"]
        assert low <= result[name]["effect_ms"] <= high
    assert result["model"]["ci_ms"][0] <= 3 <= result["model"]["ci_ms"][1]


def test_one_crossed_cell_missing_measures_along_the_path_that_runs():
    data = cells(10, 20, 10, 20)
    del data[ON]
    result = attribute(data, {ON: "schema mismatch"})
    assert result["interaction"] is None and "schema mismatch" in result["note"]
    assert result["model"]["effect_ms"] == pytest.approx(10, rel=0.03)
    assert abs(result["input"]["effect_ms"]) < 0.3


def test_no_crossed_cells():
    data = cells(10, 20, 10, 20)
    del data[ON], data[NO]
    result = attribute(data)
    assert result["model"] is None and "cannot be separated" in result["note"]


def test_deterministic_for_a_seed():
    assert attribute(cells(10, 12, 11, 13), seed=3) == attribute(cells(10, 12, 11, 13), seed=3)
