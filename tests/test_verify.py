"""The verify stage's verdict: the Pareto table and "fix confirmed" derived from saved evidence only.

The evidence files are the ones `measure_variants` writes; here they hold chosen latencies and accuracies so
each verdict path is exercised exactly (the stage itself runs end to end in test_optimize_cli.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose.core.report import Effect
from diagnose.core.runfolder import RunFolder
from diagnose.verify import fix_section, model_side_leads
from reports.sections import render_fix


def _accuracy(cosine=0.9999, top1=1.0):
    return {"batches": 64, "max_abs": 1e-3, "mean_abs": 1e-4, "max_rel": 1e-3, "mean_rel": 1e-4, "within_tolerance": False,
            "atol": 1e-5, "rtol": 1e-5, "cosine": cosine, "cosine_min": cosine, "top1_agreement": top1, "rows": 64}


def _write(run_dir, latencies: dict, variants: list[dict], old: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for key, median in latencies.items():
        x = median * (1 + rng.gamma(2.0, 0.02, 300))
        rows.append(pd.DataFrame({"cell": key, "latency_ms": x}))
    folder = RunFolder(run_dir)
    folder.write_variant_samples(pd.concat(rows, ignore_index=True))
    folder.write_evidence("variants", {
        "status": "ok", "version": "v2", "old": "v1" if old else None, "rounds": 300, "accuracy_requests": 64,
        "variants": [{"name": v["name"], "family": v.get("family", "onnxruntime"), "status": v.get("status", "ok"),
                      "reason": v.get("reason"), "build_s": 1.0, "cached": False, "artifact": None, "details": {},
                      **({"accuracy": v["accuracy"]} if "accuracy" in v else {})} for v in variants],
    })


def test_a_variant_back_at_the_old_latency_is_a_confirmed_fix(tmp_path):
    _write(tmp_path, {"old_model/old_requests": 10.0, "new_model/new_requests": 30.0, "ort-all_model/new_requests": 20.0,
                      "ort-int8_model/new_requests": 9.5},
           [{"name": "ort-all", "accuracy": _accuracy()}, {"name": "ort-int8", "accuracy": _accuracy(0.995, 0.996)},
            {"name": "tensorrt-fp16", "family": "tensorrt", "status": "unavailable", "reason": "no CUDA GPU on this machine"}])
    fix = fix_section(RunFolder(tmp_path), {"p99_ms": 50})
    assert fix.status == "confirmed" and fix.best == "ort-int8"
    assert fix.verdict.startswith("fix confirmed: ort-int8 p99 ") and "<= SLO 50 ms" in fix.verdict
    assert "3.2x faster than v2" in fix.verdict or "3.1x faster than v2" in fix.verdict
    assert "top-1 agreement 99.6%" in fix.verdict
    names = [r["name"] for r in fix.variants]
    assert names == ["ort-int8", "ort-all", "v2"]  # fastest first; the version itself is the baseline row
    pareto = {r["name"]: r["pareto"] for r in fix.variants}
    assert pareto == {"ort-int8": True, "ort-all": True, "v2": False}  # ort-all: exact; ort-int8: fastest
    assert list(fix.not_measured) == [{"name": "tensorrt-fp16", "status": "unavailable", "reason": "no CUDA GPU on this machine"}]
    table = render_fix(fix)
    assert "| ort-int8 |" in table and "tensorrt-fp16 | unavailable: no CUDA GPU" in table


def test_accuracy_limits_from_the_manifest_rule_a_variant_out(tmp_path):
    _write(tmp_path, {"old_model/old_requests": 10.0, "new_model/new_requests": 30.0, "ort-int8_model/new_requests": 9.0},
           [{"name": "ort-int8", "accuracy": _accuracy(0.995, 0.97)}])
    fix = fix_section(RunFolder(tmp_path), {"p99_ms": 50})
    assert fix.status == "none" and fix.best is None
    assert "top-1 agreement 97.0%" in fix.verdict
    relaxed = fix_section(RunFolder(tmp_path), {"p99_ms": 50, "max_accuracy_drop": 0.05})
    assert relaxed.status == "confirmed"


def test_faster_but_over_the_slo_is_an_honest_no(tmp_path):
    _write(tmp_path, {"old_model/old_requests": 40.0, "new_model/new_requests": 90.0, "ort-all_model/new_requests": 70.0},
           [{"name": "ort-all", "accuracy": _accuracy()}])
    fix = fix_section(RunFolder(tmp_path), {"p99_ms": 50})
    assert fix.status == "none" and fix.best == "ort-all"
    assert fix.verdict.startswith("no variant meets the SLO: the lowest p99 within accuracy, ort-all's, is ")


def test_within_the_slo_but_slower_than_the_old_version_is_partial(tmp_path):
    _write(tmp_path, {"old_model/old_requests": 10.0, "new_model/new_requests": 30.0, "ort-all_model/new_requests": 20.0},
           [{"name": "ort-all", "accuracy": _accuracy()}])
    fix = fix_section(RunFolder(tmp_path), {"p99_ms": 50})
    assert fix.status == "partial" and "still +" in fix.verdict and "vs v1" in fix.verdict


def test_without_an_old_version_faster_and_within_limits_confirms(tmp_path):
    _write(tmp_path, {"new_model/new_requests": 30.0, "ort-all_model/new_requests": 20.0}, [{"name": "ort-all",
           "accuracy": _accuracy()}], old=False)
    fix = fix_section(RunFolder(tmp_path), {})
    assert fix.status == "confirmed" and fix.thresholds["p99_ms"] is None
    assert "SLO" not in fix.verdict and "back to" not in fix.verdict


def test_a_variant_no_faster_than_the_version_is_no_fix(tmp_path):
    _write(tmp_path, {"new_model/new_requests": 30.0, "ort-all_model/new_requests": 30.0}, [{"name": "ort-all",
           "accuracy": _accuracy()}], old=False)
    fix = fix_section(RunFolder(tmp_path), {})
    assert fix.status == "none" and "ort-all: not faster than v2" in fix.verdict


def test_no_evidence_no_section(tmp_path):
    assert fix_section(RunFolder(tmp_path), {}) is None


def _effect(share):
    return Effect(effect_ms=10.0, ci_ms=(9.0, 11.0), effect_pct=100.0, share=share, significant=True)


@pytest.mark.parametrize("verdict, model, expected", [
    ("regression", _effect(0.9), True),
    ("regression", _effect(0.2), False),
    ("no_regression", _effect(0.9), False),
    ("regression", None, True),
])
def test_the_stage_runs_by_default_when_the_model_side_leads(verdict, model, expected):
    assert model_side_leads(verdict, model) is expected
