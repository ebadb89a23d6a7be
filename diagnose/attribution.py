"""Factorial attribution: how much of the latency change is the model's, how much the inputs'.

The 2x2 design crosses {old model, new model} with {old requests, new requests}. On the median latency
of each cell (a = old/old, b = new model/old requests, c = old model/new requests, d = new/new):
    model effect       = ((b - a) + (d - c)) / 2
    input effect       = ((c - a) + (d - b)) / 2
    interaction        = (d - c) - (b - a)
The two main effects add up to the total change d - a exactly; the interaction says how much the model's
effect depends on the inputs (a model that got slower only on long requests). CIs come from a bootstrap of
each cell's median. When a crossed cell cannot run, the effects are measured along the path that can
(one-sided, no interaction), and the result says so.
"""

from __future__ import annotations

import numpy as np

from diagnose.core.stats import bootstrap_quantile

OO, NO, ON, NN = "old_model/old_requests", "new_model/old_requests", "old_model/new_requests", "new_model/new_requests"


def _effect(replicates: np.ndarray, point: float, base_ms: float, total_ms: float, confidence: float) -> dict:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return {
        "effect_ms": round(float(point), 4),
        "ci_ms": [round(float(low), 4), round(float(high), 4)],
        "effect_pct": round(100 * point / base_ms, 3) if base_ms else None,
        "share": round(float(point / total_ms), 4) if abs(total_ms) > 1e-9 else None,
        "significant": bool(low > 0 or high < 0),
    }


def attribute(cells: dict[str, np.ndarray], unavailable: dict[str, str] | None = None,
              confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Split the change of the median between model and inputs; `cells` maps cell keys to latency samples."""
    unavailable = dict(unavailable or {})
    rng = np.random.default_rng(seed)
    present = {k: np.asarray(v, dtype=float) for k, v in cells.items() if len(v)}
    medians = {k: float(np.median(v)) for k, v in present.items()}
    boots = {k: bootstrap_quantile(v, 0.5, n_boot, rng) for k, v in present.items()}
    result: dict = {
        "method": "2x2 factorial on median latency",
        "cells": {k: {"p50_ms": round(medians[k], 4), "n": int(len(present[k]))} for k in (OO, NO, ON, NN) if k in present},
        "unavailable": unavailable,
        "model": None, "input": None, "interaction": None, "note": "",
    }
    if OO not in present or NN not in present:
        result["note"] = "the old or new version did not run on its own requests; nothing to attribute"
        return result
    a, d = medians[OO], medians[NN]
    total = d - a
    result["total_ms"] = round(total, 4)
    fx = lambda reps, point: _effect(reps, point, a, total, confidence)  # noqa: E731
    if NO in present and ON in present:
        b, c = medians[NO], medians[ON]
        model = ((boots[NO] - boots[OO]) + (boots[NN] - boots[ON])) / 2
        inputs = ((boots[ON] - boots[OO]) + (boots[NN] - boots[NO])) / 2
        inter = (boots[NN] - boots[ON]) - (boots[NO] - boots[OO])
        result["model"] = fx(model, ((b - a) + (d - c)) / 2)
        result["input"] = fx(inputs, ((c - a) + (d - b)) / 2)
        result["interaction"] = fx(inter, (d - c) - (b - a))
    elif NO in present:
        b = medians[NO]
        result["model"] = fx(boots[NO] - boots[OO], b - a)
        result["input"] = fx(boots[NN] - boots[NO], d - b)
        result["note"] = f"old model on new requests could not run ({unavailable.get(ON, 'not measured')}); " \
                         "effects measured along old -> new model, then old -> new requests; no interaction"
    elif ON in present:
        c = medians[ON]
        result["input"] = fx(boots[ON] - boots[OO], c - a)
        result["model"] = fx(boots[NN] - boots[ON], d - c)
        result["note"] = f"new model on old requests could not run ({unavailable.get(NO, 'not measured')}); " \
                         "effects measured along old -> new requests, then old -> new model; no interaction"
    else:
        result["note"] = "neither crossed cell ran: model and input effects cannot be separated"
    return result
