"""The scenario signal generator (fixtures/scenario_signals.py) read back by the real collectors.

Every serving system's series are written and read through the offline readers `diagnose compare --signals` uses
(diagnose/sources.py): the preset is detected with no configuration, the latency before and after the deploy is the
spec's (a histogram's p99 as histogram_quantile interpolates the spec's log-normal requests in the server's own
buckets), the parts the server splits are there. Each fault gives the evidence its cause rule reads, and the rule
ranks it; the healthy signals make none of the production rules fire. The shipped production-signal scenarios
(fixtures/scenarios/) are checked the same way, their manifests against their specs, and their lab pair for being
the same model on the same requests. Nothing here runs a benchmark.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from collectors.openmetrics import read_openmetrics
from collectors.prometheus_math import histogram_quantile
from diagnose.core.manifest import load_manifest
from diagnose.hypotheses import Context, rank
from diagnose.signals import collect_offline
from fixtures.scenario_signals import SERVERS, write

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"
DEPLOYED_AT = "2026-11-20T10:00:00Z"
Z99 = 2.3263
PRODUCTION_CAUSES = ("runtime.cpu_throttling", "runtime.memory_pressure", "gpu.clock_throttling", "gpu.contention")
SHIPPED = {  # scenario folder -> (server, fault, cause)
    "cpu_throttling_triton": ("triton", "cpu_throttling", "runtime.cpu_throttling"),
    "cpu_throttling_torchserve": ("torchserve", "cpu_throttling", "runtime.cpu_throttling"),
    "memory_pressure_kserve": ("kserve", "memory_pressure", "runtime.memory_pressure"),
    "memory_pressure_mlserver": ("mlserver", "memory_pressure", "runtime.memory_pressure"),
    "gpu_clock_throttling_tfserving": ("tfserving", "gpu_clock_throttling", "gpu.clock_throttling"),
    "gpu_clock_throttling_ovms": ("ovms", "gpu_clock_throttling", "gpu.clock_throttling"),
    "gpu_contention_bentoml": ("bentoml", "gpu_contention", "gpu.contention"),
    "gpu_contention_seldon": ("seldon", "gpu_contention", "gpu.contention"),
    "healthy_production": ("http", "healthy", None),
}
# the series a server's total latency is read from, and its unit in ms
TOTALS = {"tfserving": (":tensorflow:serving:request_latency", 1000.0), "kserve": ("request_predict_seconds", 0.001),
          "seldon": ("seldon_model_infer_api_seconds", 0.001),
          "bentoml": ("bentoml_service_request_duration_seconds", 0.001), "ovms": ("ovms_request_time_us", 1000.0),
          "http": ("http_request_duration_seconds", 0.001), "vllm": ("vllm:e2e_request_latency_seconds", 0.001),
          "tgi": ("tgi_request_duration", 0.001)}
DISCOVERED = ("vllm", "tgi")  # no preset: found by their series' names (serving_metrics.discover)


def deployment(spec: dict, **over) -> dict:
    labels = dict(spec.get("labels") or {"app": spec["app"]})
    version_label = spec.get("version_label", "version")
    if version_label:
        labels[version_label] = (spec.get("versions") or ["v1", "v2"])[1]
    return {"namespace": spec.get("namespace", "serving"), "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
            "container": spec.get("container", "model"), "deployed_at": spec["deployed_at"], **over}


def read(folder: Path, spec: dict, dep: dict | None = None) -> dict:
    """Write `spec` into `folder` and read it back as `--signals folder` would: {source: evidence dict}."""
    write(folder, spec)
    return {name: e.to_dict() for name, e in collect_offline(folder, dep or deployment(spec)).items()}


def ok(evidence: dict, source: str) -> dict:
    e = evidence[source]
    assert e["status"] == "ok", (source, e.get("reason"))
    return e["data"]


def ranked(evidence: dict) -> list[str]:
    """The cause ids the rules rank from these signals alone (identical lab versions)."""
    version = {"artifact": "model:build", "artifact_sha256": "a" * 64, "param_count": 100, "preprocess": None,
               "preprocess_sha256": None, "serving": {"device": "cpu", "batch_size": 8, "threads": 1,
                                                      "precision": "fp32"}}
    ctx = Context(verdict="regression", delta={}, attribution={"unavailable": {}},
                  versions={"old": version, "new": dict(version)}, requests={"old": {}, "new": {}}, cells={},
                  signals={k: v for k, v in evidence.items() if v["status"] == "ok"})
    hypotheses, errors = rank(ctx)[:2]  # (hypotheses, rule errors, ...)
    assert not errors, errors
    return [h.cause for h in hypotheses]


def expected_p99(p99_ms: float, sigma: float, bounds_ms: list[float]) -> float:
    """What histogram_quantile makes of log-normal requests whose true p99 is `p99_ms`, in these buckets."""
    median = p99_ms / math.exp(Z99 * sigma)
    pairs = [(b, 0.5 * (1 + math.erf(math.log(b / median) / sigma / math.sqrt(2))) if math.isfinite(b) else 1.0)
             for b in bounds_ms]
    return histogram_quantile(0.99, pairs)


def bucket_bounds(path: Path, metric: str, to_ms: float) -> list[float]:
    parsed = read_openmetrics(path)
    les = {float(dict(labels)["le"]) for name, labels in parsed.series if name == f"{metric}_bucket"}
    return sorted(le / to_ms if math.isfinite(le) else le for le in les)


# --- every serving system -------------------------------------------------------------------------------------

@pytest.mark.parametrize("server", SERVERS)
def test_each_server_is_detected_with_its_latency(tmp_path, server):
    spec = {"server": server, "fault": "cpu_throttling", "deployed_at": DEPLOYED_AT, "namespace": f"ns-{server}",
            "app": f"{server.replace('_', '-')}-model", "latency_ms": [12.0, 30.0], "queue_ms": [1.0, 17.0],
            "compute_ms": [10.8, 12.5]}
    evidence = read(tmp_path, spec)
    data = ok(evidence, "prometheus")
    lat = data["latency"]
    assert lat["server"] == ("discovered" if server in DISCOVERED else server)
    assert data["pods_from"] == "kube_pod_labels" and len(data["pods"]) == 4  # old and new ReplicaSet, no decoy
    assert not any(p.startswith("feature-cache") for p in data["pods"])
    if server in ("triton", "torchserve"):  # counters: the average
        assert lat["statistic"] == "average"
        assert lat["avg_ms"]["before"] == pytest.approx(12.0, rel=0.05)
        assert lat["avg_ms"]["after"] == pytest.approx(30.0, rel=0.06)
        assert lat["queue"]["before"] == pytest.approx(1.0, rel=0.08)
        assert lat["queue"]["after"] == pytest.approx(17.0, rel=0.08)
        compute = (10.8, 12.5) if server == "triton" else (11.0, 13.0)  # TorchServe's: total - queue
        assert lat["compute"]["before"] == pytest.approx(compute[0], rel=0.08)
        assert lat["compute"]["after"] == pytest.approx(compute[1], rel=0.08)
        return
    assert lat["statistic"] == "quantiles"
    if server in ("mlserver", "triton_summary"):  # the server's own quantiles
        assert lat["p99_ms"]["before"] == pytest.approx(12.0, rel=0.05)
        assert lat["p99_ms"]["after"] == pytest.approx(30.0, rel=0.06)
        assert lat["p50_ms"]["after"] == pytest.approx(30.0 / math.exp(Z99 * 0.3), rel=0.06)
        if server == "triton_summary":
            assert lat["queue"]["after"] == pytest.approx(17.0, rel=0.06)
            assert lat["compute"]["after"] == pytest.approx(12.5, rel=0.06)
        return
    metric, to_ms = TOTALS[server]
    bounds = bucket_bounds(tmp_path / "metrics.om", metric, to_ms)
    for side, true_p99 in (("before", 12.0), ("after", 30.0)):
        assert lat["p99_ms"][side] == pytest.approx(expected_p99(true_p99, 0.3, bounds), rel=0.1), side
    assert lat["change_point"]["aligned_with_deploy"] and 0 <= lat["change_point"]["lag_s"] <= 120
    roles = {"tfserving": {"compute"}, "kserve": {"preprocess", "postprocess"}, "ovms": {"queue", "compute"},
             "vllm": {"queue", "compute"}, "tgi": {"queue", "compute"}}
    assert {r for r in ("queue", "compute", "preprocess", "postprocess") if r in lat} == roles.get(server, set())
    if server in ("ovms", "vllm", "tgi"):
        assert lat["queue"]["after"] > 4 * lat["queue"]["before"]  # (17 ms against 1 ms, in 5 ms buckets)


# --- each fault ------------------------------------------------------------------------------------------------

def test_cpu_throttling(tmp_path):
    spec = {"server": "triton", "fault": "cpu_throttling", "deployed_at": DEPLOYED_AT, "namespace": "fraud",
            "app": "fraud", "workload": "fraud-scorer", "latency_ms": [11.5, 29.0]}
    evidence = read(tmp_path, spec)
    data = ok(evidence, "prometheus")
    ratio = data["throttled_ratio"]
    assert ratio["before"] == pytest.approx(0.02, abs=0.01)
    assert ratio["after"] == pytest.approx(0.45, abs=0.04) and data["throttling_high"]
    assert ratio["worst_after"]["container"] == "model"  # not the sidecar, not the decoy
    assert data["cpu_usage_cores"]["after"] == pytest.approx(1.9, rel=0.05)
    assert data["oom_events"] == 0 and data["restarts"] == 0
    causes = ranked(evidence)
    assert causes[0] == "runtime.cpu_throttling" and "runtime.memory_pressure" not in causes


def test_cpu_throttling_in_a_statefulset_updated_in_place(tmp_path):
    pods = ["ranker-0", "ranker-1", "ranker-2"]
    spec = {"server": "torchserve", "fault": "cpu_throttling", "deployed_at": DEPLOYED_AT, "namespace": "search",
            "app": "ranker", "pods": {"old": pods, "new": pods}, "container": "torchserve", "sidecar": None,
            "latency_ms": [6.0, 19.0], "queue_ms": [0.8, 12.5], "throttled": [0.03, 0.38]}
    dep = deployment(spec, pod_regex="ranker-[0-9]+")
    evidence = read(tmp_path, spec, dep)
    data = ok(evidence, "prometheus")
    assert data["pods_from"] == "pod_regex" and data["pods"] == pods  # the decoy feature-cache pod is left out
    assert data["throttled_ratio"]["after"] == pytest.approx(0.38, abs=0.04)
    assert data["restarts"] == 0  # a recreated pod is not a container restart
    lat = data["latency"]
    assert lat["avg_ms"]["before"] == pytest.approx(6.0, rel=0.05)  # the counters' resets at the update are handled
    assert lat["avg_ms"]["after"] == pytest.approx(19.0, rel=0.06)
    # the same pods chosen by their labels, without the regex
    by_labels = {k: e.to_dict() for k, e in collect_offline(tmp_path, deployment(spec)).items()}
    assert ok(by_labels, "prometheus")["pods"] == pods
    assert "runtime.cpu_throttling" in ranked(evidence)


def test_memory_pressure_with_kubernetes(tmp_path):
    spec = {"server": "kserve", "fault": "memory_pressure", "deployed_at": DEPLOYED_AT, "namespace": "recsys",
            "app": "embedder", "labels": {"serving.kserve.io/inferenceservice": "embedder"}, "version_label": None,
            "container": "kserve-container", "latency_ms": [40.0, 95.0], "oom_kills": 4}
    evidence = read(tmp_path, spec)
    data = ok(evidence, "prometheus")
    assert data["oom_events"] == 4 and data["restarts"] == 4
    assert data["last_terminated_oomkilled"] == 2 and data["last_terminated_oomkilled_before"] == 0
    assert data["memory_headroom_after"] < 0.02
    assert data["memory_working_set_bytes"]["before"] < 0.6 * data["memory_limit_bytes"]
    k8s = ok(evidence, "kubernetes")
    assert k8s["pod_count"] == 2 and k8s["oom_kills"] == 2 and k8s["restarts"] == 4
    assert k8s["events"]["BackOff"] > 0 and k8s["events"]["Unhealthy"] == 0  # the decoy's event is not counted
    assert all(p["last_terminated_reason"] == "OOMKilled" and p["last_exit_code"] == 137 for p in k8s["pods"])
    assert k8s["limits"]["memory"] == "2Gi" and k8s["rollout"]["replicaset"] in k8s["pods"][0]["name"]
    causes = ranked(evidence)
    assert causes[0] == "runtime.memory_pressure" and "runtime.cpu_throttling" not in causes


def test_memory_pressure_from_prometheus_only(tmp_path):
    spec = {"server": "mlserver", "fault": "memory_pressure", "deployed_at": DEPLOYED_AT, "namespace": "nlp",
            "app": "sentiment", "container": "mlserver", "latency_ms": [24.0, 61.0], "oom_kills": 3, "replicas": 3,
            "kubernetes": False, "memory_limit": 3 * 2 ** 30}
    evidence = read(tmp_path, spec)
    assert evidence["kubernetes"]["status"] == "unavailable" and not (tmp_path / "kubernetes").exists()
    data = ok(evidence, "prometheus")
    assert data["oom_events"] == 3 and data["restarts"] == 3 and data["last_terminated_oomkilled"] == 3
    assert data["memory_limit_bytes"] == 3 * 2 ** 30
    assert data["latency"]["p99_ms"]["after"] > 2 * data["latency"]["p99_ms"]["before"]
    assert "runtime.memory_pressure" in ranked(evidence)


@pytest.mark.parametrize("reasons", ["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"])
def test_gpu_clock_throttling_in_dcgm(tmp_path, reasons):
    spec = {"server": "tfserving", "fault": "gpu_clock_throttling", "deployed_at": DEPLOYED_AT, "namespace": "vision",
            "app": "detector", "latency_ms": [8.0, 14.5], "dcgm_reasons_metric": reasons}
    evidence = read(tmp_path, spec)
    assert evidence["gpu"]["status"] == "unavailable"  # no CSV: the rule reads DCGM through Prometheus
    gpu = ok(evidence, "prometheus")["gpu"]
    assert gpu["sm_clock_mhz"]["before"] == pytest.approx(1410, abs=10)
    assert gpu["clock_drop_pct"] == pytest.approx(22, abs=3)
    assert {"SwThermalSlowdown", "HwThermalSlowdown", "HwSlowdown"} <= set(gpu["throttle_reasons_after"])
    assert gpu["temp_c_after"] > 83
    causes = ranked(evidence)
    assert causes[0] == "gpu.clock_throttling" and "gpu.contention" not in causes


@pytest.mark.parametrize("kind, drop, reasons", [("power", 12.5, ["SwPowerCap"]),
                                                 ("thermal", 22.3, ["HwSlowdown", "SwThermalSlowdown",
                                                                    "HwThermalSlowdown"])])
def test_gpu_clock_throttling_in_nvidia_smi_csv(tmp_path, kind, drop, reasons):
    spec = {"server": "http", "fault": "gpu_clock_throttling", "deployed_at": DEPLOYED_AT, "namespace": "edge",
            "app": "ocr", "latency_ms": [15.0, 26.0], "gpu_csv": True, "gpu_throttle": kind}
    evidence = read(tmp_path, spec)
    assert ok(evidence, "prometheus")["gpu"]["gpus"] == 0  # no DCGM series written beside the CSV
    gpu = ok(evidence, "gpu")
    assert gpu["skipped_rows"] == 0 and gpu["samples"] > 1500
    assert gpu["clock_drop_pct"] == pytest.approx(drop, abs=1.5)
    assert gpu["throttle_reasons"] == reasons
    assert gpu["gpus"][0]["samples_before"] > 700 and not gpu["gpus"][0]["saturated"]
    causes = ranked(evidence)
    assert causes[0] == "gpu.clock_throttling" and "gpu.contention" not in causes


@pytest.mark.parametrize("server, gpu_name", [("bentoml", "NVIDIA A10G"), ("seldon", "NVIDIA H100 80GB HBM3")])
def test_gpu_contention(tmp_path, server, gpu_name):
    spec = {"server": server, "fault": "gpu_contention", "deployed_at": DEPLOYED_AT, "namespace": "ml-apps",
            "app": "summarizer", "latency_ms": [45.0, 120.0], "gpu_name": gpu_name}
    evidence = read(tmp_path, spec)
    header = (tmp_path / "nvidia-smi.csv").read_text().splitlines()[0]
    assert "clocks_event_reasons.active" in header  # the driver >= 535 name
    gpu = ok(evidence, "gpu")
    (one,) = gpu["gpus"]
    assert one["name"] == gpu_name and one["saturated"] and one["util_pct_before"] >= 90
    assert one["memory_used_mib_before"] > 0.7 * one["memory_total_mib"]  # another workload's memory
    assert abs(gpu["clock_drop_pct"]) < 3 and gpu["throttle_reasons"] == []
    assert gpu["foreign_processes"] is None  # a --query-gpu CSV lists no processes
    causes = ranked(evidence)
    assert "gpu.contention" in causes and "gpu.clock_throttling" not in causes


def test_healthy_signals_fire_no_production_rule(tmp_path):
    spec = {"server": "http", "fault": "healthy", "deployed_at": DEPLOYED_AT, "namespace": "payments",
            "app": "risk-api", "latency_ms": [32.0, 32.0], "kubernetes": True, "gpu_csv": True, "dcgm": True}
    evidence = read(tmp_path, spec)
    data = ok(evidence, "prometheus")
    assert data["latency"]["change_point"] is None
    assert data["latency"]["p99_ms"]["after"] == pytest.approx(data["latency"]["p99_ms"]["before"], rel=0.03)
    assert data["throttled_ratio"]["after"] < 0.05 and data["oom_events"] == 0 and data["restarts"] == 0
    assert abs(data["gpu"]["clock_drop_pct"]) < 3 and data["gpu"]["throttle_reasons_after"] == []
    assert ok(evidence, "kubernetes")["restarts"] == 0 and ok(evidence, "kubernetes")["oom_kills"] == 0
    gpu = ok(evidence, "gpu")
    assert abs(gpu["clock_drop_pct"]) < 3 and not gpu["gpus"][0]["saturated"]
    assert not set(ranked(evidence)) & set(PRODUCTION_CAUSES)


def test_deterministic_and_refuses_bad_specs(tmp_path):
    spec = {"server": "seldon", "fault": "gpu_contention", "deployed_at": DEPLOYED_AT, "app": "m", "kubernetes": True}
    write(tmp_path / "a", spec)
    write(tmp_path / "b", spec)
    for name in ("metrics.om", "nvidia-smi.csv", "kubernetes/pods.json", "kubernetes/events.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write(tmp_path / "a", {**spec, "gpu_csv": False, "kubernetes": False})  # a reused folder: the old files go
    assert not (tmp_path / "a" / "nvidia-smi.csv").exists() and not (tmp_path / "a" / "kubernetes" / "pods.json").exists()
    for bad in ({"server": "nginx"}, {"fault": "disk_full"}, {"deployed_at": "yesterday"}, {"app": ""}):
        with pytest.raises(ValueError):
            write(tmp_path / "c", {**spec, **bad})


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (Debian: apt-get install prometheus)")
def test_promtool_backfills_the_file(tmp_path):
    write(tmp_path / "s", {"server": "ovms", "fault": "memory_pressure", "deployed_at": DEPLOYED_AT, "app": "ocr",
                           "dcgm": True})
    done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "s" / "metrics.om"),
                           str(tmp_path / "tsdb")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the shipped scenarios -------------------------------------------------------------------------------------

def _scenario(name: str) -> dict:
    return yaml.safe_load((SCENARIOS / name / "scenario.yaml").read_text())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_signals_carry_its_cause(tmp_path, name):
    server, fault, cause = SHIPPED[name]
    scenario = _scenario(name)
    spec = scenario["signals"]["generate"]
    assert (spec["server"], spec["fault"]) == (server, fault)
    assert scenario["causes"] == ([cause] if cause else [])
    assert scenario["verdict"] == ("regression" if cause else "no_regression")
    registry = SCENARIOS / name / scenario["registry"]
    new = load_manifest(registry / scenario["model"] / scenario["new"] / "manifest.yaml")
    dep = new.deployment
    assert "latency_metric" not in dep  # the collector finds the server's metric unaided
    assert dep["namespace"] == spec["namespace"] and str(dep["deployed_at"]).replace("+00:00", "Z").replace(" ", "T") \
        == spec["deployed_at"]
    write(tmp_path, spec)
    evidence = {k: e.to_dict() for k, e in collect_offline(tmp_path, dep).items()}
    data = ok(evidence, "prometheus")
    assert data["latency"]["server"] == server
    assert not any(p.startswith(("feature-cache", "batch-scorer")) for p in data["pods"])
    causes = ranked(evidence)
    if cause:
        assert cause in causes and not set(causes) & (set(PRODUCTION_CAUSES) - {cause}), causes
    else:
        assert not set(causes) & set(PRODUCTION_CAUSES), causes


def test_shipped_scenarios_lab_pairs_are_identical():
    """Old and new are the same code on the same requests: only the signals carry the incident. Builds each model
    and runs one batch; no benchmark."""
    import torch

    from diagnose.core.requestlog import load_requests
    from profilers.runners import load_version

    for name in sorted(SHIPPED):
        scenario = _scenario(name)
        folder = SCENARIOS / name / scenario["registry"] / scenario["model"]
        old_dir, new_dir = folder / scenario["old"], folder / scenario["new"]
        for file in ("model.py", "requests.csv"):
            assert (old_dir / file).read_bytes() == (new_dir / file).read_bytes(), (name, file)
        outputs = []
        for version in (old_dir, new_dir):
            manifest = load_manifest(version / "manifest.yaml")
            assert manifest.format == "python" and manifest.serving.batch_size == 8 and manifest.serving.threads == 1
            loaded = load_version(manifest)
            frame = load_requests(manifest.requests_path)
            assert len(frame) == 64
            with torch.no_grad():
                outputs.append(loaded.model(*loaded.prepare(frame.iloc[:8])))
        assert torch.equal(outputs[0], outputs[1]), name
        assert np.isfinite(outputs[0].numpy()).all()
