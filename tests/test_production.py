"""The production verdict: production's own latency across the deploy, with a CI, joined to the lab's verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_manifest

from collectors.prometheus_change import window_change
from diagnose.core import stats

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "fixtures" / "signals" / "prometheus"
DEPLOYMENT = {"namespace": "serving", "selector": "app=textclf", "container": "model",
              "deployed_at": "2026-11-20T10:00:00Z"}


@pytest.mark.parametrize("pct, ci, verdict", [
    (40.0, (30.0, 50.0), "regression"),
    (12.0, (6.0, 18.0), "regression"),
    (12.0, (2.0, 22.0), "inconclusive"),      # big enough, not sure enough
    (8.0, (6.0, 9.5), "no_regression"),       # sure, but within the production floor
    (0.5, (-3.0, 4.0), "no_regression"),
    (-30.0, (-40.0, -20.0), "improvement"),
    (3.0, (-8.0, 14.0), "inconclusive"),
])
def test_production_verdict_needs_size_and_certainty(pct, ci, verdict):
    assert stats.production_verdict(pct, ci) == verdict


@pytest.mark.parametrize("lab, production, joint", [
    ("no_regression", "regression", ("regression", "production")),
    ("regression", "regression", ("regression", "lab and production")),
    ("regression", "no_regression", ("regression", "lab")),
    ("not_measured", "no_regression", ("no_regression", "production")),
    ("not_measured", None, ("not_measured", None)),
    ("inconclusive", "inconclusive", ("inconclusive", "lab")),
    ("improvement", None, ("improvement", "lab")),
])
def test_joint_verdict_says_which_source_carries_it(lab, production, joint):
    assert stats.joint_verdict(lab, production) == joint


def _steps(level: float, n: int, noise: float, rng) -> np.ndarray:
    """Per-step (time, requests) rows of a counter pair: `level` ms a request with `noise` relative jitter, in waves
    (neighbouring steps alike, as traffic makes them)."""
    waves = np.repeat(rng.normal(0, noise, size=n // 5 + 1), 5)[:n]
    served = rng.integers(80, 120, size=n).astype(float)
    return np.column_stack([served * level * (1 + waves), served])


def average(rows: np.ndarray) -> float:
    return float(rows[:, 0].sum() / rows[:, 1].sum())


def test_window_change_ci_holds_the_true_change_and_healthy_noise_is_no_regression():
    rng = np.random.default_rng(7)
    found = window_change(_steps(10.0, 120, 0.05, rng), _steps(15.0, 120, 0.05, rng), average)
    lo, hi = found["ci_pct"]
    assert lo < 50 < hi and hi - lo < 10 and stats.production_verdict(found["pct"], (lo, hi)) == "regression"
    healthy = [window_change(_steps(10.0, 120, 0.05, rng), _steps(10.0, 120, 0.05, rng), average, seed=s)
               for s in range(20)]
    assert all(stats.production_verdict(h["pct"], tuple(h["ci_pct"])) != "regression" for h in healthy)
    assert window_change(_steps(10.0, 4, 0.05, rng), _steps(10.0, 120, 0.05, rng), average) is None  # too few steps


def _signals(tmp_path: Path, recording: str) -> Path:
    signals = tmp_path / "signals"
    signals.mkdir()
    shutil.copy(RECORDED / f"{recording}.om", signals / "metrics.om")
    return signals


def _compare(registry: Path, tmp_path: Path, old: str, new: str, recording: str, *extra: str) -> dict:
    write_manifest(registry / "mlp" / new, serving={"threads": 1}, deployment=DEPLOYMENT)
    result = run_cli("compare", "--registry", str(registry), "--old", old, "--new", new, "--budget", "3",
                     "--no-profile", "--no-verify", "--signals", str(_signals(tmp_path, recording)),
                     "--out", str(tmp_path / "run"), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_regression_the_lab_cannot_show_is_the_verdict(tiny_registry, tmp_path):
    """v1 against v3 (the same weights): the lab sees nothing, production's p99 jumped at the deploy (throttled):
    the verdict is production's, and the environment cause leads."""
    report = _compare(tiny_registry, tmp_path, "v1", "v3", "throttled")
    prod = report["latency"]["production"]
    assert prod["verdict"] == "regression" and prod["statistic"] == "p99" and prod["change_pct"] > 100
    assert prod["ci_pct"][0] > 50 and prod["change_point"]["aligned_with_deploy"]
    assert report["verdict"] == "regression" and report["verdict_source"] == "production"
    assert report["lab_verdict"] != "regression"
    assert report["hypotheses"][0]["cause"] == "runtime.cpu_throttling" and report["hypotheses"][0]["score"] > 0.5
    assert "slower in production" in report["summary"]


def test_healthy_production_never_raises_a_regression(tiny_registry, tmp_path):
    report = _compare(tiny_registry, tmp_path, "v1", "v3", "healthy")
    assert report["latency"]["production"]["verdict"] == "no_regression"
    assert report["verdict"] != "regression" and report["verdict_source"] in ("lab", "production")
    assert all(h["score"] <= 0.1 for h in report["hypotheses"]), report["hypotheses"]


def test_a_lab_regression_production_does_not_show_is_reported_as_such(tiny_registry, tmp_path):
    report = _compare(tiny_registry, tmp_path, "v1", "v2", "healthy")
    assert report["lab_verdict"] == "regression" and report["verdict"] == "regression"
    assert report["verdict_source"] == "lab" and report["latency"]["production"]["verdict"] == "no_regression"
    assert any("does not show in production" in w for w in report["warnings"])
    assert report["hypotheses"][0]["cause"] == "model.compute_increase"


def test_production_alone_without_a_benchmark(tiny_registry, tmp_path):
    report = _compare(tiny_registry, tmp_path, "v1", "v3", "oom", "--no-benchmark")
    assert report["lab_verdict"] == "not_measured" and report["verdict"] == "regression"
    assert report["verdict_source"] == "production" and report["latency"]["old"] is None
    assert report["hypotheses"][0]["cause"] == "runtime.memory_pressure"
    assert {u["cause"] for u in report["unjudged"]} >= {"model.compute_increase", "preprocessing.change"}


@pytest.mark.parametrize("server", ["triton", "triton_summary", "torchserve", "tfserving", "kserve", "mlserver", "seldon",
                                    "bentoml", "ovms", "http"])
def test_every_servers_healthy_deploys_never_regress_and_a_step_always_does(server, tmp_path):
    """Each serving system's own series (fixtures/scenario_signals.py), read as --signals reads them: five healthy
    deploys with other seeds and noise are never a production regression; a +60% step always is, with its CI."""
    from diagnose.core.evidence import Evidence
    from diagnose.production import production_latency
    from diagnose.signals import collect_offline
    from fixtures.scenario_signals import write

    def verdict(latency_ms: list[float], seed: int):
        spec = {"server": server, "fault": "healthy", "deployed_at": "2026-11-20T10:00:00Z", "namespace": "ml",
                "app": f"scorer-{seed}", "latency_ms": latency_ms, "seed": seed}
        folder = tmp_path / f"{seed}-{latency_ms[1]}"
        write(folder, spec)
        deployment = {"namespace": "ml", "selector": f"app=scorer-{seed},version=v2", "container": "model",
                      "deployed_at": spec["deployed_at"]}
        prom: Evidence = collect_offline(folder, deployment)["prometheus"]
        found = production_latency(prom.to_dict())
        assert found is not None, prom.reason or prom.data.get("notes")
        return found

    for seed in range(5):
        healthy = verdict([20.0, 20.0], seed)
        assert healthy.verdict == "no_regression" and abs(healthy.change_pct) < 10, healthy
    step = verdict([20.0, 32.0], 11)
    assert step.verdict == "regression" and step.ci_pct[0] > 5, step
