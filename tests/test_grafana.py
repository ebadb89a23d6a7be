"""`diagnose grafana`: the dashboard's JSON model, and every query it holds run against a real Prometheus.

The run folders here hold the evidence the real Prometheus collector made from recorded series (the textclf rollout
of fixtures/signals/prometheus/, and serving systems in their own metric names, written with
tests/test_serving_metrics.py's writers), saved through RunFolder as a compare saves it. A real Prometheus
(tests/prom_server.py) serves the same series. Each dashboard is checked as Grafana's JSON model (schemaVersion,
unique panel ids, a grid without overlaps, data source, targets, variables, annotations; Grafana's own builder
library reads it back), and each PromQL target is sent to Prometheus's query_range with the template variables
substituted the way Grafana substitutes them (backslashes doubled, quotes escaped per its version) over the run's
window: it must parse and return data, and the figures it returns must be the run's (throttling 2% -> 40%, the
p99 jump, Triton's queue growing while compute stays, TorchServe's compute as total less queue). A namespace and
container holding quotes and backslashes reach Prometheus exactly, beside a decoy container they must not match.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_manifest
from prom_server import prometheus_servers
from test_prometheus import DEPLOYED_AT, DEPLOYMENT, FIXTURES, D
from test_serving_metrics import (
    NEW_POD,
    POD_REGEX,
    TIMES,
    Writer,
    add_histogram,
    add_summary,
    torchserve,
    triton_counters,
)

from collectors.openmetrics import read_openmetrics
from collectors.prometheus import Target, prometheus_evidence, read_offline
from diagnose.core.runfolder import RunFolder
from reports.grafana_dashboard import VARIABLES, label_regex, quote_free

ROOT = Path(__file__).resolve().parent.parent
RATE_INTERVAL = "2m"  # what Grafana's $__rate_interval comes to on 30 s samples at a 1 min step
HOSTILE_NS, HOSTILE_CONTAINER, DECOY = 'team "x"', 'we"ird\\name', 'we"ird'
HOSTILE_PODS = "model\\-[a-z0-9]+\\-[a-z0-9]+"  # re.escape's "\\-" must reach Prometheus intact


def write_servers(path: Path) -> Path:
    """Serving systems in their own names (Triton's counters in a rollout, Triton's summaries, TorchServe with a
    counter reset, vLLM found by its names, a user's histogram in ms), and a namespace and container with quotes
    and backslashes beside a decoy container."""
    w = Writer()
    triton_counters(w, "triton", rollout=True)
    triton_counters(w, "triton-summary", rollout=False)
    for name, steady in (("nv_inference_request_summary_us", False), ("nv_inference_queue_summary_us", False),
                         ("nv_inference_compute_infer_summary_us", True)):
        add_summary(w, "triton-summary", name, {"model": "textclf", "version": "1"}, 1e6, steady=steady)
    torchserve(w, "torchserve")
    vllm = {"model_name": "meta-llama/Llama-3.1-8B-Instruct"}
    add_histogram(w, "vllm", "vllm:e2e_request_latency_seconds", vllm, 1)
    add_histogram(w, "vllm", "vllm:request_queue_time_seconds", vllm, 1)
    add_histogram(w, "vllm", "vllm:request_inference_time_seconds", vllm, 1, steady=True)
    add_histogram(w, "custom", "myapp_predict_latency_ms", {"route": "/predict"}, 1000)
    # the kubelet's probes and Prometheus's scrapes stay fast beside /predict: left out, as the evidence leaves them
    add_histogram(w, "probes", "http_request_duration_seconds", {"method": "POST", "handler": "/predict"}, 1)
    for route in ("/healthz", "/metrics", "/v2/health/ready"):
        add_histogram(w, "probes", "http_request_duration_seconds", {"method": "GET", "handler": route}, 1, steady=True)
    quoted_ns = HOSTILE_NS.replace('"', '\\"')  # as OpenMetrics writes it
    add_histogram(w, quoted_ns, "http_request_duration_seconds", {"handler": "/predict"}, 1, rollout=False)
    for container, ratio in ((HOSTILE_CONTAINER, 0.5), (DECOY, 0.1)):  # the decoy must not be matched
        labels = {"container": container.replace("\\", "\\\\").replace('"', '\\"'), "namespace": quoted_ns,
                  "pod": NEW_POD}
        periods = [(t, 300.0 * i) for i, t in enumerate(TIMES)]
        w.add("container_cpu_cfs_periods", "counter", "container_cpu_cfs_periods_total", labels, periods)
        w.add("container_cpu_cfs_throttled_periods", "counter", "container_cpu_cfs_throttled_periods_total", labels,
              [(t, v * ratio) for t, v in periods])
    path.write_text(w.text())
    return path


# (case, namespace, target pod regex, container, the latency figure's target legend -> (before, after) in the
# series' unit, read as the panel shows it)
SERVERS = {
    "triton": ("triton", POD_REGEX, None),
    "triton-summary": ("triton-summary", POD_REGEX, None),
    "torchserve": ("torchserve", POD_REGEX, None),
    "vllm": ("vllm", POD_REGEX, None),
    "custom": ("custom", POD_REGEX, None),
    "probes": ("probes", POD_REGEX, None),
    "hostile": (HOSTILE_NS, HOSTILE_PODS, HOSTILE_CONTAINER),
}


def save_run(folder: Path, evidence, deployment: dict | None = None) -> Path:
    """A run folder holding what a compare's signals and load stages write for the dashboard."""
    run = RunFolder.create(folder)
    run.write_run({"model": "textclf", "old": "v1", "new": "v2", "command": ["diagnose", "compare"]})
    run.write_evidence("prometheus", evidence)
    run.write_evidence("versions", {"old": {}, "new": {"deployment": deployment}})
    run.finish()
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders: `throttled` and `oom` from the fixtures, one per serving system of `write_servers`."""
    root = tmp_path_factory.mktemp("grafana-runs")
    servers = write_servers(root / "servers.om")
    out = {"servers_om": servers}
    for name in ("throttled", "oom"):
        e = read_offline(FIXTURES / f"{name}.om", DEPLOYED_AT, container="model", namespace="serving",
                         selector=DEPLOYMENT["selector"])
        out[name] = save_run(root / name, e, DEPLOYMENT)
    series = read_openmetrics(servers).series
    for case, (namespace, pods, container) in SERVERS.items():
        e = prometheus_evidence(series, DEPLOYED_AT, target=Target(namespace, pods, container),
                                latency_metric="myapp_predict_latency_ms" if case == "custom" else None)
        assert e.ok, e.reason
        out[case] = save_run(root / case, e, {"namespace": namespace, "pod_regex": pods, "deployed_at": DEPLOYED_AT})
    return out


def grafana(*args: str) -> dict:
    result = run_cli("grafana", *args)
    assert result.returncode == 0, result.stderr
    return result


def dashboard_of(run: Path, *args: str) -> dict:
    result = grafana(str(run), *args)
    path = run / RunFolder.GRAFANA
    assert result.stdout.startswith(f"grafana: {path} (")
    return json.loads(path.read_text())


# --- Grafana's substitution of template variables into PromQL --------------------------------------------------


def grafana_escape(value: str, special_chars_toggle: bool) -> str:
    """What Grafana's Prometheus data source does to a single-valued variable before it lands in the query
    (interpolateQueryExpr -> prometheusRegularEscape): backslashes doubled; then, classically, a single quote
    becomes \\\\', or, with the prometheusSpecialCharsInLabelValues toggle, a double quote becomes \\"."""
    value = value.replace("\\", "\\\\")
    return value.replace('"', '\\"') if special_chars_toggle else value.replace("'", "\\\\'")


def substitute(expr: str, variables: dict[str, str], special_chars_toggle: bool = False) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name == "__rate_interval":
            return RATE_INTERVAL
        assert name in variables, f"{expr} uses ${name}, which the dashboard does not define"
        return grafana_escape(variables[name], special_chars_toggle)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def variables_of(dashboard: dict) -> dict[str, str]:
    return {v["name"]: v["current"]["value"] for v in dashboard["templating"]["list"] if v["type"] == "textbox"}


def query_range(url: str, expr: str, start: float = D - 3600, end: float = D + 3600, step: int = 60) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode()[:500]}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]


def targets(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def values(result: list[dict], since: float, until: float) -> list[float]:
    return [float(v) for series in result for t, v in series["values"] if since <= t < until and math.isfinite(float(v))]


def every_target_returns_data(url: str, dashboard: dict) -> dict[tuple[str, str], list[dict]]:
    """Each target, substituted as Grafana substitutes it under either escaping, parses in Prometheus and returns
    finite samples over the run's window; {(panel title, legend): result}."""
    variables = variables_of(dashboard)
    found = {}
    for panel, target in targets(dashboard):
        expr = substitute(target["expr"], variables)
        assert expr == substitute(target["expr"], variables, special_chars_toggle=True)
        result = query_range(url, expr)
        assert values(result, D - 3600, D + 3601), f"{panel['title']}: {target['legendFormat']}: no data for {expr}"
        found[(panel["title"], target["legendFormat"])] = result
    return found


# --- the JSON model --------------------------------------------------------------------------------------------


def check_model(d: dict) -> None:
    """Grafana's JSON model: what its import needs and what its panels and variables must hold."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard
    from grafana_foundation_sdk.models.prometheus import Dataquery
    from grafana_foundation_sdk.models.timeseries import Options

    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 39
    assert d["title"].startswith("diagnose: ") and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert "id" not in d or d["id"] is None  # a new dashboard on import
    ids = [p["id"] for p in d["panels"]]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(ids) == len(set(ids))
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        cell = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not cell & cells, f"panel {p['title']} overlaps another"
        cells |= cell
        if p["type"] == "timeseries":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)) and all(t["expr"] and t["range"] for t in p["targets"])
            assert p["fieldConfig"]["defaults"]["unit"]
    templating = {v["name"]: v for v in d["templating"]["list"]}
    assert templating["datasource"]["type"] == "datasource" and templating["datasource"]["query"] == "prometheus"
    for name in VARIABLES:
        v = templating[name]
        assert v["type"] == "textbox" and not v["multi"] and not v["includeAll"]
        assert v["query"] == v["current"]["value"] and not set(v["query"]) & {'"', "'", "\n"}
    used = {m for _, t in targets(d) for m in re.findall(r"\$\{?(\w+)", t["expr"])}
    assert used <= set(templating) | {"__rate_interval"}
    annotations = d["annotations"]["list"]
    assert annotations[0]["builtIn"] == 1 and annotations[0]["datasource"]["uid"] == "-- Grafana --"
    for a in annotations[1:]:
        assert a["datasource"]["uid"] == "${datasource}" and a["useValueForTime"] is True
        assert re.fullmatch(r"vector\(\d{13}\)", a["expr"]) and a["titleFormat"] and a["enable"]
    assert d["time"]["from"] and d["time"]["to"]
    # Grafana's own builder library reads it back into its dashboard model: every panel, its options, its targets
    register_default_plugins()
    model = Dashboard.from_json(d)
    assert len(model.panels) == len(d["panels"])
    queries = [t for p in model.panels for t in (getattr(p, "targets", None) or [])]
    assert all(isinstance(q, Dataquery) for q in queries) and [q.expr for q in queries] == [t["expr"] for _, t in targets(d)]
    assert all(isinstance(p.options, Options) for p in model.panels if p.type_val == "timeseries")


def annotation_times(url: str, d: dict) -> dict[str, float]:
    """Each Prometheus annotation's time, as Grafana reads it: the value of its query's samples (ms)."""
    out = {}
    for a in d["annotations"]["list"][1:]:
        result = query_range(url, a["expr"], D - 600, D + 600)
        stamps = {float(v) for series in result for _, v in series["values"]}
        assert len(stamps) == 1, a
        out[a["name"]] = stamps.pop() / 1000
    return out


def panel(d: dict, title_start: str) -> dict:
    return next(p for p in d["panels"] if p["title"].startswith(title_start))


# --- tests -------------------------------------------------------------------------------------------------------


def test_throttled_run_dashboard_shows_what_the_run_found(runs, prom):
    d = dashboard_of(runs["throttled"])
    check_model(d)
    titles = [p["title"] for p in d["panels"]]
    assert titles == ["What the run found", "Production latency (HTTP)", "Request latency (http_request_duration_seconds)",
                      "Requests per second", "Containers (cAdvisor, kube-state-metrics)",
                      "CPU throttling (CFS throttled periods / periods)", "CPU used (cores)",
                      "Memory working set against the limit", "OOM events and restarts", "GPU (DCGM)",
                      "GPU SM clock (DCGM)", "GPU throttle reasons (DCGM, 1 = active)"]
    assert variables_of(d) == {"namespace": "serving", "pod": "textclf-[a-z0-9]+-[a-z0-9]+", "container": "model"}
    assert d["time"] == {"from": "2026-11-20T09:00:00.000Z", "to": "2026-11-20T11:00:00.000Z"}
    assert "CPU throttled in 40% of CFS periods" in panel(d, "What the run found")["options"]["content"]

    url = prom(FIXTURES / "throttled.om", runs["servers_om"]).url
    assert annotation_times(url, d) == {"deploy: textclf v2": D, "change point: p99 +168%": D + 90}
    found = every_target_returns_data(url, d)
    ratio = found[("CPU throttling (CFS throttled periods / periods)", "all pods")]
    assert statistics.mean(values(ratio, D - 3000, D - 300)) == pytest.approx(0.02, abs=0.005)
    assert statistics.mean(values(ratio, D + 600, D + 3600)) == pytest.approx(0.40, abs=0.02)
    per_pod = found[("CPU throttling (CFS throttled periods / periods)", "{{pod}}")]
    assert {s["metric"]["pod"] for s in per_pod} == {"textclf-5b8c9d7f4-m2n8p", "textclf-5b8c9d7f4-t6v3w",
                                                     "textclf-7d9f8b6c5d-q7w9z", "textclf-7d9f8b6c5d-x4k2p"}
    p99 = found[("Request latency (http_request_duration_seconds)", "p99")]
    assert statistics.median(values(p99, D - 3000, D - 300)) * 1000 == pytest.approx(49.1, rel=0.1)
    assert statistics.median(values(p99, D + 600, D + 3600)) * 1000 == pytest.approx(131.0, rel=0.1)
    limit = found[("Memory working set against the limit", "memory limit")]
    assert set(values(limit, D - 3600, D + 3600)) == {2 ** 31}
    clocks = found[("GPU SM clock (DCGM)", "{{Hostname}} GPU {{gpu}}")]
    assert statistics.median(values(clocks, D, D + 3600)) == 1710


def test_a_run_folder_written_before_the_latency_named_its_server(runs, tmp_path):
    """fixtures/runs/textclf-v1-vs-v2 (format 1) recorded the throttled rollout before the evidence named the serving
    preset: the metric's name finds it, and the dashboard's queries are today's run's."""
    out = tmp_path / "old.json"
    grafana(str(ROOT / "fixtures" / "runs" / "textclf-v1-vs-v2"), "--out", str(out))
    old, new = json.loads(out.read_text()), dashboard_of(runs["throttled"])
    check_model(old)
    assert [(p["title"], t["expr"]) for p, t in targets(old)] == [(p["title"], t["expr"]) for p, t in targets(new)]


def test_oom_run_charts_the_kills_and_restarts(runs, tmp_path_factory):
    d = dashboard_of(runs["oom"])
    check_model(d)
    events = panel(d, "OOM events and restarts")
    assert [t["legendFormat"] for t in events["targets"]] == ["{{pod}} OOM events", "{{pod}} restarts",
                                                              "{{pod}} last terminated OOMKilled"]
    with prometheus_servers_started(tmp_path_factory, FIXTURES / "oom.om") as url:
        found = every_target_returns_data(url, d)
        assert annotation_times(url, d)["change point: p99 +100%"] == D + 720  # 10:12, the first OOM kill
    restarts = found[("OOM events and restarts", "{{pod}} restarts")]
    assert {s["metric"]["pod"] for s in restarts if max(values([s], D, D + 3600)) > 0} == \
        {"textclf-7d9f8b6c5d-x4k2p", "textclf-7d9f8b6c5d-q7w9z"}
    killed = found[("OOM events and restarts", "{{pod}} last terminated OOMKilled")]
    assert max(values(killed, D, D + 3600)) == 1


class prometheus_servers_started:
    """A Prometheus of its own for one file (the oom recording reuses the throttled one's series names and pods)."""

    def __init__(self, tmp_path_factory, *files):
        self.gen = prometheus_servers(tmp_path_factory)
        self.files = files

    def __enter__(self) -> str:
        return next(self.gen)(*self.files).url

    def __exit__(self, *exc) -> None:
        self.gen.close()


# (case, panel -> legend -> (before, after) medians in the panel's unit)
FIGURES = {
    "triton": ("Triton", "µs", {("Request latency (nv_inference_request_duration_us / nv_inference_request_success)",
                                 "average"): (12100, 30500),
                                ("Queue against compute", "queue average (nv_inference_queue_duration_us)"): (1000, 19200),
                                ("Queue against compute", "compute average (nv_inference_compute_infer_duration_us)"):
                                    (11000, 11200)}),
    "triton-summary": ("Triton", "µs", {("Request latency (nv_inference_request_summary_us)", "p99"): (9950, 49700),
                                        ("Queue against compute", "queue p99 (nv_inference_queue_summary_us)"):
                                            (9950, 49700),
                                        ("Queue against compute", "compute p99 (nv_inference_compute_infer_summary_us)"):
                                            (9950, 9950)}),
    "torchserve": ("TorchServe", "µs", {
        ("Queue against compute", "queue average (ts_queue_latency_microseconds)"): (1000, 22000),
        ("Queue against compute", "compute average (ts_inference_latency_microseconds - ts_queue_latency_microseconds)"):
            (2000, 2000)}),
    "vllm": ("vllm:e2e_request_latency_seconds", "s", {
        ("Request latency (vllm:e2e_request_latency_seconds)", "p99"): (0.00995, 0.0497),
        ("Queue against compute", "queue p99 (vllm:request_queue_time_seconds)"): (0.00995, 0.0497),
        ("Queue against compute", "compute p99 (vllm:request_inference_time_seconds)"): (0.00995, 0.00995)}),
    "custom": ("myapp_predict_latency_ms", "ms", {("Request latency (myapp_predict_latency_ms)", "p99"): (9.95, 49.7)}),
    "probes": ("HTTP", "s", {("Request latency (http_request_duration_seconds)", "p50"): (0.0075, 0.035),
                             ("Request latency (http_request_duration_seconds)", "p99"): (0.00995, 0.0497)}),
}


@pytest.mark.parametrize("case", sorted(FIGURES))
def test_other_serving_systems_in_their_own_metric_names(runs, prom, case):
    """Counters (average), summaries, a total less its queue, a discovered server and a user's metric: each
    dashboard reads the names the run found, and its figures are the run's."""
    server, unit, figures = FIGURES[case]
    d = dashboard_of(runs[case])
    check_model(d)
    latency = [p for p in d["panels"] if p["title"].startswith(("Request latency", "Queue against compute"))]
    assert panel(d, "Production latency")["title"] == f"Production latency ({server})"
    assert all(p["fieldConfig"]["defaults"]["unit"] == unit for p in latency)
    assert variables_of(d)["namespace"] == case and variables_of(d)["container"] == ".+"
    found = every_target_returns_data(prom(FIXTURES / "throttled.om", runs["servers_om"]).url, d)
    for key, (before, after) in figures.items():
        assert statistics.median(values(found[key], D - 3000, D - 300)) == pytest.approx(before, rel=0.03), key
        assert statistics.median(values(found[key], D + 600, D + 3000)) == pytest.approx(after, rel=0.03), key
    first = panel(d, "Request latency")["targets"][0]["expr"]
    if case == "custom":  # a user's metric of unknown kind reads its histogram or its summary, whichever exists
        assert " or avg(myapp_predict_latency_ms{" in first
    assert ('handler!~"(?i)(?:.*/)?(?:health|' in first) == (case == "probes")  # probes only where the run saw them



def _without_key(value, key: str):
    if isinstance(value, dict):
        return {k: _without_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_without_key(v, key) for v in value]
    return value


def test_the_probe_routes_left_out_come_from_the_evidence_and_older_folders_note(runs, tmp_path):
    """The evidence lists the routes it left out (`left_out_routes`); a folder written before that key says so in a
    note only, and gets the same queries. A run whose evidence left none out gets no route matcher."""
    import shutil

    probes = json.loads((runs["probes"] / "evidence" / "prometheus.json").read_text())
    assert sorted(probes["data"]["latency"]["left_out_routes"]) == ["/healthz", "/metrics", "/v2/health/ready"]
    older = shutil.copytree(runs["probes"], tmp_path / "older")
    evidence = older / "evidence" / "prometheus.json"
    evidence.write_text(json.dumps(_without_key(probes, "left_out_routes")))
    expr = [t["expr"] for _, t in targets(dashboard_of(runs["probes"]))]
    assert [t["expr"] for _, t in targets(dashboard_of(older))] == expr and any("handler!~" in e for e in expr)
    plain = json.loads((runs["vllm"] / "evidence" / "prometheus.json").read_text())
    assert plain["data"]["latency"]["left_out_routes"] == []
    assert not any("!~" in t["expr"] for _, t in targets(dashboard_of(runs["vllm"])))

def test_hostile_label_values_reach_prometheus_exactly(runs, prom):
    d = dashboard_of(runs["hostile"])
    check_model(d)
    variables = variables_of(d)
    assert variables["namespace"] == "team \\x22x\\x22" and variables["container"] == "we\\x22ird\\\\name"
    found = every_target_returns_data(prom(FIXTURES / "throttled.om", runs["servers_om"]).url, d)
    ratio = found[("CPU throttling (CFS throttled periods / periods)", "all pods")]
    assert set(np.round(values(ratio, D - 3600, D + 3600), 6)) == {0.5}  # the decoy container's 0.1 left out
    p99 = found[("Request latency (http_request_duration_seconds)", "p99")]
    assert statistics.median(values(p99, D + 600, D + 3000)) == pytest.approx(0.0497, rel=0.03)
    # the PromQL Grafana sends holds the values as Prometheus string escapes of RE2 escapes, under either escaping
    expr = substitute(panel(d, "CPU throttling")["targets"][0]["expr"], variables)
    assert 'namespace=~"team \\\\x22x\\\\x22"' in expr and 'container=~"we\\\\x22ird\\\\\\\\name"' in expr


@pytest.mark.parametrize("value", ['team "x"', "o'brien", "a\\b", "a.b*c+(d)|[e]{f}^$", "line\nbreak", "tab\there",
                                   "ünïcode-ß", ""])
def test_label_regex_matches_exactly_the_value(value):
    regex = label_regex(value)
    assert not set(regex) & {'"', "'", "\n", "\t"}
    assert re.fullmatch(regex, value) and not re.fullmatch(regex, value + "x")
    if value:
        assert not re.fullmatch(regex, "x" + value[1:]) or value[0] == "x"


def test_a_pod_regex_keeps_its_meaning_without_quotes():
    for regex, matches, misses in (('pod-"a"-[0-9]+', ['pod-"a"-12'], ["pod-a-12"]),
                                   ('x\\"y', ['x"y'], ['x\\"y']), ("(?:a'b|c)", ["a'b", "c"], ["ab"]),
                                   ("[\"']q", ['"q', "'q"], ["q"])):
        free = quote_free(regex)
        assert not set(free) & {'"', "'"}
        assert all(re.fullmatch(free, m) for m in matches) and not any(re.fullmatch(free, m) for m in misses)


def test_a_run_without_prometheus_evidence_gets_the_standard_panels(runs, tmp_path):
    folder = save_run(tmp_path / "run", {"status": "unavailable", "source": "prometheus",
                                         "reason": "no Prometheus URL given (--prometheus) and no --signals"},
                      DEPLOYMENT)
    d = dashboard_of(folder)
    check_model(d)
    assert variables_of(d) == {"namespace": "serving", "pod": "textclf-[a-z0-9]+-[a-z0-9]+", "container": "model"}
    text = panel(d, "What the run found")["options"]["content"]
    assert "no Prometheus evidence in this run \\(no Prometheus URL given" in text
    assert "production latency left out" in text
    assert not any(p["title"].startswith("Request latency") for p in d["panels"])
    assert [a["name"] for a in d["annotations"]["list"][1:]] == ["deploy: textclf v2"]
    # with a serving preset named, its latency panels come too
    d = dashboard_of(folder, "--server", "triton")
    assert panel(d, "Production latency")["title"] == "Production latency (Triton)"


def test_a_deployment_from_the_registry(tmp_path, tmp_path_factory):
    registry = tmp_path / "models"
    write_manifest(registry / "textclf" / "v2", deployment=DEPLOYMENT)
    (registry / "textclf" / "v2" / "model.pt").write_bytes(b"")  # the manifest names an artifact; nothing loads it
    out = tmp_path / "textclf-v2.json"
    result = grafana("--registry", str(registry), "--model", "textclf", "--version", "v2", "--server", "http",
                     "--out", str(out))
    assert result.stdout == f"grafana: {out} (8 panels; import it in Grafana: Dashboards > New > Import)\n"
    d = json.loads(out.read_text())
    check_model(d)
    assert d["title"] == "diagnose: textclf v2" and d["time"]["from"] == "2026-11-20T09:00:00.000Z"
    with prometheus_servers_started(tmp_path_factory, FIXTURES / "oom.om") as url:
        every_target_returns_data(url, d)  # the standard names, all recorded by the oom rollout
        assert annotation_times(url, d) == {"deploy: textclf v2": D}
    default = grafana("--registry", str(registry), "--version", "v2", "--out", "-")
    assert json.loads(default.stdout)["uid"] == d["uid"]


@pytest.mark.parametrize("argv, message", [
    ([], "give a run folder (RUN_DIR) or a registry version (--version V)"),
    (["RUN", "--version", "v9"], "give a run folder (RUN_DIR) or a registry version (--version V), one of them"),
    (["RUN", "--server", "nope"], "--server: unknown serving preset 'nope'; choose from triton_summary, triton,"),
    (["RUN", "--latency-metric", "not a name"], "--latency-metric: 'not a name' is not a Prometheus metric name"),
    (["MISSING"], "run folder not found"),
    (["EMPTY"], "no Prometheus evidence (stage skipped) and no deployment in the new version's manifest"),
    (["RUN", "--out", "RUN"], "--out names a folder"),
    (["--version", "v9", "--registry", "MODELS"], "has no deployment section"),
])
def test_bad_input_is_one_line(tmp_path, argv, message):
    run = save_run(tmp_path / "run", {"status": "unavailable", "source": "prometheus", "reason": "x"}, DEPLOYMENT)
    empty = RunFolder.create(tmp_path / "empty")
    empty.write_run({"model": "m", "old": "a", "new": "b"})
    write_manifest(tmp_path / "models" / "m" / "v9")
    (tmp_path / "models" / "m" / "v9" / "model.pt").write_bytes(b"")
    names = {"RUN": str(run), "MISSING": str(tmp_path / "nowhere"), "EMPTY": str(tmp_path / "empty"),
             "MODELS": str(tmp_path / "models")}
    result = run_cli("grafana", *[names.get(a, a) for a in argv])
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_help_has_an_example():
    result = run_cli("grafana", "--help")
    assert result.returncode == 0 and "examples:\n  diagnose grafana runs/" in result.stdout
