"""`diagnose serve`: a real TorchServe on 127.0.0.1 serving the tiny registry's mlp v1.

One server for the module (the JVM's start takes seconds), with dynamic batching on (batch_size 8,
max_batch_delay 50 ms): its answers must be the model's own outputs for the rows sent, 16 concurrent requests must
be answered in batches larger than one, and its Prometheus metrics must count them. Skipped where `java` is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_registry

from diagnose.cli import main
from diagnose.core.errors import UserError
from diagnose.registry import Registry
from profilers.runners import load_version
from profilers.serve_torchserve import free_ports, serve

pytestmark = pytest.mark.skipif(shutil.which("java") is None,
                                reason="TorchServe's frontend needs Java (Debian: openjdk-17-jre-headless)")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    return make_tiny_registry(tmp_path_factory.mktemp("serve") / "registry")


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    inference, management, metrics = free_ports(3)
    manifest = Registry(registry).manifest("mlp", "v1")
    with serve(manifest, tmp_path_factory.mktemp("ts"), inference, batch_size=8, max_batch_delay_ms=50, workers=1,
               management_port=management, metrics_port=metrics) as running:
        yield running


def post(url: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def as_json_row(row: pd.Series) -> dict:
    """One request-log row as `diagnose loadtest --protocol torchserve` sends it."""
    return {column: value.tolist() if hasattr(value, "tolist") else value for column, value in row.items()}


def model_outputs(registry: Path, frame: pd.DataFrame) -> np.ndarray:
    version = load_version(Registry(registry).manifest("mlp", "v1"))
    with torch.inference_mode():
        return version(version.prepare(frame)).numpy()


def test_predictions_are_the_models_outputs(server, registry):
    frame = pd.read_parquet(registry / "mlp" / "v1" / "requests.parquet").iloc[:4]
    expected = model_outputs(registry, frame)
    for i, (_, row) in enumerate(frame.iterrows()):
        status, answer = post(server.predictions_url, as_json_row(row))
        assert status == 200, answer
        np.testing.assert_allclose(answer["output"], expected[i], rtol=1e-5, atol=1e-6)
    status, answer = post(server.predictions_url, [as_json_row(row) for _, row in frame.iterrows()])  # rows in one body
    assert status == 200, answer
    np.testing.assert_allclose(answer["output"], expected, rtol=1e-5, atol=1e-6)


def test_dynamic_batching_batches_concurrent_requests(server, registry):
    frame = pd.read_parquet(registry / "mlp" / "v1" / "requests.parquet").iloc[:16]
    rows = [as_json_row(row) for _, row in frame.iterrows()]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda row: post(server.predictions_url, row), rows))
    assert all(status == 200 for status, _ in answers), answers
    sizes = [answer["batch_size"] for _, answer in answers]
    assert max(sizes) > 1 and max(sizes) <= 8, sizes
    np.testing.assert_allclose([a["output"] for _, a in answers], model_outputs(registry, frame), rtol=1e-5, atol=1e-6)


def requests_total(server) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("ts_inference_requests_total{") and 'model_name="mlp"' in line]
    return sum(counts)


def test_prometheus_metrics_count_the_requests(server, registry):
    before = requests_total(server)
    row = as_json_row(pd.read_parquet(registry / "mlp" / "v1" / "requests.parquet").iloc[0])
    for _ in range(3):
        assert post(server.predictions_url, row)[0] == 200
    deadline = time.monotonic() + 5
    while requests_total(server) < before + 3 and time.monotonic() < deadline:  # counted as the answer is sent
        time.sleep(0.1)
    assert requests_total(server) >= before + 3
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert "ts_inference_latency_microseconds" in response.read().decode()


@pytest.mark.parametrize("body, needle", [({"y": [1.0]}, "missing column(s) 'x'"),
                                          ({"x": 3.0}, "expected a list"),
                                          ("not a row", "JSON object")])
def test_a_bad_row_is_a_400_for_its_request_alone(server, body, needle):
    status, answer = post(server.predictions_url, body)
    assert status == 400 and needle in answer["error"], answer


def test_an_onnx_runtime_variant_is_served_behind_the_same_preprocessing(registry, tmp_path):
    """`--variant ort-all`: built once here from the version's requests in batches of 1 to batch_size, loaded from
    the cache by the worker, and answering concurrent requests in batches with the model's own outputs."""
    frame = pd.read_parquet(registry / "mlp" / "v1" / "requests.parquet").iloc[:12]
    expected = model_outputs(registry, frame)
    cache = tmp_path / "cache"
    inference, management, metrics = free_ports(3)
    manifest = Registry(registry).manifest("mlp", "v1")
    with serve(manifest, tmp_path / "ts", inference, batch_size=4, max_batch_delay_ms=100, management_port=management,
               metrics_port=metrics, variant="ort-all", cache_dir=cache) as running:
        assert running.variant == "ort-all"
        with ThreadPoolExecutor(len(frame)) as pool:
            answers = list(pool.map(lambda row: post(running.predictions_url, as_json_row(row[1])), frame.iterrows()))
    assert all(status == 200 for status, _ in answers), answers
    assert np.allclose([answer["output"] for _, answer in answers], expected, atol=1e-4)
    assert max(answer["batch_size"] for _, answer in answers) > 1  # the variant takes any batch size up to 4
    assert len([p for p in cache.rglob("*.onnx")]) == 1, sorted(cache.rglob("*"))  # the worker's was a cache hit
    with pytest.raises(UserError, match="unknown variant 'ort-fastest'"):
        serve(manifest, tmp_path / "ts2", inference, variant="ort-fastest", cache_dir=cache)


def test_a_taken_port_is_one_user_error(registry, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is not free"):
            serve(Registry(registry).manifest("mlp", "v1"), tmp_path, port)


def test_a_model_that_fails_to_load_is_one_user_error(registry, tmp_path):
    broken = tmp_path / "registry"
    shutil.copytree(registry / "mlp" / "v1", broken / "mlp" / "v1")
    (broken / "mlp" / "v1" / "model.pt").write_bytes(b"not a TorchScript file")
    inference, management, metrics = free_ports(3)
    with pytest.raises(UserError, match="could not load mlp v1: .*cannot load torchscript artifact model.pt"):
        serve(Registry(broken).manifest("mlp", "v1"), tmp_path / "ts", inference,
              management_port=management, metrics_port=metrics)


def test_a_bad_version_is_one_line_and_exit_2(registry, capsys):
    code = main(["serve", "v9", "--registry", str(registry)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("diagnose: error: ") and "unknown version 'v9'" in lines[0], lines


def test_loadtest_against_torchserve_splits_queue_from_the_servers_own_metrics(server, registry, tmp_path):
    """`diagnose loadtest --protocol torchserve` on the served version: every request answered, and the server's own
    ts_* counters give its average latency and queue time over the step (the client cannot split those)."""
    from conftest import run_cli

    result = run_cli("loadtest", server.url, "--protocol", "torchserve", "--server-model", server.model_name,
                     "--version", "v1", "--registry", str(registry), "--model", "mlp", "--rate", "20", "--duration", "3",
                     "--warmup", "1", "--window", "1", "--metrics", server.metrics_url, "--out", str(tmp_path / "run"),
                     "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    side = json.loads(result.stdout)["steps"][0]["sides"][""]
    assert side["errors"] == {} and side["ok"] == side["requests"] >= 50
    assert side["server"]["status"] == "ok" and side["server"]["server"] == "torchserve", side["server"]
    # the counters are read when the warm-up ends: the measured requests, give or take those in flight at its edges
    assert abs(side["server"]["requests"] - side["ok"]) <= 3, (side["server"]["requests"], side["ok"])
    assert 0 < side["server"]["latency_ms"] < side["latency_ms"]["p99"] and "queue" in side["server"]["parts"]
    run = tmp_path / "run"
    assert (run / "load_samples.parquet").is_file() and (run / "loadtest.md").is_file()
    assert not (run / "INCOMPLETE").exists()
    refused = run_cli("analyze", str(run))
    assert refused.returncode == 2 and "a `diagnose loadtest` folder" in refused.stderr


def test_a_version_swap_under_load_is_answered_throughout_and_seen_in_the_windows(server, registry, capsys):
    """`diagnose serve v1 --swap-to v2` on the module's server (last in this file: it ends serving v1 again), under an
    open-loop load: v2 is loaded beside v1 before it becomes the default and v1 drains before it is unloaded, so
    the requests are answered; the windows carry the p99 and errors around the swap, the line says when it
    happened, and the answers after it are v2's."""
    import threading

    from diagnose.serve import swap_later
    from profilers.loadgen import LoadPlan, Target, run_load

    frame = pd.read_parquet(registry / "mlp" / "v1" / "requests.parquet").iloc[:8]
    bodies = tuple(json.dumps(as_json_row(row)).encode() for _, row in frame.iterrows())
    v1, v2 = (Registry(registry).manifest("mlp", v) for v in ("v1", "v2"))
    failures: list[BaseException] = []

    def swap() -> None:
        try:
            swap_later(server, v2, 1.5)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            failures.append(exc)

    swapper = threading.Thread(target=swap)
    swapper.start()
    started = time.monotonic()
    result = run_load([Target("", server.predictions_url, "torchserve", bodies)],
                      LoadPlan(rate_rps=20, duration_s=10, warmup_s=0.5, window_s=1))
    swapper.join()
    swapped_within_load = time.monotonic() - started
    try:
        assert not failures, failures
        said = capsys.readouterr().out
        assert "swapped mlp to v2 at" in said and "the old version unloaded" in said, said
        status, answer = post(server.predictions_url, as_json_row(frame.iloc[0]))
        assert status == 200 and answer["version"] == "v2", answer
        summary = result.summary()
        # the old version drains before it is unloaded, so a request lost in the swap is rare; any that is shows
        # in its window's errors, beside every window's p99
        assert summary["requests"] == 200 and summary["ok"] >= 198, summary["errors"]
        windows = summary["windows"]
        assert sum(w["errors"] for w in windows) == summary["requests"] - summary["ok"], windows
        assert all(w["p99_ms"] is not None for w in windows), windows
        assert swapped_within_load > 1.5
    finally:
        server.swap(v1)
