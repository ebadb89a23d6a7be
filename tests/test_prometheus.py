"""The Prometheus collector: the OpenMetrics reader, the series math, offline files, and a real Prometheus.

fixtures/signals/prometheus/ holds three recordings of the same rollout (deployment textclf in namespace
serving, ReplicaSet textclf-5b8c9d7f4 -> textclf-7d9f8b6c5d at 2026-11-20T10:00:00Z, container `model`):
throttled.om (CFS throttling 2% -> 40%, p99 jumps 90 s after the deploy, counters of pod q7w9z restart at
10:30), oom.om (working set climbs to the 2 GiB limit: 3 OOM kills and restarts, p99 jumps at 10:12) and
healthy.om. A pod of another deployment (feature-cache, throttled 60%, slow) shares the namespace.

The live tests backfill a fixture into a real Prometheus with promtool (tests/prom_server.py) and check that
query_range through the collector gives the same evidence as the file; they are skipped where prometheus /
promtool or prometheus-api-client are not installed. Failure modes (down, slow, error answers) use local
HTTP servers.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from prom_rollouts import write_rollouts
from prom_server import backfill, skip_reason

from collectors.openmetrics import (
    format_openmetrics,
    parse_openmetrics,
    read_openmetrics,
    write_openmetrics,
)
from collectors.prometheus import (
    PrometheusCollector,
    Target,
    change_points,
    counter_deltas,
    histogram_quantile,
    increase,
    make_grid,
    on_grid,
    pod_regex_from_selector,
    promql_selectors,
    promql_string,
    read_offline,
    save_openmetrics,
)
from collectors.prometheus_pods import label_name, listed, no_match_reason, parse_selector
from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence, collect_safely

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "signals" / "prometheus"
DEPLOYED_AT = "2026-11-20T10:00:00Z"
D = 1795168800.0  # DEPLOYED_AT as a Unix time
DEPLOYMENT = {"namespace": "serving", "selector": "app=textclf,version=v2", "container": "model",
              "deployed_at": DEPLOYED_AT}
POD_REGEX = pod_regex_from_selector(DEPLOYMENT["selector"])
OFFLINE = {"container": "model", "pod_regex": POD_REGEX, "namespace": "serving"}
FROM_DEPLOYMENT = {"container": "model", "selector": DEPLOYMENT["selector"], "namespace": "serving"}  # as the manifest
TIMEOUT_S = 0.5




@pytest.fixture
def api_client():
    return pytest.importorskip("prometheus_api_client", reason="prometheus-api-client is not installed")


def offline(name: str, **kwargs) -> Evidence:
    return read_offline(FIXTURES / f"{name}.om", DEPLOYED_AT, **{**OFFLINE, **kwargs})


def om(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# --- the OpenMetrics reader ---------------------------------------------------------------------------------


def test_parser_exact_values_escapes_nan_inf():
    text = om(
        "# HELP app_temperature_celsius Temperature, with a \\\\ and a \\n in the help.",
        "# TYPE app_temperature_celsius gauge",
        "# UNIT app_temperature_celsius celsius",
        "# a free comment is ignored",
        'app_temperature_celsius{pod="a\\"b\\\\c\\nd",zone="eu"} 21.5 1795168800',
        'app_temperature_celsius{zone="eu",pod="a\\"b\\\\c\\nd"} NaN 1795168830.250',
        'app_temperature_celsius{pod="a\\"b\\\\c\\nd",zone="eu"} +Inf 1795168860',
        'app_temperature_celsius{pod="a\\"b\\\\c\\nd",zone="eu"} -Inf 1795168890',
        'app_temperature_celsius{pod="{braces}, commas=\\"x\\"",zone="eu"} -1.5e3 1795168800',
        "# TYPE app_requests counter",
        'app_requests_total{code="200"} 17 1795168800 # {trace_id="abc"} 1.0 1795168799.5',
        'app_requests_total{code="200"} 1e2 1795168830',
        "app_uptime_seconds 12 1795168800",
        "# EOF",
    )
    data = parse_openmetrics(text)
    weird = (("pod", 'a"b\\c\nd'), ("zone", "eu"))
    ts, vs = data.series[("app_temperature_celsius", weird)]
    assert ts.tolist() == [1795168800.0, 1795168830.25, 1795168860.0, 1795168890.0]
    assert vs[0] == 21.5 and math.isnan(vs[1]) and vs[2] == math.inf and vs[3] == -math.inf
    assert data.series[("app_temperature_celsius", (("pod", '{braces}, commas="x"'), ("zone", "eu")))][1].tolist() == [-1500.0]
    assert data.series[("app_requests_total", (("code", "200"),))][1].tolist() == [17.0, 100.0]
    assert data.series[("app_uptime_seconds", ())][1].tolist() == [12.0]
    assert data.types == {"app_temperature_celsius": "gauge", "app_requests": "counter"}
    assert data.units == {"app_temperature_celsius": "celsius"}
    assert data.help["app_temperature_celsius"] == "Temperature, with a \\ and a \n in the help."
    assert data.skipped_lines == 0 and data.samples == 8 and data.lines == 14
    frame = data.frame()
    assert list(frame.columns) == ["metric", "labels", "timestamp", "value"] and len(frame) == 8
    row = frame[(frame.metric == "app_temperature_celsius") & (frame.timestamp == 1795168800.0)].iloc[0]
    assert json.loads(row["labels"]) == {"pod": 'a"b\\c\nd', "zone": "eu"} and row["value"] == 21.5


def test_parser_histogram_with_many_timestamped_points():
    """What prometheus_client's parser refuses ("+Inf bucket missing"): one line per point, series after series."""
    lines = ["# TYPE rpc_seconds histogram"]
    for le in ("0.1", "0.5", "+Inf"):
        for i in range(200):
            lines.append(f'rpc_seconds_bucket{{le="{le}"}} {i * {"0.1": 5, "0.5": 9, "+Inf": 10}[le]} {1795168800 + 15 * i}')
    lines += [f"rpc_seconds_count {i * 10} {1795168800 + 15 * i}" for i in range(200)]
    lines += [f"rpc_seconds_sum {i * 2.5} {1795168800 + 15 * i}" for i in range(200)]
    data = parse_openmetrics(om(*lines, "# EOF"))
    assert len(data.series) == 5 and data.samples == 1000 and data.skipped_lines == 0
    ts, vs = data.series[("rpc_seconds_bucket", (("le", "+Inf"),))]
    assert len(ts) == 200 and vs[-1] == 1990 and ts[-1] - ts[0] == 15 * 199
    # the bucket increases over the whole span give the quantiles
    grid = 1795168800 + 15 * np.arange(200.0)
    buckets = [(float(le), increase(on_grid(*data.series[("rpc_seconds_bucket", (("le", le),))], grid, 15), grid,
                                    np.ones(200, bool))) for le in ("0.1", "0.5", "+Inf")]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)        # rank 995 of 1990: 995/995 of bucket 1
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * (1393 - 995) / 796)


def test_parser_orders_points_and_keeps_the_last_duplicate():
    data = parse_openmetrics(om("g 1 30", "g 2 10", "g 3 20", "g 4 20", "# EOF"))
    ts, vs = data.series[("g", ())]
    assert ts.tolist() == [10, 20, 30] and vs.tolist() == [2, 4, 1]
    assert data.out_of_order == 1 and data.duplicates == 1  # 10 came after 30; 20 twice


def test_bad_lines_are_skipped_and_counted_with_their_line_numbers():
    text = om(
        "# TYPE c counter",
        'c_total{a="1"} 1 1795168800',
        "this is not a sample",
        'c_total{a="1" 2 1795168830',            # unclosed braces
        'c_total{a="\\x"} 2 1795168830',         # invalid escape
        'c_total{a="1",a="2"} 2 1795168830',     # repeated label
        'c_total{a="1"} 2',                      # no timestamp: promtool needs one
        'c_total{a="1"} 1_000 1795168830',       # Python float() would take it; OpenMetrics does not
        'c_total{a="1"} 3 yesterday',
        'c_total{a="1"} 4 1795168860',
        "# EOF",
    )
    data = parse_openmetrics(text, "x.om")
    assert data.series[("c_total", (("a", "1"),))][1].tolist() == [1, 4]
    assert data.skipped_lines == 7
    assert [s.split(":")[0] for s in data.skipped] == [f"line {n}" for n in range(3, 10)]
    assert "no timestamp" in data.skipped[4] and "invalid escape" in data.skipped[2]


def test_nan_inf_and_negative_counters_are_skipped(tmp_path):
    path = tmp_path / "nan.om"
    path.write_text(om(
        "# TYPE req counter", "req_total 1 100", "req_total NaN 130", "req_total +Inf 160", "req_total -3 190",
        "req_total 5 220",
        "# TYPE lat histogram", 'lat_bucket{le="+Inf"} NaN 100', 'lat_bucket{le="+Inf"} 2 130', "lat_count -Inf 100",
        "lat_sum NaN 100",  # a sum may be NaN
        "# TYPE temp gauge", "temp NaN 100",  # a gauge may be NaN
        "untyped_total +Inf 100",  # no TYPE: _total is taken as a counter
        "# EOF"))
    data = read_openmetrics(path)
    assert data.series[("req_total", ())][1].tolist() == [1, 5]
    assert data.series[("lat_bucket", (("le", "+Inf"),))][1].tolist() == [2]
    assert ("lat_count", ()) not in data.series and ("untyped_total", ()) not in data.series
    assert math.isnan(data.series[("lat_sum", ())][1][0]) and math.isnan(data.series[("temp", ())][1][0])
    assert data.skipped_lines == 6 and all("is a counter and cannot be" in s for s in data.skipped)


def test_garbage_file_is_a_user_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "garbage.om"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(UserError) as info:
        read_openmetrics(path)
    message = str(info.value)
    assert str(path) in message and "line 1" in message and "no OpenMetrics sample could be read" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# TYPE g gauge\n# EOF\n"])
def test_a_file_without_samples_is_a_user_error(tmp_path, text):
    path = tmp_path / "empty.om"
    path.write_text(text)
    with pytest.raises(UserError, match="no OpenMetrics sample could be read"):
        read_openmetrics(path)


def test_truncated_file_is_a_user_error_naming_the_last_line(tmp_path):
    part = (FIXTURES / "healthy.om").read_text()[:1_000_003]  # cut mid-line, as a copy that died would be
    path = tmp_path / "truncated.om"
    path.write_text(part)
    with pytest.raises(UserError) as info:
        read_offline(path, DEPLOYED_AT, **OFFLINE)
    last_line = len(part.splitlines())
    assert f"{path}: line {last_line}: truncated" in str(info.value) and "# EOF" in str(info.value)


def test_data_after_eof_is_a_user_error(tmp_path):
    path = tmp_path / "twice.om"
    path.write_text(om("g 1 100", "# EOF", "g 2 130", "# EOF"))
    with pytest.raises(UserError, match=r"line 3: data after `# EOF`"):
        read_openmetrics(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing"):
        read_offline(tmp_path / "metrics.om", DEPLOYED_AT)


def test_huge_label_cardinality_is_capped_per_metric(tmp_path):
    lines = ["# TYPE requests counter"]
    lines += [f'requests_total{{user_id="u{i}"}} {i} 1795168800' for i in range(10_250)]
    lines += ['other_total{a="1"} 1 1795168800', "# EOF"]
    path = tmp_path / "cardinality.om"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    data = read_openmetrics(path)
    assert time.monotonic() - started < 10
    assert sum(1 for name, _ in data.series if name == "requests_total") == 10_000
    assert data.dropped_series == {"requests_total": 250} and data.dropped_samples == 250
    assert ("other_total", (("a", "1"),)) in data.series
    small = read_openmetrics(path, max_series_per_metric=10)
    assert small.dropped_series == {"requests_total": 10_240}


def test_writer_round_trip_and_escaping(tmp_path):
    series = {
        ("http_seconds_bucket", (("le", "0.1"), ("pod", 'we"ird\\pod\n'))): (np.array([10.0, 40.0]), np.array([1.0, 3.0])),
        ("http_seconds_bucket", (("le", "+Inf"), ("pod", 'we"ird\\pod\n'))): (np.array([10.0, 40.0]), np.array([2.0, 5.0])),
        ("http_seconds_count", (("pod", 'we"ird\\pod\n'),)): (np.array([10.0, 40.0]), np.array([2.0, 5.0])),
        ("cpu_total", ()): (np.array([40.0, 10.0]), np.array([7.5, 1.0])),
        ("temp", (("gpu", "0"),)): (np.array([10.5]), np.array([np.nan])),
    }
    text = format_openmetrics(series)
    assert "# TYPE http_seconds histogram" in text and "# TYPE cpu counter" in text and "# TYPE temp gauge" in text
    assert 'pod="we\\"ird\\\\pod\\n"' in text and text.endswith("# EOF\n")
    assert "cpu_total 1 10\ncpu_total 7.5 40\n" in text and "temp{gpu=\"0\"} NaN 10.5" in text
    back = parse_openmetrics(text).series
    assert set(back) == set(series)
    for key, (ts, vs) in series.items():
        order = np.argsort(ts)
        np.testing.assert_array_equal(back[key][0], ts[order])
        np.testing.assert_array_equal(back[key][1], vs[order])
    path = write_openmetrics(tmp_path / "x" / "metrics.om", series)
    assert read_openmetrics(path).samples == 9


# --- the series math --------------------------------------------------------------------------------------


def test_counter_reset_adds_the_pre_reset_value():
    grid = np.array([0.0, 30, 60, 90, 120])
    values = np.array([10.0, 20, 5, 15, np.nan])
    deltas, spans = counter_deltas(values, grid)
    assert np.isnan(deltas[0]) and deltas[1:4].tolist() == [10, 5, 10] and np.isnan(deltas[4])
    assert spans[1:4].tolist() == [30, 30, 30]
    assert increase(values, grid, np.ones(5, bool)) == 25  # 20 before the reset, 15 after: (20 - 10) + 15
    # a gap bridges: the increase between the samples on either side of it is kept
    assert increase(np.array([1.0, np.nan, np.nan, 4, 6]), grid, np.ones(5, bool)) == 5
    assert increase(np.array([np.nan, 1.0, np.nan, np.nan, np.nan]), grid, np.ones(5, bool)) is None


def test_on_grid_places_each_sample_once_or_with_lookback():
    grid = np.array([0.0, 30, 60, 90, 120, 150])
    ts, vs = np.array([5.0, 20, 61, 150]), np.array([1.0, 2, 3, 4])
    got = on_grid(ts, vs, grid, 30)
    assert np.isnan(got[0]) and got[1] == 2 and np.isnan(got[2]) and got[3] == 3 and np.isnan(got[4]) and got[5] == 4
    prom_like = on_grid(ts, vs, grid, 300)  # query_range's lookback repeats the last sample
    assert prom_like[1:].tolist() == [2, 2, 3, 3, 4]
    assert make_grid(D + 0.4, 3600, 30)[[0, 120, -1]].tolist() == [D - 3600, D, D + 3600]


def test_histogram_quantile_follows_prometheus():
    buckets = [(0.1, 50.0), (0.2, 90.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == 0.2           # in the +Inf bucket: the largest finite bound
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert math.isnan(histogram_quantile(0.5, [(0.1, 5.0), (0.2, 9.0)]))          # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))     # no requests
    assert histogram_quantile(0.5, [(0.1, 6.0), (0.2, 4.0), (math.inf, 10.0)]) == pytest.approx(0.1 * 5 / 6)


def test_change_points_binary_segmentation():
    rng = np.random.default_rng(1)
    x = np.log(np.r_[np.full(120, 40.0), np.full(120, 110.0)] * np.exp(rng.normal(0, 0.05, 240)))
    found = change_points(x)
    assert [c["index"] for c in found] == [120]
    assert math.exp(found[0]["right_median"] - found[0]["left_median"]) == pytest.approx(110 / 40, rel=0.05)
    assert change_points(np.log(np.full(240, 40.0) * np.exp(rng.normal(0, 0.05, 240)))) == []
    assert change_points(np.log(np.full(240, 40.0))) == []  # perfectly flat: the noise floor keeps it quiet
    assert change_points([1.0, 2.0]) == []


def test_promql_escaping():
    assert promql_string('a"b\\c') == '"a\\"b\\\\c"'
    assert promql_string("line\nbreak") == '"line\\nbreak"'
    regex = pod_regex_from_selector("app=my-app,version=v2")
    assert regex == "my\\-app-[a-z0-9]+-[a-z0-9]+"
    queries = promql_selectors(Target("team \"x\"", regex, 'c"\\'), "http_request_duration_seconds")
    assert 'namespace="team \\"x\\""' in queries["containers"]
    assert 'pod=~"my\\\\-app-[a-z0-9]+-[a-z0-9]+"' in queries["containers"]
    assert 'container="c\\"\\\\"' in queries["containers"]
    assert 'exported_pod=~"my\\\\-app-' in queries["gpu"] and " or " in queries["gpu"]
    assert queries["latency"].startswith('{__name__=~"http_request_duration_seconds_bucket|')
    assert 'container!~"|POD"' in promql_selectors(Target(), "lat")["containers"]
    assert pod_regex_from_selector("tier=web") is None
    assert pod_regex_from_selector("app.kubernetes.io/name=textclf") == "textclf-[a-z0-9]+-[a-z0-9]+"


# --- offline evidence on the fixtures -------------------------------------------------------------------------


def test_fixtures_are_small_and_end_with_eof():
    for name in ("throttled", "oom", "healthy"):
        path = FIXTURES / f"{name}.om"
        assert path.stat().st_size < 2_000_000
        assert path.read_bytes().endswith(b"# EOF\n")


def test_offline_throttled():
    e = offline("throttled")
    assert e.ok and e.source == "prometheus"
    d = e.data
    assert d["throttled_ratio"]["before"] == pytest.approx(0.02, abs=0.005)
    assert d["throttled_ratio"]["after"] == pytest.approx(0.40, abs=0.01)
    assert d["throttled_ratio"]["worst_after"]["pod"].startswith("textclf-7d9f8b6c5d-")  # not feature-cache's 60%
    assert d["throttling_high"] is True
    assert d["cpu_usage_cores"]["before"] == pytest.approx(0.6, abs=0.02)
    assert d["cpu_usage_cores"]["after"] == pytest.approx(1.9, abs=0.03)
    assert d["containers_running"] == {"before": 2.0, "after": 2.0}
    assert d["memory_working_set_bytes"]["before"] == pytest.approx(1.10 * 2 ** 30, rel=0.03)
    assert d["memory_working_set_bytes"]["after"] == pytest.approx(1.35 * 2 ** 30, rel=0.03)
    assert d["memory_limit_bytes"] == 2 ** 31
    assert d["memory_headroom_after"] == pytest.approx(1 - 1.35 / 2, abs=0.02)
    assert d["oom_events"] == 0 and d["restarts"] == 0 and d["last_terminated_oomkilled"] == 0
    gpu = d["gpu"]
    assert gpu["gpus"] == 2 and gpu["sm_clock_mhz"] == {"before": 1710, "after": 1710} and gpu["clock_drop_pct"] == 0
    assert gpu["throttle_reasons_after"] == [] and gpu["temp_c_after"] == 61
    lat = d["latency"]
    assert lat["p99_ms"]["before"] == pytest.approx(49, abs=3) and lat["p99_ms"]["after"] == pytest.approx(131, abs=6)
    assert lat["p50_ms"]["before"] == pytest.approx(20, abs=1.5) and lat["p50_ms"]["after"] == pytest.approx(37, abs=2)
    assert lat["requests"]["after"] == pytest.approx(2 * 40 * 3600, rel=0.02)
    cp = lat["change_point"]
    assert cp["at"] == "2026-11-20T10:01:30Z" and cp["lag_s"] == 90 and cp["aligned_with_deploy"] is True
    assert cp["step_pct"] == pytest.approx(168, abs=15) and cp["tolerance_s"] == 600
    assert [c["at"] for c in lat["change_points"]] == ["2026-11-20T10:01:30Z"]
    assert len(lat["timeline"]["t"]) == len(lat["timeline"]["p99_ms"]) >= 230
    assert d["notes"] == [] and d["parse"]["skipped_lines"] == 0
    summary = "\n".join(e.summary)
    assert "CPU throttled in 40% of CFS periods after the deploy (2% before)" in summary
    assert "CPUThrottlingHigh" in summary
    assert "CPU use 1.90 cores per container after the deploy (0.60 before)" in summary
    assert re.search(r"p99 latency 4\d -> 1[23]\d ms", summary)
    assert re.search(r"the p99 jump began at 10:01:30 UTC, 90 s after the deploy \(.*\): within 10 min", summary)
    json.dumps(e.to_dict())  # JSON-able


def test_counter_reset_in_the_fixture_is_handled():
    """Pod q7w9z's counters restart from 0 at 10:30: its after-deploy numbers still match the other pod's."""
    data = read_openmetrics(FIXTURES / "throttled.om")
    grid = make_grid(D, 3600, 30)
    after = (grid > D) & (grid <= D + 3600)
    labels = lambda pod: (("container", "model"), ("namespace", "serving"), ("pod", pod))  # noqa: E731
    for pod in ("textclf-7d9f8b6c5d-q7w9z", "textclf-7d9f8b6c5d-x4k2p"):
        periods = on_grid(*data.series[("container_cpu_cfs_periods_total", labels(pod))], grid, 30)
        throttled = on_grid(*data.series[("container_cpu_cfs_throttled_periods_total", labels(pod))], grid, 30)
        assert increase(periods, grid, after) == pytest.approx(120 * 296, rel=0.01)
        assert increase(throttled, grid, after) / increase(periods, grid, after) == pytest.approx(0.40, abs=0.015)
    ts, vs = data.series[("container_cpu_cfs_periods_total", labels("textclf-7d9f8b6c5d-q7w9z"))]
    assert vs[-1] - vs[0] < 0.6 * 120 * 296  # the naive last - first would undercount


def test_offline_oom():
    e = offline("oom")
    d = e.data
    assert e.ok
    assert d["oom_events"] == 3 and d["restarts"] == 3
    assert d["last_terminated_oomkilled"] == 2 and d["last_terminated_oomkilled_before"] == 0
    assert d["memory_working_set_bytes"]["after"] >= 0.99 * 2 ** 31
    assert d["memory_headroom_after"] < 0.01 and d["memory_limit_bytes"] == 2 ** 31
    assert d["throttling_high"] is False
    cp = d["latency"]["change_point"]
    assert cp["at"] == "2026-11-20T10:12:00Z" and cp["lag_s"] == 720 and cp["aligned_with_deploy"] is False
    summary = "\n".join(e.summary)
    assert "3 OOM events and 3 restarts after the deploy; 2 containers last terminated OOMKilled" in summary
    assert "limit 2.0 GiB, 0.4% headroom (at the limit)" in summary
    assert ("the p99 jump began at 10:12:00 UTC, 12 min after the deploy (49 -> 98 ms, +100%): beyond the 10 min "
            "tolerance, so it did not start with the rollout itself; look at what changed at 10:12:00") in summary
    # with a wider tolerance the same jump lines up with the deploy
    assert offline("oom", tolerance_s=900).data["latency"]["change_point"]["aligned_with_deploy"] is True


def test_offline_healthy():
    e = offline("healthy")
    d = e.data
    assert d["throttled_ratio"]["after"] == pytest.approx(0.03, abs=0.005) and d["throttling_high"] is False
    assert d["latency"]["change_point"] is None and d["latency"]["change_points"] == []
    assert d["latency"]["p99_ms"]["after"] == pytest.approx(d["latency"]["p99_ms"]["before"], rel=0.05)
    assert d["oom_events"] == 0 and d["restarts"] == 0
    assert "no change point in p99 latency around the deploy" in e.summary
    assert "no OOM events and no restarts after the deploy" in e.summary


def test_selection_leaves_out_other_pods_pod_level_series_and_other_resources():
    everything = offline("throttled", pod_regex=None, container=None)  # feature-cache (60% throttled) counts
    assert everything.data["throttled_ratio"]["after"] > offline("throttled").data["throttled_ratio"]["after"] + 0.05
    any_container = offline("throttled", container=None)  # cAdvisor's pod-level container="" stays out
    assert any_container.data["cpu_usage_cores"] == offline("throttled").data["cpu_usage_cores"]
    assert offline("throttled", container="sidecar").data["throttled_ratio"]["after"] is None


def test_window_and_step_are_configurable():
    narrow = offline("throttled", window=600, step_s=60)
    assert narrow.data["windows"]["before"] == ["2026-11-20T09:50:00Z", "2026-11-20T10:00:00Z"]
    assert narrow.data["throttled_ratio"]["after"] == pytest.approx(0.40, abs=0.02)
    assert narrow.data["latency"]["change_point"]["at"] in ("2026-11-20T10:01:00Z", "2026-11-20T10:02:00Z")


def test_missing_series_give_nulls_and_notes(tmp_path):
    path = tmp_path / "only-latency.om"
    lines = ["# TYPE http_request_duration_seconds histogram"]
    for le, per_step in (("0.05", 90), ("+Inf", 100)):
        lines += [f'http_request_duration_seconds_bucket{{pod="textclf-7d9f8b6c5d-x4k2p",le="{le}"}} '
                  f"{i * per_step} {int(D - 3600 + 30 * i)}" for i in range(241)]
    path.write_text(om(*lines, "# EOF"))
    e = read_offline(path, DEPLOYED_AT, pod_regex=POD_REGEX)
    d = e.data
    assert e.ok and d["throttled_ratio"]["after"] is None and d["cpu_usage_cores"]["after"] is None
    assert d["memory_limit_bytes"] is None and d["oom_events"] is None and d["gpu"]["sm_clock_mhz"]["after"] is None
    assert d["latency"]["p50_ms"]["after"] == round(50 * 0.5 / 0.9, 2)  # inside the first bucket, in ms
    notes = "\n".join(d["notes"])
    for name in ("container_cpu_cfs_periods_total", "container_cpu_usage_seconds_total",
                 "container_memory_working_set_bytes", "kube_pod_container_resource_limits", "DCGM"):
        assert name in notes
    assert d["notes"][0] in e.summary


def test_gpu_clock_drop_and_throttle_reasons(tmp_path):
    path = tmp_path / "gpu.om"
    labels = 'gpu="0",UUID="GPU-1",Hostname="node-a",namespace="serving",pod="textclf-7d9f8b6c5d-x4k2p"'
    lines = []
    for name, before, after in (("DCGM_FI_DEV_SM_CLOCK", 1410, 1095), ("DCGM_FI_DEV_GPU_UTIL", 60, 95),
                                ("DCGM_FI_DEV_GPU_TEMP", 70, 86), ("DCGM_FI_DEV_POWER_USAGE", 200, 225.5),
                                ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 0, 0x40 | 0x20)):
        lines.append(f"# TYPE {name} gauge")
        lines += [f"{name}{{{labels}}} {before if t < D else after} {int(t)}" for t in D + 30 * np.arange(-120, 121)]
    path.write_text(om(*lines, "# EOF"))
    e = read_offline(path, DEPLOYED_AT, pod_regex=POD_REGEX, namespace="serving")
    g = e.data["gpu"]
    assert g["sm_clock_mhz"] == {"before": 1410, "after": 1095} and g["clock_drop_pct"] == 22.3
    assert g["util_pct"] == {"before": 60, "after": 95} and g["temp_c_after"] == 86 and g["power_w_after"] == 225.5
    assert g["throttle_reasons_after"] == ["SwThermalSlowdown", "HwThermalSlowdown"]
    assert g["throttle_reason_share_after"] == {"SwThermalSlowdown": 1.0, "HwThermalSlowdown": 1.0}
    assert ("GPU SM clock 1410 -> 1095 MHz (-22%) after the deploy; SW thermal slowdown in 100% of samples, "
            "HW thermal slowdown in 100% of samples; 86 C, 226 W") in e.summary


def test_unavailable_and_bad_arguments(tmp_path):
    path = FIXTURES / "healthy.om"
    assert read_offline(path, None, **OFFLINE).status == "unavailable"
    e = read_offline(path, "not a time", **OFFLINE)
    assert e.status == "unavailable" and "not a time" in e.reason
    e = read_offline(path, DEPLOYED_AT, **{**OFFLINE, "namespace": "elsewhere"})
    assert e.status == "unavailable" and "namespace=elsewhere" in e.reason and "metrics present" in e.reason
    e = read_offline(path, "2026-11-22T10:00:00Z", **OFFLINE)
    assert e.status == "unavailable" and "the series cover 2026-11-20T08:58:00Z .. 2026-11-20T11:02:00Z" in e.reason
    with pytest.raises(UserError, match="pod_regex: pod regex"):
        read_offline(path, DEPLOYED_AT, pod_regex="textclf-(")
    with pytest.raises(UserError, match="latency_metric"):
        read_offline(path, DEPLOYED_AT, latency_metric="http duration")


def test_bad_lines_in_a_fixture_copy_are_reported(tmp_path):
    text = (FIXTURES / "healthy.om").read_text().replace("# TYPE container_cpu_cfs_periods counter\n",
                                                         "# TYPE container_cpu_cfs_periods counter\nnot a sample\n")
    path = tmp_path / "metrics.om"
    path.write_text(text)
    e = read_offline(path, DEPLOYED_AT, **OFFLINE)
    assert e.ok and e.data["parse"]["skipped_lines"] == 1
    assert any(line.startswith("metrics.om: 1 bad line skipped (first: line 3:") for line in e.summary)


# --- live: a real Prometheus serving the backfilled fixtures -------------------------------------------------


def assert_close(live, off, path="data"):
    """Numbers within 1% (or 0.5 absolute, for percentages and medians of repeated samples), the rest equal."""
    if isinstance(off, dict):
        assert isinstance(live, dict) and set(live) == set(off), path
        for key in off:
            assert_close(live[key], off[key], f"{path}.{key}")
    elif isinstance(off, list):
        assert isinstance(live, list) and len(live) == len(off), path
        for i, (a, b) in enumerate(zip(live, off, strict=True)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(off, (int, float)) and not isinstance(off, bool) and off is not None:
        assert live == pytest.approx(off, rel=0.01, abs=0.5), path
    else:
        assert live == off, path


def live_collector(url: str, **kwargs) -> PrometheusCollector:
    return PrometheusCollector.from_deployment(url, DEPLOYMENT, timeout_s=kwargs.pop("timeout_s", 10), **kwargs)


@pytest.mark.parametrize("name", ["throttled", "oom", "healthy"])
def test_live_matches_offline_and_round_trips(prom, api_client, tmp_path, name):
    server = prom(FIXTURES / f"{name}.om")  # promtool accepted the fixture (backfill raises otherwise)
    collector = live_collector(server.url)
    started = time.monotonic()
    live = collector.collect()
    assert time.monotonic() - started < 10
    assert live.ok, live.reason
    assert live.data["origin"] == {"kind": "prometheus", "url": server.url}
    off = read_offline(FIXTURES / f"{name}.om", DEPLOYED_AT, **FROM_DEPLOYMENT)
    assert off.data["target"]["pod_regex"] == POD_REGEX and off.data["pods_from"] == live.data["pods_from"] == "name_guess"
    strip = lambda d: {k: v for k, v in d.items() if k not in ("origin", "parse")}  # noqa: E731
    assert_close(strip(live.data), strip(off.data))
    assert live.data["latency"]["change_point"] == off.data["latency"]["change_point"]
    assert [s for s in live.summary if not s.startswith("GPU")] == [s for s in off.summary if not s.startswith("GPU")]
    # round trip: what the live collection read, saved as metrics.om, reads back to the same evidence
    saved = collector.save(tmp_path)
    assert saved == tmp_path / "metrics.om"
    again = read_offline(saved, DEPLOYED_AT, **FROM_DEPLOYMENT)
    assert strip(again.data) == strip(live.data) and again.summary == live.summary
    backfill(saved, tmp_path / "blocks")  # and promtool takes the saved file


def test_live_escapes_label_values(prom, api_client, tmp_path):
    """A namespace and container with a double quote and a backslash; a pod regex with an escaped '-'."""
    namespace, container = 'team "x"', 'we"ird\\name'
    pod = "my-app-6c4f9d8b7-r5t6v"
    series = {}
    for c, ratio in ((container, 0.5), ('we"ird', 0.1)):  # the second must not be matched by the first
        labels = (("container", c), ("namespace", namespace), ("pod", pod))
        t = D + 30 * np.arange(-121, 122)
        periods = 300.0 * np.arange(len(t))
        series[("container_cpu_cfs_periods_total", labels)] = (t, periods)
        series[("container_cpu_cfs_throttled_periods_total", labels)] = (t, periods * ratio)
    path = save_openmetrics(tmp_path / "escapes.om", series)
    assert 'container="we\\"ird\\\\name"' in path.read_text()
    server = prom(path)
    regex = pod_regex_from_selector("app=my-app")
    collector = PrometheusCollector(server.url, namespace, regex, container, DEPLOYED_AT, timeout_s=10)
    e = collector.collect()
    assert e.ok, e.reason
    assert e.data["throttled_ratio"] == {"before": 0.5, "after": 0.5,
                                         "worst_after": {"pod": pod, "container": container, "ratio": 0.5}}
    assert 'namespace="team \\"x\\""' in collector.queries[0] and 'pod=~"my\\\\-app-' in collector.queries[0]
    offline_e = read_offline(path, DEPLOYED_AT, container, regex, namespace=namespace)
    assert offline_e.data["throttled_ratio"] == e.data["throttled_ratio"]


def test_prometheus_down_is_a_quick_error(api_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    e = live_collector(f"http://127.0.0.1:{port}", timeout_s=TIMEOUT_S).collect()
    assert time.monotonic() - started < 5
    assert e.status == "error" and e.source == "prometheus"
    assert e.reason == f"ConnectionError: cannot reach Prometheus at http://127.0.0.1:{port}: connection refused"


class StubPrometheus:
    """A local HTTP server that answers /api/v1/query_range badly: too slowly, with Prometheus's error JSON,
    with something that is not JSON, or with 503. Handlers that sleep wake up at stop()."""

    def __init__(self, mode: str, delay_s: float = 10.0):
        self.mode, self.delay_s = mode, delay_s
        self.requests: list[dict] = []
        self.wake = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                stub.requests.append({"path": parts.path, **{k: v[0] for k, v in parse_qs(parts.query).items()}})
                if stub.mode == "slow":
                    stub.wake.wait(stub.delay_s)
                    body, status, kind = b'{"status":"success","data":{"resultType":"matrix","result":[]}}', 200, "json"
                elif stub.mode == "error":
                    body = json.dumps({"status": "error", "errorType": "bad_data",
                                       "error": 'invalid parameter "query": 1:9: parse error: unexpected "}"'}).encode()
                    status, kind = 400, "json"
                elif stub.mode == "not-json":
                    body, status, kind = b"<html>login</html>", 200, "html"
                else:
                    body, status, kind = b"Service Unavailable", 503, "text"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", {"json": "application/json", "html": "text/html",
                                                      "text": "text/plain"}[kind])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout) and closed the connection
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.wake.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_slow_prometheus_is_a_timeout_error(api_client):
    with StubPrometheus("slow") as stub:
        started = time.monotonic()
        e = live_collector(stub.url, timeout_s=TIMEOUT_S).collect()
        elapsed = time.monotonic() - started
    assert elapsed < 3  # one call, not retried: about timeout_s
    assert e.status == "error"
    assert e.reason == (f"TimeoutError: no answer from Prometheus at {stub.url} within the 0.5 s timeout "
                        "(timeout_s) to the pod labels query")  # the first call: the pods by their labels
    assert len(stub.requests) == 1 and stub.requests[0]["timeout"] == "0.5"  # Prometheus's own timeout too
    assert stub.requests[0]["path"] == "/api/v1/query_range" and stub.requests[0]["step"] == "30"


def test_error_answer_is_reported_with_prometheus_message(api_client):
    with StubPrometheus("error") as stub:
        e = live_collector(stub.url).collect()
    assert e.status == "error"
    assert e.reason == (f"RuntimeError: Prometheus at {stub.url} refused the pod labels query (400): bad_data: "
                        'invalid parameter "query": 1:9: parse error: unexpected "}"')
    q = stub.requests[0]
    assert int(q["start"]) == D - 3600 and int(q["end"]) == D + 3600
    assert q["query"] == 'kube_pod_labels{namespace="serving"} or kube_pod_labels{exported_namespace="serving"}'
    assert len(stub.requests) == 1  # the first failing call ends the collection


@pytest.mark.parametrize("mode, expected", [("not-json", "is not Prometheus JSON"),
                                            ("unavailable", "(503): Service Unavailable")])
def test_other_bad_answers_are_errors(api_client, mode, expected):
    with StubPrometheus(mode) as stub:
        e = live_collector(stub.url).collect()
    assert e.status == "error" and expected in e.reason
    assert len(stub.requests) == 1  # a 503 is not retried


def test_live_never_raises_and_says_why_not(monkeypatch, api_client):
    assert PrometheusCollector("").collect().status == "unavailable"
    e = PrometheusCollector("http://127.0.0.1:9", "serving", "textclf-(", deployed_at=DEPLOYED_AT).collect()
    assert e.status == "error" and "does not compile" in e.reason
    e = PrometheusCollector("http://127.0.0.1:9", "serving", deployed_at=None).collect()
    assert e.status == "unavailable" and "deployed_at" in e.reason
    e = PrometheusCollector("http://127.0.0.1:9", deployed_at=DEPLOYED_AT, window=86400 * 7, step_s=15).collect()
    assert e.status == "error" and "raise step_s" in e.reason
    monkeypatch.setitem(sys.modules, "prometheus_api_client", None)  # as if not installed
    e = collect_safely(PrometheusCollector("http://127.0.0.1:9", deployed_at=DEPLOYED_AT))
    assert e.status == "unavailable" and "pip install prometheus-api-client" in e.reason


def test_from_deployment_and_injected_client(api_client):
    class Recording:
        def __init__(self):
            self.calls = []

        def custom_query_range(self, query, start_time, end_time, step, params=None, timeout=None):
            self.calls.append((query, step, params, timeout))
            return []

    client = Recording()
    collector = PrometheusCollector.from_deployment("http://prometheus:9090/", DEPLOYMENT, http=client, timeout_s=3)
    assert (collector.url, collector.namespace, collector.pod_regex, collector.container, collector.selector) == (
        "http://prometheus:9090", "serving", None, "model", DEPLOYMENT["selector"])
    e = collector.collect()
    assert e.status == "unavailable" and "no series for namespace=serving" in e.reason
    assert "Prometheus saw no pods in namespace serving" in e.reason
    # pod labels, then (no kube_pod_labels: the names guessed) containers, gpu, latency, then the pods there
    assert [c[1:] for c in client.calls] == [("30", {"timeout": "3"}, 3)] * 5
    queries = [c[0] for c in client.calls]
    assert queries[0].startswith("kube_pod_labels{") and queries[4].startswith("count by (namespace, pod, ")
    assert queries[1].startswith('{__name__=~"container_cpu_cfs_throttled_periods_total|')
    assert 'namespace="serving",pod=~"textclf-[a-z0-9]+-[a-z0-9]+",container="model"' in queries[1]
    assert collector.save("/nonexistent") is None  # nothing read, nothing written


def test_prom_server_skips_without_binaries(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert "prometheus and promtool not installed" in skip_reason()


# --- the pods: by their labels (kube_pod_labels), an explicit regex, or the names guessed ----------------------
# tests/prom_rollouts.py: one file, one namespace per class of case (Deployments named unlike their app label,
# a StatefulSet, kube-state-metrics scraped without honor_labels, kube_pod_labels without the label, none at all)

INTENT_OLD = ["intent-serving-5c6b7d8f9-k2m4p", "intent-serving-5c6b7d8f9-r7t9v"]
INTENT_NEW = ["intent-serving-7d9f8-abcde", "intent-serving-7d9f8-fghij"]
BY_LABELS = [  # namespace, selector, the pods, throttled before, after
    ("ml-prod", "app=intent", INTENT_OLD + INTENT_NEW, 0.02, 0.40),
    ("ml-prod", "app=intent,version=v2", INTENT_OLD + INTENT_NEW, 0.02, 0.40),  # the old ReplicaSet's v1 pods too
    ("search", "app.kubernetes.io/name=ranking", ["ranker-0", "ranker-1"], 0.05, 0.30),
    ("payments", "app=fraud", ["fraud-scorer-5a6b7c-ccccc", "fraud-scorer-6b7c8d-aaaaa"], 0.10, 0.50),
]
BY_LABELS_IDS = ["deployment-unlike-app", "old-replicaset-other-labels", "statefulset-dotted-key", "exported-labels"]


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    return write_rollouts(tmp_path_factory.mktemp("rollouts") / "rollouts.om")


def rollout(path, namespace, selector=None, **kwargs) -> Evidence:
    return read_offline(path, DEPLOYED_AT, container="model", namespace=namespace, selector=selector, **kwargs)


def rollout_live(url, namespace, selector=None, **deployment) -> PrometheusCollector:
    deployment = {"namespace": namespace, "selector": selector, "container": "model", "deployed_at": DEPLOYED_AT,
                  **deployment}
    return PrometheusCollector.from_deployment(url, deployment, timeout_s=10)


def without_origin(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("origin", "parse")}


@pytest.mark.parametrize("namespace, selector, pods, before, after", BY_LABELS, ids=BY_LABELS_IDS)
def test_pods_found_by_their_labels(rollouts, namespace, selector, pods, before, after):
    e = rollout(rollouts, namespace, selector)
    assert e.ok, e.reason
    d = e.data
    assert d["pods_from"] == "kube_pod_labels" and d["pods"] == pods
    assert d["throttled_ratio"]["before"] == pytest.approx(before, abs=0.005)
    assert d["throttled_ratio"]["after"] == pytest.approx(after, abs=0.005)  # not the decoys' 80-90%
    assert d["throttled_ratio"]["worst_after"]["pod"] in pods
    assert f"{len(pods)} pods found by their labels ({selector}) in kube_pod_labels: {', '.join(pods)}" in e.summary
    # the name guessed from the app label misses them all (what the collector did before; in ml-prod it finds the
    # decoy instead)
    guessed = rollout(rollouts, namespace, pod_regex=pod_regex_from_selector(selector) or "no-app-label")
    assert not set(guessed.data["pods"]) & set(pods)


def test_old_replicaset_with_other_labels_is_counted_and_a_decoy_named_like_the_guess_is_not(rollouts):
    e = rollout(rollouts, "ml-prod", "app=intent,version=v2")
    assert e.data["pods"] == INTENT_OLD + INTENT_NEW and "intent-5f6g7-zzzzz" not in e.data["pods"]
    assert any(n.startswith(f"{INTENT_OLD[0]}, {INTENT_OLD[1]}: of the same Deployment") and "earlier ReplicaSet" in n
               for n in e.data["notes"])
    # intent-5f6g7-zzzzz is named as app=intent's guess expects (intent-<hash>-<suffix>) but labelled intent-legacy
    assert rollout(rollouts, "ml-prod", pod_regex=pod_regex_from_selector("app=intent")).data["pods"] == [
        "intent-5f6g7-zzzzz"]
    # set-based terms; a negative one on a label kube-state-metrics does not export is left out, with a note
    e = rollout(rollouts, "ml-prod", "app in (intent, other),track!=canary")
    assert e.data["pods_from"] == "kube_pod_labels" and e.data["pods"] == INTENT_OLD + INTENT_NEW
    assert any("track!=canary not checked" in n and "label_track" in n for n in e.data["notes"])


def test_without_kube_pod_labels_the_names_are_guessed_quietly(rollouts):
    e = rollout(rollouts, "legacy", "app=orders")
    d = e.data
    assert e.ok and d["pods_from"] == "name_guess" and d["pods"] == ["orders-7f8g9h-abcde"]
    assert d["target"]["pod_regex"] == "orders-[a-z0-9]+-[a-z0-9]+"
    assert d["pods_why"] == ("pod names guessed from app=orders (no kube_pod_labels series in namespace legacy "
                             "(kube-state-metrics not scraped?))")
    assert not any("kube_pod_labels" in n for n in d["notes"])  # the usual case without kube-state-metrics
    assert d["throttled_ratio"]["after"] == pytest.approx(0.20, abs=0.005)
    # deployment.name gives the Deployment's own pods: billing-worker-<hash>-<suffix>, not billing-...
    e = rollout(rollouts, "legacy", "app=billing", deployment_name="billing-worker")
    assert e.ok and e.data["pods_from"] == "name_guess" and e.data["pods"] == ["billing-worker-6c7d8e-xxxxx"]
    assert e.data["throttled_ratio"]["after"] == pytest.approx(0.45, abs=0.005)


def test_kube_pod_labels_without_the_label_falls_back_and_says_why(rollouts):
    """kube-state-metrics v2 exports only allow-listed labels: kube_pod_labels is there, label_app is not."""
    e = rollout(rollouts, "checkout", "app=cart", deployment_name="cart-api")
    d = e.data
    assert e.ok and d["pods_from"] == "name_guess"
    assert d["pods"] == ["cart-api-4d5e6f-qqqqq", "cart-api-8g9h7k-wwwww"]
    why = ("pod names guessed from deployment cart-api and app=cart (kube_pod_labels in namespace checkout has no "
           "label_app: kube-state-metrics exports only the pod labels allow-listed with "
           "--metric-labels-allowlist=pods=[app])")
    assert d["pods_why"] == why and why in d["notes"] and why in e.summary
    assert d["throttled_ratio"] == {"before": 0.03, "after": 0.35,
                                    "worst_after": {"pod": "cart-api-8g9h7k-wwwww", "container": "model", "ratio": 0.35}}


def test_an_explicit_pod_regex_wins(rollouts):
    e = rollout(rollouts, "ml-prod", "app=intent", pod_regex="intent-serving-7d9f8-.*")
    d = e.data
    assert e.ok and d["pods_from"] == "pod_regex" and d["pods"] == INTENT_NEW  # kube_pod_labels would add the old
    assert d["target"]["pod_regex"] == "intent-serving-7d9f8-.*" and d["pods_why"] == "deployment.pod_regex given"
    assert d["throttled_ratio"]["before"] is None and d["throttled_ratio"]["after"] == pytest.approx(0.40, abs=0.005)
    assert not any("found by their labels" in line for line in e.summary)


def test_nothing_matches_lists_the_pods_seen_and_how_to_select_them(rollouts):
    e = rollout(rollouts, "legacy", "app=billing")
    assert e.status == "unavailable"
    assert e.reason.startswith("no series for namespace=legacy, pod=~billing-[a-z0-9]+-[a-z0-9]+, container=model in ")
    assert ("; pod names guessed from app=billing (no kube_pod_labels series in namespace legacy (kube-state-metrics "
            "not scraped?)); Prometheus saw 2 pods in namespace legacy: billing-worker-6c7d8e-xxxxx, "
            "orders-7f8g9h-abcde; select them with deployment.pod_regex in the manifest (e.g. deployment.pod_regex: "
            "'billing-worker-[a-z0-9]+-[a-z0-9]+'), or have kube-state-metrics export the selector's labels "
            "(--metric-labels-allowlist=pods=[app])") in e.reason
    assert e.data["pods_seen"] == ["billing-worker-6c7d8e-xxxxx", "orders-7f8g9h-abcde"]
    assert e.data["pods_from"] == "name_guess" and e.data["pods"] == []
    # the hint works as given
    fixed = rollout(rollouts, "legacy", "app=billing", pod_regex="billing-worker-[a-z0-9]+-[a-z0-9]+")
    assert fixed.ok and fixed.data["pods"] == ["billing-worker-6c7d8e-xxxxx"]
    # kube_pod_labels without the label: the pods seen come from it, and the reason says why it could not select
    e = rollout(rollouts, "checkout", "app=cart")
    assert e.status == "unavailable" and "kube_pod_labels in namespace checkout has no label_app" in e.reason
    assert ("Prometheus saw 2 pods in namespace checkout: cart-api-4d5e6f-qqqqq, cart-api-8g9h7k-wwwww; select them "
            "with deployment.pod_regex in the manifest (e.g. deployment.pod_regex: 'cart-api-[a-z0-9]+-[a-z0-9]+')"
            ) in e.reason
    # labels exported, but no pod has them
    e = rollout(rollouts, "ml-prod", "app=nothing")
    assert e.status == "unavailable" and "no pod in kube_pod_labels in namespace ml-prod has app=nothing" in e.reason
    assert "Prometheus saw 5 pods in namespace ml-prod: intent-5f6g7-zzzzz, intent-serving-" in e.reason
    assert "--metric-labels-allowlist" not in e.reason  # the labels are exported: not the fix here
    assert "Prometheus saw no pods in namespace elsewhere" in rollout(rollouts, "elsewhere", "app=intent").reason


def test_pods_seen_are_cut_at_ten_and_selectors_and_label_names_follow_kubernetes():
    seen = [f"web-{i}" for i in range(12)]
    reason = no_match_reason(None, seen, "serving")
    assert "Prometheus saw 12 pods in namespace serving: web-0, web-1" in reason and "web-9 and 2 more;" in reason
    assert "deployment.pod_regex" in reason and listed(["a", "b"]) == "a, b"
    assert label_name("app.kubernetes.io/name") == "label_app_kubernetes_io_name"
    assert label_name("k8s-app") == "label_k8s_app" and label_name("appVersion") == "label_app_version"
    reqs = parse_selector("app=intent, tier in (web,api),!canary,env==prod,version!=v1,track")
    assert [(r.key, r.op, r.values) for r in reqs] == [
        ("app", "=", ("intent",)), ("tier", "in", ("web", "api")), ("canary", "!exists", ()),
        ("env", "=", ("prod",)), ("version", "!=", ("v1",)), ("track", "exists", ())]
    assert parse_selector("") == [] and parse_selector(None) == [] and parse_selector("app in (a,b") is None


@pytest.mark.parametrize("namespace, selector, pods, before, after", BY_LABELS, ids=BY_LABELS_IDS)
def test_live_pods_found_by_their_labels(prom, api_client, rollouts, tmp_path, namespace, selector, pods, before,
                                         after):
    server = prom(rollouts)
    collector = rollout_live(server.url, namespace, selector)
    e = collector.collect()
    assert e.ok, e.reason
    assert e.data["pods_from"] == "kube_pod_labels" and e.data["pods"] == pods
    assert collector.queries[0] == (f'kube_pod_labels{{namespace="{namespace}"}} or '
                                    f'kube_pod_labels{{exported_namespace="{namespace}"}}')
    assert all(pod.replace(".", "\\.") in collector.queries[1] for pod in pods)  # the pods, by name
    off = rollout(rollouts, namespace, selector)
    assert_close(without_origin(e.data), without_origin(off.data))
    assert e.summary == off.summary
    # what was read (kube_pod_labels too) reads back to the same evidence
    again = rollout(collector.save(tmp_path), namespace, selector)
    assert without_origin(again.data) == without_origin(e.data) and again.summary == e.summary


def test_live_fallbacks_explicit_regex_and_nothing_matching(prom, api_client, rollouts):
    server = prom(rollouts)
    cases = [("checkout", "app=cart", {"name": "cart-api"}), ("legacy", "app=orders", {}),
             ("ml-prod", "app=intent", {"pod_regex": "intent-serving-7d9f8-.*"})]
    for namespace, selector, extra in cases:
        live = rollout_live(server.url, namespace, selector, **extra).collect()
        off = rollout(rollouts, namespace, selector, pod_regex=extra.get("pod_regex"),
                      deployment_name=extra.get("name"))
        assert live.ok, live.reason
        assert_close(without_origin(live.data), without_origin(off.data))
        assert live.summary == off.summary
    assert live.data["pods_from"] == "pod_regex" and live.data["pods"] == INTENT_NEW
    explicit = rollout_live(server.url, "ml-prod", "app=intent", pod_regex="intent-serving-7d9f8-.*")
    explicit.collect()
    assert not any("kube_pod_labels{" in q for q in explicit.queries)  # the regex is used as given
    # nothing matches: the reason lists what Prometheus holds in the namespace (an extra query without
    # kube_pod_labels there), as from the file
    for namespace, selector in (("legacy", "app=billing"), ("checkout", "app=cart")):
        collector = rollout_live(server.url, namespace, selector)
        live = collector.collect()
        off = rollout(rollouts, namespace, selector)
        assert live.status == off.status == "unavailable"
        # the same but for the metrics present: live, only those of the selection were read
        assert live.reason.partition("(metrics present: ")[0].replace(server.url, "FILE") == off.reason.partition(
            "(metrics present: ")[0].replace(str(rollouts), "FILE")
        assert live.reason.partition("); ")[2] == off.reason.partition("); ")[2]
        assert "Prometheus saw 2 pods in namespace" in live.reason and "deployment.pod_regex: '" in live.reason
        assert live.data["pods_seen"] == off.data["pods_seen"] and len(off.data["pods_seen"]) == 2
    assert collector.queries[-1].startswith("{__name__=~")  # checkout: kube_pod_labels listed the pods
    assert rollout_live(server.url, "legacy", "app=billing").collect().data["pods_seen"] == [
        "billing-worker-6c7d8e-xxxxx", "orders-7f8g9h-abcde"]


def test_a_restarted_containers_instances_are_all_read():
    """cAdvisor starts a new series (new `id` and `name`) for each container instance: the peak that ended in an OOM
    kill is in the old instance's series, the OOM event in its counter; neither is lost to the new instance's."""
    from collectors.prometheus_evidence import prometheus_evidence
    from collectors.prometheus_selection import Target

    t = D + 30 * np.arange(-122, 123, dtype=float)
    kill = D + 1200

    def labels(instance: str, **extra) -> tuple:
        return tuple(sorted({"namespace": "shop", "pod": "cart-7f9c-abcde", "container": "model",
                             "id": f"/kubepods/burstable/pod1/{instance}", "name": instance, **extra}.items()))

    first, second = t <= kill, t > kill
    climb = np.linspace(1.0, 2.0, first.sum()) * 2 ** 30
    series = {
        ("container_memory_working_set_bytes", labels("c1")): (t[first], climb),
        ("container_memory_working_set_bytes", labels("c2")): (t[second], np.full(second.sum(), 0.5 * 2 ** 30)),
        ("container_oom_events_total", labels("c1")): (t[first], np.where(t[first] >= kill, 1.0, 0.0)),
        ("container_oom_events_total", labels("c2")): (t[second], np.zeros(second.sum())),
        ("kube_pod_container_resource_limits", tuple(sorted({"namespace": "shop", "pod": "cart-7f9c-abcde",
                                                             "container": "model", "resource": "memory"}.items()))):
            (t, np.full(len(t), 2.0 * 2 ** 30)),
    }
    data = prometheus_evidence(series, "2026-11-20T10:00:00Z",
                               target=Target(namespace="shop", pod_regex="cart-.+", container="model")).data
    assert data["memory_working_set_bytes"]["after"] == 2 ** 31  # the old instance's peak, not the new one's
    assert data["memory_headroom_after"] == 0 and data["oom_events"] == 1
