"""Production latency from the serving systems' own metrics (collectors/serving_metrics.py): every preset on
series in that server's names, types, labels and unit, with a change at the deploy, read from a recorded file
and through a real Prometheus (tests/prom_server.py); a user-given metric; and a compare on a Triton metrics.om.

One file holds every server's series, each in its own namespace, so one Prometheus serves all the live tests.
Servers whose pods are replaced by the rollout (a new pod's counters start at zero) have an old and a new pod;
servers exporting summaries keep one pod (a model reloaded in place: a summary's quantiles are gauges, and a
gone pod's last value would linger 5 min in query_range's lookback); TorchServe's pod restarts (a counter reset).
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli, write_manifest
from prom_server import prometheus_servers

from collectors.prometheus import PrometheusCollector, read_offline
from collectors.serving_metrics import PRESETS, detect, unit_to_ms
from diagnose.core.errors import UserError

DEPLOYED_AT = "2026-11-20T10:00:00Z"
D = 1795168800  # DEPLOYED_AT as a Unix time
STEP = 30
TIMES = [D - 3600 - 120 + STEP * i for i in range((7200 + 240) // STEP + 1)]
PER_STEP = 100  # requests per step
OLD_POD, NEW_POD = "model-5c6d7e8f9a-old01", "model-7d9f8b6c5d-new02"
POD_REGEX = "model-[a-z0-9]+-[a-z0-9]+"

# seconds: all before in (5, 10] ms, all after in (20, 50] ms -> p50 7.5 -> 35 ms, p99 9.95 -> 49.7 ms
S_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, math.inf)
BEFORE_BUCKET, AFTER_BUCKET = 0.01, 0.05
P50, P99 = (7.5, 35.0), (9.95, 49.7)


def labels_text(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def le_text(bound: float, scale: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound * scale:g}"


class Writer:
    def __init__(self):
        self.families: dict[str, list[str]] = {}

    def add(self, family: str, kind: str, name: str, labels: dict, points):
        lines = self.families.setdefault(family, [f"# TYPE {family} {kind}"])
        lines += [f"{name}{labels_text(labels)} {v:.6g} {t}" for t, v in points]

    def text(self) -> str:
        return "\n".join(line for lines in self.families.values() for line in lines) + "\n# EOF\n"


def pods_over_time(rollout: bool):
    """(pod, times, since) per pod: a rollout replaces the old pod at the deploy, else one pod throughout."""
    if rollout:
        return [(OLD_POD, [t for t in TIMES if t < D], TIMES[0]), (NEW_POD, [t for t in TIMES if t >= D], D)]
    return [(NEW_POD, TIMES, TIMES[0])]


def cumulative(times, since, per_step_fn, reset_at=None):
    """A counter over `times`: each step adds per_step_fn(t); it starts from 0 at `since` (and at reset_at)."""
    total, out, start = 0.0, [], since
    for t in times:
        if reset_at is not None and t >= reset_at > start:
            total, start = 0.0, reset_at
        elif t > since:
            total += per_step_fn(t)
        out.append((t, total))
    return out


def add_histogram(w: Writer, ns: str, name: str, labels: dict, scale: float, steady: bool = False,
                  rollout: bool = True):
    """A histogram in the unit `scale` (per second): before in (5, 10] ms, after in (20, 50] ms (steady: always before)."""
    for pod, times, since in pods_over_time(rollout):
        base = {**labels, "namespace": ns, "pod": pod}

        def bucket_of(t):
            return BEFORE_BUCKET if steady or t <= D else AFTER_BUCKET
        for bound in S_BUCKETS:
            w.add(name, "histogram", f"{name}_bucket", {**base, "le": le_text(bound, scale)},
                  cumulative(times, since, lambda t, b=bound: PER_STEP if bucket_of(t) <= b else 0))
        w.add(name, "histogram", f"{name}_count", base, cumulative(times, since, lambda t: PER_STEP))
        w.add(name, "histogram", f"{name}_sum", base,
              cumulative(times, since, lambda t: PER_STEP * (0.0075 if bucket_of(t) == BEFORE_BUCKET else 0.035) * scale))


def add_summary(w: Writer, ns: str, name: str, labels: dict, scale: float, steady: bool = False):
    for pod, times, since in pods_over_time(rollout=False):
        base = {**labels, "namespace": ns, "pod": pod}
        for q, (before, after) in ((0.5, P50), (0.9, (9.0, 47.0)), (0.99, P99)):
            value = lambda t, b=before, a=after: (b if steady or t < D else a) / 1000 * scale  # noqa: E731
            w.add(name, "summary", name, {**base, "quantile": f"{q:g}"}, [(t, value(t)) for t in times])
        w.add(name, "summary", f"{name}_count", base, cumulative(times, since, lambda t: PER_STEP))
        w.add(name, "summary", f"{name}_sum", base,
              cumulative(times, since, lambda t: PER_STEP * (0.0075 if steady or t <= D else 0.035) * scale))


# Triton: per request queue 1.0 -> 19.2 ms, compute_infer 11.0 -> 11.2 ms, input+output 0.1 ms each side
TRITON = {"queue": (1.0, 19.2), "compute": (11.0, 11.2)}
TRITON_TOTAL = (12.1, 30.5)


def triton_counters(w: Writer, ns: str, rollout: bool):
    for pod, times, since in pods_over_time(rollout):
        base = {"model": "textclf", "version": "1", "namespace": ns, "pod": pod}

        def per_step(values):
            return lambda t: PER_STEP * 1000 * (values[0] if t <= D else values[1])  # microseconds
        for name, values in (("nv_inference_request_duration_us", TRITON_TOTAL),
                             ("nv_inference_queue_duration_us", TRITON["queue"]),
                             ("nv_inference_compute_input_duration_us", (0.05, 0.05)),
                             ("nv_inference_compute_infer_duration_us", TRITON["compute"]),
                             ("nv_inference_compute_output_duration_us", (0.05, 0.05))):
            w.add(name, "counter", name, base, cumulative(times, since, per_step(values)))
        for name, n in (("nv_inference_request_success", PER_STEP), ("nv_inference_request_failure", 0),
                        ("nv_inference_count", PER_STEP), ("nv_inference_exec_count", PER_STEP // 4)):
            w.add(name, "counter", name, base, cumulative(times, since, lambda t, n=n: n))


def torchserve(w: Writer, ns: str):
    """TorchServe's counters (µs); inference latency includes the queue: 3.0 -> 24.0 ms total, queue 1.0 -> 22.0."""
    base = {"uuid": "2f9e4d1c-aaaa-bbbb-cccc-0123456789ab", "model_name": "textclf", "model_version": "default",
            "namespace": ns, "pod": NEW_POD}
    for name, (before, after) in (("ts_inference_latency_microseconds", (3.0, 24.0)),
                                  ("ts_queue_latency_microseconds", (1.0, 22.0))):
        w.add(name, "counter", name, base,
              cumulative(TIMES, TIMES[0], lambda t, b=before, a=after: PER_STEP * 1000 * (b if t <= D else a),
                         reset_at=D + 1800))
    w.add("ts_inference_requests", "counter", "ts_inference_requests_total", base,
          cumulative(TIMES, TIMES[0], lambda t: PER_STEP, reset_at=D + 1800))


def write_all(path):
    w = Writer()
    triton_counters(w, "triton", rollout=True)
    triton_counters(w, "triton-summary", rollout=False)
    tlabels = {"model": "textclf", "version": "1"}
    add_summary(w, "triton-summary", "nv_inference_request_summary_us", tlabels, 1e6)
    for name, steady in (("nv_inference_queue_summary_us", False), ("nv_inference_compute_infer_summary_us", True)):
        add_summary(w, "triton-summary", name, tlabels, 1e6, steady=steady)
    torchserve(w, "torchserve")
    add_histogram(w, "tfserving", ":tensorflow:serving:request_latency",
                  {"API": "predict", "entrypoint": "REST", "model_name": "textclf"}, 1e6)
    add_histogram(w, "tfserving", ":tensorflow:serving:runtime_latency",
                  {"API": "Predict", "model_name": "textclf", "runtime": "TF1"}, 1e6, steady=True)
    add_histogram(w, "kserve", "request_predict_seconds", {"model_name": "textclf"}, 1)
    add_histogram(w, "kserve", "request_preprocess_seconds", {"model_name": "textclf"}, 1, steady=True)
    add_summary(w, "mlserver", "model_infer_request_duration", {"model_name": "textclf", "model_version": "v2"}, 1)
    add_histogram(w, "seldon", "seldon_model_infer_api_seconds",
                  {"model": "textclf", "server": "mlserver", "server_replica": "0", "method_type": "rest",
                   "code": "200"}, 1)
    add_histogram(w, "bentoml", "bentoml_service_request_duration_seconds",
                  {"endpoint": "/classify", "service_name": "textclf", "service_version": "v2",
                   "http_response_code": "200"}, 1)
    ovms = {"name": "textclf", "version": "1"}
    add_histogram(w, "ovms", "ovms_request_time_us", {**ovms, "interface": "REST", "api": "KServe"}, 1e6)
    add_histogram(w, "ovms", "ovms_wait_for_infer_req_time_us", ovms, 1e6)
    add_histogram(w, "ovms", "ovms_inference_time_us", ovms, 1e6, steady=True)
    add_histogram(w, "http", "http_request_duration_seconds", {"method": "POST", "handler": "/predict",
                                                               "status": "200"}, 1)
    # a namespace with the user's own metric (milliseconds) beside a generic HTTP histogram that stays steady
    add_histogram(w, "custom", "myapp_predict_latency_ms", {"route": "/predict"}, 1000)
    add_histogram(w, "custom", "http_request_duration_seconds", {"handler": "/predict"}, 1, steady=True)
    # servers no preset names, found by their series' names, each with series that must not be taken for the latency
    vllm = {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}
    add_histogram(w, "vllm", "vllm:e2e_request_latency_seconds", vllm, 1)
    add_histogram(w, "vllm", "vllm:request_queue_time_seconds", vllm, 1)
    add_histogram(w, "vllm", "vllm:request_inference_time_seconds", vllm, 1, steady=True)
    add_histogram(w, "vllm", "vllm:request_prefill_time_seconds", vllm, 1, steady=True)
    add_histogram(w, "vllm", "vllm:time_to_first_token_seconds", vllm, 1, steady=True)
    add_histogram(w, "tgi", "tgi_request_duration", {}, 1)
    add_histogram(w, "tgi", "tgi_request_queue_duration", {}, 1, steady=True)
    add_histogram(w, "tgi", "tgi_request_inference_duration", {}, 1)
    add_histogram(w, "tgi", "tgi_batch_forward_duration", {"method": "decode"}, 1, steady=True)
    ray = {"application": "default", "deployment": "Classifier", "replica": "default#Classifier#abc", "route": "/"}
    add_histogram(w, "rayserve", "ray_serve_http_request_latency_ms", {**ray, "method": "POST", "status_code": "200"},
                  1000)
    add_histogram(w, "rayserve", "ray_serve_deployment_processing_latency_ms", ray, 1000, steady=True)
    add_summary(w, "rayserve", "go_gc_duration_seconds", {}, 1)  # a runtime's own timing: never the latency
    # one histogram for every route: the kubelet's probes and Prometheus's scrapes stay fast, /predict slows down
    add_histogram(w, "probes", "http_request_duration_seconds", {"method": "POST", "handler": "/predict"}, 1)
    for route in ("/healthz", "/metrics", "/v2/health/ready"):
        add_histogram(w, "probes", "http_request_duration_seconds", {"method": "GET", "handler": route}, 1, steady=True)
    path.write_text(w.text())
    return path


# (namespace, the total's metric, parts: role -> (metric, (before, after) p99 in ms))
DISCOVERED = [
    ("vllm", "vllm:e2e_request_latency_seconds", {"queue": ("vllm:request_queue_time_seconds", P99),
                                                   "compute": ("vllm:request_inference_time_seconds", (P99[0], P99[0]))}),
    ("tgi", "tgi_request_duration", {"queue": ("tgi_request_queue_duration", (P99[0], P99[0])),
                                     "compute": ("tgi_request_inference_duration", P99)}),
    ("rayserve", "ray_serve_http_request_latency_ms",
     {"compute": ("ray_serve_deployment_processing_latency_ms", (P99[0], P99[0]))}),
]


# (namespace, preset, statistic, parts: role -> (before, after) in ms)
CASES = [
    ("triton", "triton", "average", {"queue": TRITON["queue"], "compute": TRITON["compute"]}),
    ("triton-summary", "triton_summary", "quantiles", {"queue": P99, "compute": (P99[0], P99[0])}),
    ("torchserve", "torchserve", "average", {"queue": (1.0, 22.0), "compute": (2.0, 2.0)}),
    ("tfserving", "tfserving", "quantiles", {"compute": (P99[0], P99[0])}),
    ("kserve", "kserve", "quantiles", {"preprocess": (P99[0], P99[0])}),
    ("mlserver", "mlserver", "quantiles", {}),
    ("seldon", "seldon", "quantiles", {}),
    ("bentoml", "bentoml", "quantiles", {}),
    ("ovms", "ovms", "quantiles", {"queue": P99, "compute": (P99[0], P99[0])}),
    ("http", "http", "quantiles", {}),
]


@pytest.fixture(scope="module")
def om_file(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("serving") / "metrics.om")


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    yield from prometheus_servers(tmp_path_factory)


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def offline(path, namespace, **kwargs):
    return read_offline(path, DEPLOYED_AT, namespace=namespace, pod_regex=POD_REGEX, **kwargs)


def check(evidence, preset, statistic, parts):
    assert evidence.ok, evidence.reason
    lat = evidence.data["latency"]
    assert lat["server"] == preset and lat["statistic"] == statistic and lat["unit"] == "ms", lat
    if preset == "triton":
        assert lat["avg_ms"] == {"before": TRITON_TOTAL[0], "after": TRITON_TOTAL[1]}
        assert lat["p99_ms"] == {"before": None, "after": None}
    elif preset == "torchserve":
        assert lat["avg_ms"] == {"before": 3.0, "after": 24.0}
    else:
        assert lat["p50_ms"]["before"] == pytest.approx(P50[0], abs=0.05)
        assert lat["p50_ms"]["after"] == pytest.approx(P50[1], abs=0.05)
        assert lat["p99_ms"]["before"] == pytest.approx(P99[0], abs=0.05)
        assert lat["p99_ms"]["after"] == pytest.approx(P99[1], abs=0.05)
    assert lat["requests"]["after"] == pytest.approx(PER_STEP * 120, rel=0.05)
    for role, (before, after) in parts.items():
        assert lat[role]["before"] == pytest.approx(before, abs=0.05), (role, lat[role])
        assert lat[role]["after"] == pytest.approx(after, abs=0.05), (role, lat[role])
    for role in {"queue", "compute", "preprocess", "postprocess"} - set(parts):
        assert role not in lat
    label = next(p.label for p in PRESETS if p.name == preset)
    line = next(s for s in evidence.summary if "latency" in s and label in s)
    assert ("average request latency" if statistic == "average" else "p99 latency") in line
    assert ("counters" if statistic == "average" else "quantiles") in line
    for role in parts:
        assert f"{role}" in line
    return lat


@pytest.mark.parametrize("namespace, preset, statistic, parts", CASES, ids=[c[0] for c in CASES])
def test_offline_preset(om_file, namespace, preset, statistic, parts):
    check(offline(om_file, namespace), preset, statistic, parts)


@pytest.mark.parametrize("namespace, preset, statistic, parts", CASES, ids=[c[0] for c in CASES])
def test_live_preset(prom, om_file, tmp_path, namespace, preset, statistic, parts):
    pytest.importorskip("prometheus_api_client", reason="prometheus-api-client is not installed")
    server = prom(om_file)
    collector = PrometheusCollector(server.url, namespace, POD_REGEX, deployed_at=DEPLOYED_AT, timeout_s=10)
    live = collector.collect()
    lat = check(live, preset, statistic, parts)
    assert len(collector.queries) == 3  # containers, GPU and latency (one name regex for every preset)
    off = offline(om_file, namespace).data["latency"]
    for key in ("p50_ms", "p99_ms", "avg_ms"):
        for side in ("before", "after"):
            if off[key][side] is None:
                assert lat[key][side] is None
            else:
                assert lat[key][side] == pytest.approx(off[key][side], rel=0.01)
    again = offline(collector.save(tmp_path), namespace)  # what was read, saved, reads back the same
    assert again.data["latency"] == live.data["latency"]


def test_triton_queue_grows_compute_steady_summary_line(om_file):
    e = offline(om_file, "triton")
    line = next(s for s in e.summary if s.startswith("average request latency"))
    assert line == ("average request latency 12 -> 30 ms (+152%, 95% CI +152% .. +152%) from Triton "
                    "nv_inference_request_duration_us (counters); queue 1.0 -> 19 ms, compute 11 -> 11 ms, "
                    "the hour before the deploy vs the hour after"), line


def test_triton_summaries_win_over_its_counters(om_file):
    lat = offline(om_file, "triton-summary").data["latency"]
    assert lat["server"] == "triton_summary" and lat["metric"] == "nv_inference_request_summary_us"


def test_user_metric_first_then_presets(om_file):
    lat = offline(om_file, "custom").data["latency"]
    assert lat["server"] == "http" and lat["p99_ms"]["after"] == pytest.approx(P99[0], abs=0.05)  # steady
    e = offline(om_file, "custom", latency_metric="myapp_predict_latency_ms")
    lat = e.data["latency"]
    assert lat["server"] == "user" and lat["metric"] == "myapp_predict_latency_ms" and lat["unit"] == "ms"
    assert lat["p99_ms"]["before"] == pytest.approx(P99[0], abs=0.05)
    assert lat["p99_ms"]["after"] == pytest.approx(P99[1], abs=0.05)  # milliseconds, not scaled again
    assert any("from myapp_predict_latency_ms (quantiles)" in s for s in e.summary), e.summary
    # a user name with no series here: said, and the presets still read
    e = offline(om_file, "bentoml", latency_metric="myapp_predict_latency_ms")
    assert e.data["latency"]["server"] == "bentoml"
    assert any("no myapp_predict_latency_ms series" in n for n in e.data["notes"])


def test_user_counter_pair_gives_an_average(tmp_path):
    w = Writer()
    base = {"namespace": "ns", "pod": NEW_POD}
    w.add("infer_time_microseconds_sum", "counter", "infer_time_microseconds_sum", base,
          cumulative(TIMES, TIMES[0], lambda t: PER_STEP * (4000 if t <= D else 9000)))
    w.add("infer_time_microseconds_count", "counter", "infer_time_microseconds_count", base,
          cumulative(TIMES, TIMES[0], lambda t: PER_STEP))
    path = tmp_path / "metrics.om"
    path.write_text(w.text())
    lat = offline(path, "ns", latency_metric="infer_time_microseconds").data["latency"]
    assert lat["server"] == "user" and lat["statistic"] == "average"
    assert lat["avg_ms"] == {"before": 4.0, "after": 9.0}


def test_units_and_detection():
    assert unit_to_ms("x_seconds") == (1000.0, True) and unit_to_ms("x_ms") == (1.0, True)
    assert unit_to_ms("x_milliseconds") == (1.0, True) and unit_to_ms("x_us") == (0.001, True)
    assert unit_to_ms("x_microseconds_total") == (0.001, True) and unit_to_ms("x_latency") == (1000.0, False)
    assert detect({}) is None
    assert detect({("ovms_request_time_us_bucket", (("le", "+Inf"),)): None}).name == "ovms"
    assert detect({("nv_inference_request_duration_us", ()): None}) is None  # no request counter: no average


def test_bad_latency_metric_is_a_user_error(om_file, tiny_registry, tmp_path):
    with pytest.raises(UserError, match="latency_metric"):
        offline(om_file, "triton", latency_metric="request latency")
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2",
                     "--latency-metric", "not a name", "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("--latency-metric: 'not a name' is not a Prometheus "
                                                           "metric name"), result.stderr
    result = run_cli("collect", "v2", "--registry", str(tiny_registry), "--latency-metric", "bad-name",
                     "--out", str(tmp_path / "signals"))
    assert result.returncode == 2 and "--latency-metric: 'bad-name'" in result.stderr, result.stderr


def test_compare_finds_triton_latency_with_no_configuration(om_file, tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "metrics.om").write_text(om_file.read_text())
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "triton", "selector": "app=model", "deployed_at": DEPLOYED_AT})
    run = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
                     "--no-profile", "--no-verify", "--signals", str(signals), "--out", str(run), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    prom = report["evidence_sources"]["prometheus"]
    assert prom["status"] == "ok", prom
    evidence = json.loads((run / "evidence" / "prometheus.json").read_text())
    lat = evidence["data"]["latency"]
    assert lat["server"] == "triton" and lat["statistic"] == "average" and lat["unit"] == "ms"
    assert lat["avg_ms"] == {"before": 12.1, "after": 30.5}
    assert lat["queue"]["after"] == 19.2 and lat["compute"]["after"] == 11.2
    assert any(line.startswith("average request latency 12 -> 30 ms (+152%, 95% CI +152% .. +152%) from Triton")
               for line in evidence["summary"])


def test_manifest_latency_metric_and_the_cli_wins(om_file, tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "metrics.om").write_text(om_file.read_text())
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   deployment={"namespace": "custom", "selector": "app=model", "deployed_at": DEPLOYED_AT,
                               "latency_metric": "my latency"})
    args = ("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "1",
            "--no-profile", "--no-verify", "--signals", str(signals))
    bad = run_cli(*args, "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "latency_metric" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    run = tmp_path / "run"
    good = run_cli(*args, "--latency-metric", "myapp_predict_latency_ms", "--out", str(run), "--json")
    assert good.returncode == 0, good.stderr
    lat = json.loads((run / "evidence" / "prometheus.json").read_text())["data"]["latency"]
    assert lat["server"] == "user" and lat["metric"] == "myapp_predict_latency_ms"
    assert lat["p99_ms"]["after"] == pytest.approx(P99[1], abs=0.05)


def check_discovered(evidence, metric, parts):
    assert evidence.ok, evidence.reason
    lat = evidence.data["latency"]
    assert (lat["server"], lat["metric"], lat["statistic"]) == ("discovered", metric, "quantiles"), lat
    assert lat["p99_ms"]["before"] == pytest.approx(P99[0], abs=0.05)  # units from the name, seconds without one
    assert lat["p99_ms"]["after"] == pytest.approx(P99[1], abs=0.05)
    for role, (name, (before, after)) in parts.items():
        assert lat[role]["metric"] == name and lat[role]["before"] == pytest.approx(before, abs=0.05), lat[role]
        assert lat[role]["after"] == pytest.approx(after, abs=0.05), lat[role]
    assert {"queue", "compute"} - set(parts) == {"queue", "compute"} - set(lat)
    assert any(f"read the histogram {metric}" in n and "found by its name" in n for n in evidence.data["notes"])
    assert any(f"from {metric} (quantiles)" in line for line in evidence.summary), evidence.summary
    return lat


@pytest.mark.parametrize("namespace, metric, parts", DISCOVERED, ids=[c[0] for c in DISCOVERED])
def test_a_server_no_preset_names_is_found_by_its_latency_series_names(om_file, prom, tmp_path, namespace, metric,
                                                                      parts):
    """vLLM, TGI and Ray Serve in their own names: the request's latency histogram is found with no configuration,
    its queue and compute stages beside it; time-to-first-token, prefill, a batch's forward pass and Go's GC
    summary are not taken for it. Offline and through a real Prometheus alike."""
    off = check_discovered(offline(om_file, namespace), metric, parts)
    pytest.importorskip("prometheus_api_client", reason="prometheus-api-client is not installed")
    collector = PrometheusCollector(prom(om_file).url, namespace, POD_REGEX, deployed_at=DEPLOYED_AT, timeout_s=10)
    live = check_discovered(collector.collect(), metric, parts)
    assert len(collector.queries) == 3
    assert live["p99_ms"] == off["p99_ms"] and live["server"] == off["server"]


def test_discovery_ranks_the_whole_request_and_leaves_runtime_timings_out():
    def histograms(*names, counts=None):
        group = {(f"{n}_bucket", (("le", "+Inf"),)): None for n in names}
        group.update({(f"{n}_count", ()): values for n, values in (counts or {}).items()})
        return group

    assert detect(histograms("go_gc_duration_seconds", "python_gc_duration_seconds")) is None
    assert detect(histograms("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds")) is None
    found = detect(histograms("api_request_duration_seconds", "api_total_duration_ms", "api_queue_wait_seconds"))
    assert (found.metric, found.to_ms, found.parts) == ("api_total_duration_ms", 1.0,
                                                        (("queue", "api_queue_wait_seconds"),))
    # only a compute stage: it stands for the request; a route that served nothing comes after one that did
    assert detect(histograms("model_inference_latency_seconds")).metric == "model_inference_latency_seconds"
    served = histograms("svc_grpc_request_latency_ms", "svc_http_request_latency_ms",
                        counts={"svc_grpc_request_latency_ms": [0.0, 0.0], "svc_http_request_latency_ms": [3.0, 9.0]})
    assert detect(served).metric == "svc_http_request_latency_ms"
    # a preset always wins over a discovered name
    assert detect(histograms("ovms_request_time_us", "vllm:e2e_request_latency_seconds")).name == "ovms"


def test_probe_and_scrape_routes_are_not_taken_for_requests(om_file):
    """Health checks and /metrics share the requests' histogram in many servers: three such routes at the old
    latency beside /predict, which slowed down. Mixed in, they would hold the p50 at its old value."""
    e = offline(om_file, "probes")
    lat = e.data["latency"]
    assert lat["server"] == "http"
    assert lat["p50_ms"]["before"] == pytest.approx(P50[0], abs=0.05)
    assert lat["p50_ms"]["after"] == pytest.approx(P50[1], abs=0.05)  # /predict's alone
    assert lat["requests"]["after"] == pytest.approx(PER_STEP * 120, rel=0.05)
    assert any("left out the latency series of 3 probe and scrape routes (/healthz, /metrics, /v2/health/ready)" in n
               for n in e.data["notes"]), e.data["notes"]
