"""`diagnose loadtest` (issue 16): the rules of a step, the search, the capacity plan, the server-side split, and the
command end to end against real servers with known capacity (tests/loadtest_server.py: real queueing behind N
workers, Triton's counters on /metrics). The generator itself is test_loadgen.py's; TorchServe is test_serve.py's."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli
from loadtest_server import running

from diagnose.core.errors import UserError
from diagnose.loadtest import breakdown, capacity_plan, findings, knee, parse_slo, passes


@pytest.mark.parametrize("text, ms", [("p99=200ms", 200.0), ("p99=0.2s", 200.0), ("P99 = 50", 50.0)])
def test_the_slo_parses(text, ms):
    assert parse_slo(text) == ms


@pytest.mark.parametrize("text", ["p50=200ms", "p99", "p99=fast", "p99=0ms", "p99=-3ms"])
def test_a_bad_slo_is_one_clear_error(text):
    with pytest.raises(UserError, match="--slo"):
        parse_slo(text)


def side(p99=10.0, achieved=50.0, requests=500, ok=500, stable=True, bottleneck=False, server=None) -> dict:
    return {"latency_ms": {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99, "p99_9": p99 * 1.2}, "achieved_rps": achieved,
            "requests": requests, "ok": ok, "stable": stable, "errors": {},
            "generator": {"bottleneck": bottleneck, "reason": "send lag p99 40 ms"}, **({"server": server} if server else {})}


def step(rate=50.0, **sides) -> dict:
    return {"rate_rps": rate, "sides": sides or {"": side()}}


@pytest.mark.parametrize("s, ok, why", [
    (step(), True, "kept up"),
    (step(**{"": side(p99=250.0)}), False, "over the 200 ms SLO"),
    (step(**{"": side(achieved=40.0)}), False, "completed 40.0 of 50 rps"),
    (step(**{"": side(ok=480)}), False, "20 of 500 requests failed"),
    (step(**{"": side(stable=False)}), False, "did not settle"),
    (step(**{"": side(bottleneck=True)}), False, "the load generator, not the server"),
])
def test_a_step_passes_only_when_every_rule_holds(s, ok, why):
    result, reason = passes(s, 200.0)
    assert result is ok and why in reason


def test_the_knee_is_the_last_rate_before_p99_rises():
    steps = [step(r, **{"": side(p99=p)}) for r, p in ((10, 8.0), (20, 8.5), (40, 11.0), (80, 60.0))]
    assert knee(steps, "") == 40
    assert knee(steps[:3], "") is None  # p99 never rose 1.5x


def test_the_capacity_plan_keeps_headroom_and_says_its_assumptions():
    plan = capacity_plan(100.0, 500.0, 0.3)
    assert plan["replicas"] == 8 and plan["per_replica_rps"] == 70.0  # ceil(500 / 70)
    assert any("linearly" in a for a in plan["assumptions"])
    assert capacity_plan(None, 500.0, 0.3)["replicas"] is None


def counters(request_us, queue_us, compute_us, count, server="triton") -> dict:
    if server == "triton":
        names = ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_request_success")
    else:
        names = ("ts_inference_latency_microseconds", "ts_queue_latency_microseconds", None, "ts_inference_requests_total")
    values = dict(zip(names, (request_us, queue_us, compute_us, count), strict=True))
    # two label sets per series: the breakdown sums over labels
    return {f'{n}{{model="m",version="{v}"}}': x / 2 for n, x in values.items() if n for v in (1, 2)}


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_the_breakdown_is_the_servers_own_average_and_parts_over_the_step(server):
    before = counters(1_000_000, 200_000, 800_000, 100, server)
    after = counters(3_000_000, 1_200_000, 1_800_000, 200, server)  # 100 requests: 20 ms each, 10 ms queued
    found = breakdown(before, after)
    assert found["server"] == server and found["requests"] == 100 and found["latency_ms"] == pytest.approx(20.0)
    assert found["parts"]["queue"] == pytest.approx(10.0)
    if server == "triton":
        assert found["parts"]["compute"] == pytest.approx(10.0)
    assert breakdown(before, before) is None  # nothing moved: no breakdown


def server(latency, queue) -> dict:
    return {"status": "ok", "server": "triton", "label": "Triton", "metric": "nv_inference_request_duration_us",
            "latency_ms": latency, "parts": {"queue": queue, "compute": latency - queue}}


@pytest.mark.parametrize("old, new, cause", [
    (server(12.0, 1.0), server(40.0, 29.0), "serving.capacity"),           # queued longer, compute held
    (server(12.0, 1.0), server(30.0, 1.5), "model.compute_increase"),      # slower in service
    (server(12.0, 1.0), server(12.5, 1.1), None),                          # nothing moved
])
def test_findings_name_the_part_that_grew(old, new, cause):
    found = findings(step(60.0, old=side(server=old), new=side(server=new)))
    assert [f["cause"] for f in found] == ([cause] if cause else [])


# --- the command, against real servers -------------------------------------------------------------------------------
def loadtest(registry, out, *args: str):
    result = run_cli("loadtest", *args, "--protocol", "v2", "--server-model", "m", "--version", "v1", "--registry",
                     str(registry), "--model", "mlp", "--warmup", "1", "--window", "1", "--out", str(out), "--json",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_search_finds_the_capacity_of_a_server_with_one_worker(tiny_registry, tmp_path):
    """One worker at 20 ms a request serves 50 a second at most: from 40 rps (kept) the search doubles to 80 (the queue
    grows without bound), then bisects to 57 (still over capacity): the highest rate under a 200 ms p99 is 40."""
    with running(service_ms=20, workers=1) as url:
        evidence = loadtest(tiny_registry, tmp_path / "run", url, "--rate", "40", "--duration", "3", "--find-max",
                            "--slo", "p99=200ms", "--max-steps", "3", "--target-rps", "200")
    found = evidence["find_max"]
    assert found["max_rps"] == 40, evidence["steps"]
    assert found["first_failing_rps"] > found["max_rps"]
    assert evidence["capacity"]["replicas"] == pytest.approx(200 / (found["max_rps"] * 0.7), abs=1)


def test_two_deployments_under_one_schedule_name_the_queue_that_grew(tiny_registry, tmp_path):
    """The same model (12 ms a request) behind two workers (old) and one (new), at 60 Poisson arrivals a second (evenly
    spaced ones would never queue below 100%): the new one runs at 72% utilization and queues, the old at 36%;
    compute is the same. The verdict is a regression and the finding is serving.capacity."""
    with running(service_ms=12, workers=2) as old, running(service_ms=12, workers=1) as new:
        evidence = loadtest(tiny_registry, tmp_path / "run", "--old", old, "--new", new, "--rate", "60",
                            "--arrival", "poisson", "--duration", "6", "--old-metrics", old + "/metrics",
                            "--new-metrics", new + "/metrics")
    sides = evidence["steps"][0]["sides"]
    assert sides["old"]["requests"] == sides["new"]["requests"]
    comparison = evidence["comparison"]
    assert comparison["verdict"] == "regression", comparison
    assert [f["cause"] for f in evidence["findings"]] == ["serving.capacity"], sides
    # the load test as a signal of the compare: its finding becomes the ranked cause, quoting both sides
    signals = tmp_path / "signals"
    signals.mkdir()
    shutil.copy(tmp_path / "run" / "evidence" / "loadtest.json", signals / "loadtest.json")
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--no-benchmark",
                     "--signals", str(signals), "--out", str(tmp_path / "compare"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    top = report["hypotheses"][0]
    assert top["cause"] == "serving.capacity", report["hypotheses"]
    assert any("the queue grew only on the new deployment" in line for line in top["evidence"]), top["evidence"]
    assert any("under 60 requests/s on one arrival schedule" in line for line in top["evidence"]), top["evidence"]
    assert (tmp_path / "compare" / "signals" / "loadtest.json").is_file()  # kept with the run, for analyze


def test_a_load_test_of_one_endpoint_compares_nothing_and_a_bad_file_is_one_line(tmp_path):
    from diagnose.loadtest import read_signal

    one = {"steps": [{"rate_rps": 10, "sides": {"": {"latency_ms": {"p50": 5.0, "p99": 9.0}, "achieved_rps": 10.0,
                                                       "errors": {}}}}]}
    (tmp_path / "loadtest.json").write_text(json.dumps(one))
    evidence = read_signal(tmp_path / "loadtest.json")
    assert evidence.status == "unavailable" and "a load test of one endpoint" in evidence.reason
    (tmp_path / "loadtest.json").write_text('{"steps": []}')
    with pytest.raises(UserError, match="not the evidence of a `diagnose loadtest` run"):
        read_signal(tmp_path / "loadtest.json")


def test_an_unreachable_endpoint_is_one_line_before_any_load(tiny_registry, tmp_path):
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://user:hunter2@127.0.0.1:{sock.getsockname()[1]}"
    result = run_cli("loadtest", "--old", url, "--new", url, "--protocol", "v2", "--server-model", "m", "--version",
                     "v1", "--registry", str(tiny_registry), "--model", "mlp", "--out", str(tmp_path / "run"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "the old endpoint" in lines[0] and "is unreachable: nothing answers at 127.0.0.1:" in lines[0], lines
    assert "hunter2" not in result.stderr and not (tmp_path / "run").exists()
