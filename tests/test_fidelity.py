"""The benchmark measures what production would see: requests in their logged dtypes, a tail-only slowdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_manifest

from diagnose.core.manifest import load_manifest
from profilers.runners import load_version

# A model that computes in its input's dtype (as numpy code, a scikit-learn export or a dtype-generic module
# does): float64 requests make it do float64 matmuls.
IN_DTYPE_MODEL = '''
import copy

import torch


class InDtype(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f32 = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                       torch.nn.ReLU(), torch.nn.Linear(1024, 8)).eval()
        self.f64 = copy.deepcopy(self.f32).double()

    def forward(self, x):
        return (self.f64 if x.dtype == torch.float64 else self.f32)(x)


def build():
    return InDtype()
'''

# The same MLP, with a slow path for one call in 25 (a lock, a cache miss, a GC pause): p99 moves, p50 does not.
SLOW_PATH_MODEL = '''
import time

import torch

SLOW_EVERY = {every}
EXTRA_S = {extra_s}


class SlowPath(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                       torch.nn.ReLU(), torch.nn.Linear(1024, 8)).eval()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if SLOW_EVERY and self.calls % SLOW_EVERY == 0:
            end = time.perf_counter() + EXTRA_S
            while time.perf_counter() < end:
                pass
        return self.net(x)


def build():
    return SlowPath()
'''


def _features(rows: int, dtype) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": [rng.normal(size=256).astype(dtype) for _ in range(rows)]})


def _version(root: Path, name: str, code: str, requests: pd.DataFrame, **serving) -> Path:
    folder = root / "m" / name
    write_manifest(folder, format="python", artifact="model:build",
                   serving={"batch_size": 8, "threads": 1, **serving}, slo={})
    (folder / "model.py").write_text(code)
    requests.to_parquet(folder / "requests.parquet")
    return folder / "manifest.yaml"


def _compare(root: Path, tmp_path: Path, budget: str = "8") -> dict:
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(root), "--model", "m", "--old", "v1", "--new", "v2",
                     "--budget", budget, "--no-profile", "--no-verify", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_request_log_is_batched_in_its_logged_dtypes(tmp_path):
    frame = pd.DataFrame({"f32": np.arange(4, dtype=np.float32), "f64": np.arange(4, dtype=np.float64),
                          "i32": np.arange(4, dtype=np.int32), "flag": [True, False, True, False],
                          "vec": [np.ones(3, dtype=np.float16) for _ in range(4)]})
    path = _version(tmp_path, "v1", IN_DTYPE_MODEL, frame)
    version = load_version(load_manifest(path))
    from diagnose.core.requestlog import load_requests

    inputs = version.prepare(load_requests(path.parent / "requests.parquet"))
    assert [str(x.dtype) for x in inputs] == ["torch.float32", "torch.float64", "torch.int32", "torch.bool",
                                              "torch.float16"]
    # a CSV log has no dtypes of its own: floats go in as float32, integers as int64
    frame[["f64", "i32"]].to_csv(tmp_path / "requests.csv", index=False)
    inputs = version.prepare(load_requests(tmp_path / "requests.csv"))
    assert [str(x.dtype) for x in inputs] == ["torch.float32", "torch.int64"]


def test_precision_casts_the_model_and_inputs_only_where_the_manifest_says(tmp_path):
    frame = _features(16, np.float32)
    plain = load_version(load_manifest(_version(tmp_path, "v1", IN_DTYPE_MODEL, frame, precision="bf16")))
    cast = load_version(load_manifest(_version(tmp_path, "v2", IN_DTYPE_MODEL, frame, precision="bf16",
                                               cast_inputs=True)))
    assert str(plain.prepare(frame)[0].dtype) == "torch.float32"
    assert str(cast.prepare(frame)[0].dtype) == "torch.bfloat16"
    # the bf16 model refuses float32: a server serving it must cast, so the replay casts and says so
    plain(plain.prepare(frame))
    assert plain.input_cast == "float32 -> bfloat16" and str(plain.prepare(frame)[0].dtype) == "torch.bfloat16"
    assert cast.input_cast is None


@pytest.mark.slow
def test_float64_requests_slow_a_model_that_computes_in_its_input_dtype(tmp_path):
    """A client that started sending doubles: the same values, logged as float64. The benchmark must replay them as
    float64, find the new side slower, put it on the inputs, and the schema finding must say the dtype moved."""
    root = tmp_path / "registry"
    _version(root, "v1", IN_DTYPE_MODEL, _features(64, np.float32))
    _version(root, "v2", IN_DTYPE_MODEL, _features(64, np.float64))
    report = _compare(root, tmp_path)
    assert report["verdict"] == "regression", report["summary"]
    assert report["cells"]["new_model/new_requests"]["input_signature"].startswith("(float64")
    assert report["cells"]["old_model/old_requests"]["input_signature"].startswith("(float32")
    input_effect, model_effect = report["attribution"]["input"], report["attribution"]["model"]
    assert input_effect["significant"] and input_effect["share"] > 0.8, report["attribution"]
    assert abs(model_effect["effect_ms"]) < 0.2 * input_effect["effect_ms"]
    top = report["hypotheses"][0]
    assert top["cause"] == "input.schema_change", report["hypotheses"]
    assert any("float32" in line and "float64" in line for line in top["evidence"]), top["evidence"]
    assert any("measured" in line for line in top["evidence"]), top["evidence"]


@pytest.mark.slow
def test_a_tail_only_regression_is_detected_and_named(tmp_path):
    """One call in 50 takes 10 ms more: the median holds (or moves the percentile point those calls push it), the
    p99 rises. The verdict is a regression of the tail.
    (Rarer slow calls would leave the p99 unmoved; more frequent ones move the median too: 4% of samples moved to
    the top shift the median by two percentile points, a real change of 1-3% on a spread-out machine.)"""
    root = tmp_path / "registry"
    frame = _features(64, np.float32)
    _version(root, "v1", SLOW_PATH_MODEL.format(every=0, extra_s=0.0), frame)
    _version(root, "v2", SLOW_PATH_MODEL.format(every=50, extra_s=0.01), frame)
    report = _compare(root, tmp_path)
    assert report["verdict"] == "regression" and report["regression_kind"] == "tail", report["summary"]
    assert report["latency"]["tail"]["verdict"] == "regression"
    delta = report["latency"]["delta"]
    assert delta["p99_pct_ci"][0] > 5
    if report["latency"]["tail"]["median_verdict"] == "regression":
        # the slow calls push the median up a percentile point, which the 1% floor may call a regression on a
        # spread-out machine: the kind stays the tail's while the median moved little against the p99
        assert delta["p50_pct"] < 10 and delta["p99_pct_ci"][0] > 4 * max(delta["p50_pct"], 1), delta
    assert "tail-only regression" in report["summary"]


@pytest.mark.slow
def test_an_aa_compare_keeps_measuring_until_the_p99_is_settled(tmp_path):
    """The same model twice: the compare does not stop on the median alone; it stops with a settled p99 (or at the
    budget, saying the p99 is not settled) and calls no regression."""
    root = tmp_path / "registry"
    frame = _features(64, np.float32)
    for name in ("v1", "v2"):
        _version(root, name, SLOW_PATH_MODEL.format(every=0, extra_s=0.0), frame)
    report = _compare(root, tmp_path, budget="10")
    tail = report["latency"]["tail"]
    assert report["verdict"] != "regression" and report["regression_kind"] is None
    assert report["latency"]["old"]["n"] >= tail["min_samples"]
    if report["run"]["stopped"].startswith("settled"):
        assert tail["settled"]  # an early stop waits for the p99
    if not tail["settled"]:
        assert "p99 not settled" in report["summary"]


GPU_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "signals" / "gpu"


def _compare_cuda(tiny_registry: Path, tmp_path: Path, *options: str) -> tuple[dict, Path]:
    """Both versions declared as served on cuda, with a deployment whose recorded GPU was thermally throttled."""
    import shutil

    for version in ("v1", "v2"):
        write_manifest(tiny_registry / "mlp" / version, serving={"threads": 1, "device": "cuda"},
                       deployment={"namespace": "serving", "selector": "app=mlp", "deployed_at": "2026-11-20T10:00:00Z"})
    signals = tmp_path / "signals"
    signals.mkdir()
    shutil.copy(GPU_FIXTURES / "throttled.csv", signals / "nvidia-smi.csv")
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", *options,
                     "--signals", str(signals), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the replay on a machine without a GPU")
def test_a_cuda_manifest_is_replayed_on_cpu_with_a_warning(tiny_registry, tmp_path):
    report, out = _compare_cuda(tiny_registry, tmp_path, "--budget", "2", "--no-profile", "--no-verify")
    assert report["verdict"] in ("regression", "improvement", "no_regression", "inconclusive")
    assert any("served on cuda but was replayed on cpu" in w and "not production's" in w for w in report["warnings"])
    versions = json.loads((out / "evidence" / "versions.json").read_text())
    assert versions["new"]["serving"]["device"] == "cuda" and versions["new"]["replayed_on"] == "cpu"
    assert next(h for h in report["hypotheses"] if h["cause"] == "gpu.clock_throttling")["score"] > 0.3


def test_no_benchmark_diagnoses_from_the_signals_alone(tiny_registry, tmp_path):
    report, out = _compare_cuda(tiny_registry, tmp_path, "--no-benchmark")
    assert report["verdict"] == "not_measured" and report["latency"] is None and report["attribution"] is None
    assert "not measured here (--no-benchmark)" in report["summary"]
    assert report["evidence_sources"]["benchmark"]["status"] == "skipped"
    assert report["hypotheses"][0]["cause"] == "gpu.clock_throttling", report["hypotheses"]
    assert not (out / "profile").exists() or not any((out / "profile").iterdir())
    for fmt, expect in (("summary", "NOT_MEASURED"), ("markdown", "**Verdict: not_measured.**")):
        again = run_cli("analyze", str(out), "--format", fmt)
        assert again.returncode == 0 and expect in again.stdout and "gpu.clock_throttling" in again.stdout, again.stderr
