"""`diagnose grafana`: a Grafana dashboard of the series behind a diagnosis, for a run folder or a deployment.

From a run folder, the panels are those whose series the run's Prometheus evidence found (evidence/prometheus.json),
in the names it found them under: the serving system's own latency metric (any preset of
collectors/serving_metrics.py, a user's `latency_metric`, or one discovered by its name), its queue and compute
stages, and the cAdvisor, kube-state-metrics and DCGM series that were there; the deploy time and the change point
become annotations, and the evidence's namespace, pods and container the variables' defaults. Without Prometheus
evidence (no `--prometheus`, no metrics.om) the run's deployment (evidence/versions.json) still gives the
containers' and GPU's panels under their standard names, with a note; nothing to select (no namespace and no pods)
is one line, exit 2. For a registry version (`--version`), the manifest's `deployment` section is the selection and
`--server` or the deployment's `latency_metric` the latency. reports/grafana_dashboard.py renders the spec made here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

from collectors.gpu_readings import REASON_BITS
from collectors.prometheus_groups import PROBE_WORDS, ROUTE_LABELS
from collectors.prometheus_pods import name_guess
from collectors.serving_metrics import PRESETS, unit_to_ms
from diagnose.core.errors import UserError, first_line
from diagnose.core.runfolder import RunFolder, write_text
from diagnose.core.times import parse_time
from diagnose.registry import resolve_registry
from reports import grafana_dashboard as g
from reports.grafana_dashboard import COUNTERS, QUANTILES, DashboardSpec, Event, Latency, LatencySeries, build

SDK_REQUIREMENT = "grafana-foundation-sdk==1769699379!11.6.0"
WINDOW = timedelta(hours=1)  # the span either side of the deploy shown when the run has no windows of its own
STANDARD_REASONS = ("SwPowerCap", "HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown")
NOT_THROTTLING = ("GpuIdle", "ApplicationsClocksSetting")  # set on a healthy GPU; gpu_evidence leaves them out too
STAGES = ("queue", "compute", "preprocess", "postprocess")


def _unit(to_ms: float) -> str:
    return next(unit for ms, unit in g.UNITS.items() if math.isclose(ms, to_ms, rel_tol=1e-9))


def _preset(name: str):
    found = next((p for p in PRESETS if p.name == name), None)
    if found is None:
        raise UserError(f"unknown serving preset {name!r}; choose from {', '.join(p.name for p in PRESETS)}",
                        key="--server")
    return found


def _from_preset(preset, present: set[str] | None = None):
    """The Latency of a serving preset: its total and the stages it splits out (those in `present`, when given)."""
    unit = _unit(preset.to_ms)
    total = LatencySeries(preset.kind, preset.metric, unit, preset.count)
    parts = tuple((role, LatencySeries(preset.kind, metric, unit, preset.count)) for role, metric in preset.parts
                  if present is None or role in present)
    return Latency(preset.label, total, parts, compute_from_queue=preset.name == "torchserve" and
                   any(role == "queue" for role, _ in parts))


def _user_metric(metric: str):
    """A metric of the user's whose kind is not known: a histogram or summary (p99 and p50 from whichever exists)."""
    return Latency(metric, LatencySeries(QUANTILES, metric, _unit(unit_to_ms(metric)[0])))


def _probe_exclusion(latency: dict, notes: list[str]) -> dict:
    """The route labels and RE2 regex that leave out health-check and scrape routes, when the evidence left them
    out (its `left_out_routes`; a run folder from before that key says so in a note only); a matcher on a label a
    series lacks keeps the series."""
    left_out = latency["left_out_routes"] if "left_out_routes" in latency else \
        any(note.startswith("left out the latency series of") for note in notes)
    if not left_out:
        return {}
    return {"probe_routes": ROUTE_LABELS, "probe_regex": f"(?i)(?:.*/)?(?:{'|'.join(PROBE_WORDS)})(?:[/?].*)?"}


def latency_from_evidence(latency: dict, notes: list[str]):
    """The Latency the evidence read: a preset's (by its `server`, else its metric), a user's or discovered metric
    (its kind from the statistic: counters give an average; quantiles come from a histogram or summary), with the
    stages the evidence found. None when the evidence found no latency."""
    metric = latency.get("metric")
    if not metric or (latency.get("server") is None and not any((latency.get(k) or {}).get("after") is not None
                                                               for k in ("p99_ms", "p50_ms", "avg_ms"))):
        return None
    present = {role for role in STAGES if isinstance(latency.get(role), dict)}
    preset = next((p for p in PRESETS if p.name == latency.get("server")), None) or \
        next((p for p in PRESETS if p.metric == metric and latency.get("server") is None), None)
    if preset is not None:
        found = _from_preset(preset, present)
        return Latency(found.server, found.total, found.parts, found.compute_from_queue, **_probe_exclusion(latency, notes))
    name = latency.get("server_label") or metric
    if latency.get("statistic") == "average":  # a user's <name>_sum over <name>_count
        base = metric[: -len("_sum")] if metric.endswith("_sum") else metric
        total = LatencySeries(COUNTERS, metric, _unit(unit_to_ms(base)[0]), f"{base}_count")
    else:
        total = LatencySeries(QUANTILES, metric, _unit(unit_to_ms(metric)[0]))
    parts = tuple((role, LatencySeries(total.kind, latency[role]["metric"], total.unit, total.count))
                  for role in STAGES if role in present)
    return Latency(name, total, parts, **_probe_exclusion(latency, notes))


def _containers_found(data: dict) -> frozenset[str]:
    """Which container series the evidence had: a figure it computed means its series were there."""
    def seen(value) -> bool:
        return value is not None and (not isinstance(value, dict) or any(v is not None for v in value.values()))

    found = {g.THROTTLING: seen(data.get("throttled_ratio")), g.CPU: seen(data.get("cpu_usage_cores")),
             g.MEMORY: seen(data.get("memory_working_set_bytes")), g.MEMORY_LIMIT: seen(data.get("memory_limit_bytes")),
             g.OOM: seen(data.get("oom_events")), g.RESTARTS: seen(data.get("restarts")),
             g.OOMKILLED: bool(data.get("last_terminated_oomkilled") or data.get("last_terminated_oomkilled_before"))}
    return frozenset(k for k, v in found.items() if v)


def _reasons(seen=()) -> tuple[tuple[str, int], ...]:
    """(name, bit) of the standard slowdown reasons and any other the evidence saw, in bit order."""
    wanted = set(STANDARD_REASONS) | {r for r in seen if r not in NOT_THROTTLING}
    return tuple((name, bit) for bit, name in sorted(REASON_BITS.items()) if name in wanted)


def _clock(t: datetime) -> str:
    return t.strftime("%H:%M:%S UTC")


def _events(deployed_at: datetime | None, change_point: dict | None, what: str) -> tuple:
    events = []
    if deployed_at is not None:
        events.append(Event(deployed_at, f"deploy: {what}", f"deployed at {_clock(deployed_at)} (deployment.deployed_at)"))
    at = parse_time((change_point or {}).get("at"))
    if at is not None:
        stat = change_point.get("statistic") or "p99"
        step = change_point.get("step_pct")
        text = f"{stat} latency {change_point.get('before_ms')} -> {change_point.get('after_ms')} ms from {_clock(at)}"
        if change_point.get("lag_s") is not None:
            text += f", {change_point['lag_s']:.0f} s after the deploy"
        events.append(Event(at, f"change point: {stat} {step:+.0f}%" if step is not None else f"change point: {stat}",
                            text))
    return tuple(events)


def _uid(*parts: str) -> str:
    return "diagnose-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _selection(deployment: dict, where, key: str = "deployment"):
    """(namespace, pod regex, container) of a deployment mapping: its pod_regex, else the pods named after its
    Deployment or app label (collectors/prometheus_pods.py); a UserError when it selects nothing."""
    namespace = deployment.get("namespace") or None
    name = deployment.get("name") if isinstance(deployment.get("name"), str) else None
    pod_regex = deployment.get("pod_regex") or name_guess(deployment.get("selector"), name)
    if namespace is None and pod_regex is None:
        raise UserError("selects no pods: give deployment.namespace and a selector, a name or a pod_regex", where, key)
    return namespace, pod_regex, deployment.get("container") or None


def _standard_spec(title: str, uid: str, deployment: dict, where, what: str, latency, notes: list[str]):
    """The spec from a deployment alone: the standard cAdvisor, kube-state-metrics and DCGM names."""
    namespace, pod_regex, container = _selection(deployment, where)
    deployed_at = parse_time(deployment.get("deployed_at"))
    if latency is None:
        notes.append("production latency left out: the serving system's metric is not known here; pass --server "
                     "(a serving preset) or --latency-metric, or set deployment.latency_metric")
    span = (deployed_at - WINDOW, deployed_at + WINDOW) if deployed_at else None
    return DashboardSpec(title, uid, namespace, pod_regex, container, latency, g.CONTAINER_PANELS, True, _reasons(),
                         _events(deployed_at, None, what), span, tuple(notes))


def _chosen_latency(server: str | None, latency_metric: str | None):
    if server:
        return _from_preset(_preset(server))
    return _user_metric(latency_metric) if latency_metric else None


def spec_for_run(folder: RunFolder, server: str | None = None, latency_metric: str | None = None):
    """The dashboard of a run folder, from its Prometheus evidence (else its deployment)."""
    if not folder.path.is_dir():
        raise UserError("run folder not found", folder.path)
    run = folder.run()
    model, old, new = run["model"], run["old"], run["new"]
    title, uid, what = f"diagnose: {model} {old} -> {new}", _uid(model, old, new, folder.path.resolve().name), f"{model} {new}"
    prometheus = folder.evidence("prometheus")
    chosen = _chosen_latency(server, latency_metric)
    if prometheus.get("status") != "ok":
        versions = folder.evidence("versions")
        deployment = ((versions.get("new") or {}) if isinstance(versions, dict) else {}).get("deployment") or {}
        if not deployment:
            raise UserError(f"no Prometheus evidence ({prometheus.get('reason') or prometheus.get('status')}) and no "
                            "deployment in the new version's manifest: nothing to chart; rerun the compare with "
                            "--prometheus URL or --signals DIR holding metrics.om", folder.evidence_path("prometheus"))
        why = prometheus.get("reason") or prometheus.get("status") or "missing"
        notes = [f"no Prometheus evidence in this run ({why}): the panels use the standard cAdvisor, "
                 "kube-state-metrics and DCGM names for the manifest's deployment; some may show no data"]
        if chosen is None and deployment.get("latency_metric"):
            chosen = _user_metric(deployment["latency_metric"])
        return _standard_spec(title, uid, deployment, folder.evidence_path("versions"), what, chosen, notes)
    data = prometheus.get("data") or {}
    target = data.get("target") or {}
    evidence_notes = [str(n) for n in data.get("notes") or []]
    latency = chosen or latency_from_evidence(data.get("latency") or {}, evidence_notes)
    gpu = data.get("gpu") or {}
    shares = gpu.get("throttle_reason_share_after")  # {reason: share}
    deployed_at = parse_time(data.get("deployed_at"))
    windows = data.get("windows") or {}
    span = (parse_time((windows.get("before") or [None])[0]), parse_time((windows.get("after") or [None, None])[1]))
    if None in span:
        span = (deployed_at - WINDOW, deployed_at + WINDOW) if deployed_at else None
    notes = [str(line) for line in prometheus.get("summary") or []] + evidence_notes
    if data.get("pods_why"):
        notes.append(f"pods: {data['pods_why']}")
    if latency is None:
        notes.append("production latency left out: the run found no serving latency series (pass --server or "
                     "--latency-metric to chart one)")
    reasons = _reasons(shares) if shares is not None else ()  # None: no reasons mask was recorded
    events = _events(deployed_at, (data.get("latency") or {}).get("change_point"), what)
    return DashboardSpec(title, uid, target.get("namespace"), target.get("pod_regex"), target.get("container"), latency,
                         _containers_found(data), bool(gpu.get("gpus")), reasons, events, span, tuple(notes))


def spec_for_version(manifest, server: str | None = None, latency_metric: str | None = None):
    """The dashboard of a registry version's deployment (its manifest's `deployment` section)."""
    deployment = manifest.deployment or {}
    if not deployment:
        raise UserError("has no deployment section (namespace, selector, container, deployed_at): nothing to chart",
                        manifest.path, "deployment")
    latency = _chosen_latency(server, latency_metric or deployment.get("latency_metric"))
    what = f"{manifest.name} {manifest.version}"
    return _standard_spec(f"diagnose: {what}", _uid(manifest.name, manifest.version), deployment, manifest.path,
                          what, latency, [])


def render(spec) -> str:
    """The dashboard JSON text; one line naming the missing package when Grafana's builder library is absent."""
    try:
        dashboard = build(spec)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("grafana_foundation_sdk"):
            raise
        raise UserError(f"needs Grafana's builder library: pip install '{SDK_REQUIREMENT}'", key="diagnose grafana") \
            from None
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def grafana_command(run_dir: Path | None, version: str | None, model: str | None, registry: str | None,
                    server: str | None, latency_metric: str | None, out: str | None) -> str:
    """Write the dashboard (RUN_DIR/grafana.json, grafana-<model>-<version>.json, --out FILE, or - for standard
    output) and return what to print."""
    if (run_dir is None) == (version is None):
        raise UserError("give a run folder (RUN_DIR) or a registry version (--version V), one of them", key="grafana")
    if run_dir is not None:
        folder = RunFolder(run_dir)
        spec = spec_for_run(folder, server, latency_metric)
        default = folder.file(RunFolder.GRAFANA)
    else:
        reg = resolve_registry(registry)
        manifest = reg.manifest(model or reg.default_model(), version)
        spec = spec_for_version(manifest, server, latency_metric)
        default = Path(re.sub(r"[^A-Za-z0-9._-]+", "_", f"grafana-{manifest.name}-{manifest.version}") + ".json")
    text = render(spec)
    if out == "-":
        return text
    path = Path(out) if out else default
    if path.is_dir():
        raise UserError("--out names a folder; give a file name, e.g. grafana.json", path)
    try:
        write_text(path, text)
    except OSError as exc:
        raise UserError(f"--out: cannot write: {first_line(exc)}", path) from None
    panels = sum(1 for p in json.loads(text)["panels"] if p.get("type") != "row")
    return f"grafana: {path} ({panels} panels; import it in Grafana: Dashboards > New > Import)\n"
