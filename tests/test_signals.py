"""`diagnose compare --signals DIR`: recorded signals become evidence in the run folder and rank causes."""

from __future__ import annotations

import json
import shutil

from conftest import ROOT, run_cli, write_manifest
from prom_rollouts import write_rollouts

GPU_FIXTURES = ROOT / "fixtures" / "signals" / "gpu"


def test_recorded_thermal_throttling_ranks_gpu_clock_throttling(tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    shutil.copy(GPU_FIXTURES / "throttled.csv", signals / "nvidia-smi.csv")
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=mlp", "deployed_at": "2026-11-20T10:00:00Z"})
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evidence_sources"]["gpu"]["status"] == "ok"
    assert report["evidence_sources"]["kubernetes"] == {"status": "unavailable", "source": "kubernetes",
                                                  "reason": f"no kubernetes/pods.json in {out / 'signals'}"}
    gpu = next(h for h in report["hypotheses"] if h["cause"] == "gpu.clock_throttling")
    assert gpu["score"] > 0.5 and "22%" in gpu["summary"] and "HwThermalSlowdown" in gpu["summary"]
    assert (out / "signals" / "nvidia-smi.csv").is_file()  # the run folder keeps what it was given
    again = run_cli("analyze", str(out), "--format", "json")
    assert json.loads(again.stdout)["hypotheses"] == report["hypotheses"]


def test_signals_folder_missing_is_exit_2(tiny_registry, tmp_path):
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--signals",
                     str(tmp_path / "nope"))
    assert result.returncode == 2 and "--signals: folder not found" in result.stderr


def test_garbage_gpu_csv_is_exit_2_naming_the_file(tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "nvidia-smi.csv").write_text("NVIDIA-SMI has failed because it couldn't communicate with the driver\n")
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert "nvidia-smi.csv" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_recorded_oom_kills_rank_memory_pressure(tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    shutil.copytree(ROOT / "fixtures" / "signals" / "kubernetes", signals / "kubernetes",
                    ignore=shutil.ignore_patterns("healthy"))
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=textclf,version=v2", "container": "model",
                               "deployed_at": "2026-11-20T10:00:00Z"})
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evidence_sources"]["kubernetes"]["status"] == "ok"
    assert report["evidence_sources"]["gpu"]["status"] == "unavailable"
    memory = next(h for h in report["hypotheses"] if h["cause"] == "runtime.memory_pressure")
    # no production latency recorded: it ranks, and says that whether it slowed requests is unknown
    assert memory["score"] >= 0.5 and "2 OOM kill(s)" in memory["summary"], memory
    assert "production latency" in memory["missing"][0]
    assert any("OOMKilled since the deploy" in line for line in memory["evidence"])
    evidence = json.loads((out / "evidence" / "kubernetes.json").read_text())
    assert evidence["data"]["restarts"] == 6  # the model container only, not the metrics sidecar


def test_live_kubernetes_without_a_cluster_is_unavailable_with_the_reason(tiny_registry, tmp_path):
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=mlp"})
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--out", str(tmp_path / "run"), "--json",
                     env={"KUBECONFIG": str(tmp_path / "no-such-kubeconfig"), "KUBERNETES_SERVICE_HOST": ""})
    assert result.returncode == 0, result.stderr
    k8s = json.loads(result.stdout)["evidence_sources"]["kubernetes"]
    assert k8s["status"] == "unavailable" and k8s["reason"], k8s


def test_recorded_prometheus_throttling_ranks_cpu_throttling(tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    shutil.copy(ROOT / "fixtures" / "signals" / "prometheus" / "throttled.om", signals / "metrics.om")
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=textclf", "container": "model",
                               "deployed_at": "2026-11-20T10:00:00Z"})
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evidence_sources"]["prometheus"]["status"] == "ok"
    throttling = next(h for h in report["hypotheses"] if h["cause"] == "runtime.cpu_throttling")
    assert throttling["score"] > 0.5, throttling
    assert report["latency"]["production"]["verdict"] == "regression" and not throttling["missing"]
    assert any("CFS periods after the deploy" in line for line in throttling["evidence"])
    assert any("90 s after the deploy" in line for line in throttling["evidence"]), throttling["evidence"]


def test_prometheus_down_is_recorded_not_fatal(tiny_registry, tmp_path):
    import socket

    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=mlp", "deployed_at": "2026-11-20T10:00:00Z"})
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--prometheus", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "run"),
                     "--json")
    assert result.returncode == 0, result.stderr
    prom = json.loads(result.stdout)["evidence_sources"]["prometheus"]
    assert prom["status"] in ("error", "unavailable") and "refused" in prom["reason"].lower(), prom


def test_collect_from_a_live_prometheus_then_compare_with_the_saved_signals(tiny_registry, tmp_path):
    """`diagnose collect` against a real Prometheus (backfilled with promtool) saves metrics.om; a compare with
    --signals on that folder ranks the throttling, as the live query did."""
    import pytest
    from prom_server import PromServer, skip_reason

    if skip_reason():
        pytest.skip(skip_reason())
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "serving", "selector": "app=textclf", "container": "model",
                               "deployed_at": "2026-11-20T10:00:00Z"})
    signals = tmp_path / "collected"
    with PromServer([ROOT / "fixtures" / "signals" / "prometheus" / "throttled.om"], tmp_path / "prom") as prom:
        collected = run_cli("collect", "v2", "--registry", str(tiny_registry), "--prometheus", prom.url,
                            "--gpu-seconds", "0.2", "--out", str(signals))
    assert collected.returncode == 0, collected.stderr
    assert "prometheus: ok" in collected.stdout and "CFS periods after the deploy" in collected.stdout
    assert (signals / "metrics.om").is_file()
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    causes = [h["cause"] for h in json.loads(result.stdout)["hypotheses"]]
    assert "runtime.cpu_throttling" in causes


def test_recorded_prometheus_finds_the_pods_by_their_labels(tiny_registry, tmp_path):
    """A Deployment intent-serving labelled app=intent: its pods (intent-serving-<hash>-<suffix>) are found through
    kube_pod_labels in metrics.om, not guessed as intent-<hash>-<suffix>; deployment.pod_regex, when given, wins."""
    signals = tmp_path / "signals"
    signals.mkdir()
    write_rollouts(signals / "metrics.om")
    deployment = {"namespace": "ml-prod", "selector": "app=intent", "container": "model",
                  "deployed_at": "2026-11-20T10:00:00Z"}
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1}, deployment=deployment)
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evidence_sources"]["prometheus"]["status"] == "ok"
    evidence = json.loads((out / "evidence" / "prometheus.json").read_text())["data"]
    assert evidence["pods_from"] == "kube_pod_labels"
    assert evidence["pods"] == ["intent-serving-5c6b7d8f9-k2m4p", "intent-serving-5c6b7d8f9-r7t9v",
                                "intent-serving-7d9f8-abcde", "intent-serving-7d9f8-fghij"]
    assert evidence["throttled_ratio"]["after"] == 0.4
    throttling = next(h for h in report["hypotheses"] if h["cause"] == "runtime.cpu_throttling")
    assert any("found by their labels (app=intent) in kube_pod_labels" in line for line in throttling["evidence"])

    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={**deployment, "pod_regex": "intent-serving-7d9f8-.*"})
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(tmp_path / "run2"), "--json")
    assert result.returncode == 0, result.stderr
    evidence = json.loads((tmp_path / "run2" / "evidence" / "prometheus.json").read_text())["data"]
    assert evidence["pods_from"] == "pod_regex" and evidence["pods"] == ["intent-serving-7d9f8-abcde",
                                                                        "intent-serving-7d9f8-fghij"]
