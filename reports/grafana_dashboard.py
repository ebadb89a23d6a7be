"""A Grafana dashboard (Grafana's JSON model) of the Prometheus series that carried a diagnosis.

The on-call engineer who read "CPU throttled in 40% of CFS periods after the deploy" wants the same series on the
team's Grafana, on the real traffic, with the deploy and the latency jump marked. `build(spec)` turns a
`DashboardSpec` (what the run found: the serving system's latency metric and kind, which container and GPU series
exist, the deploy time, the change point) into the dashboard's JSON, built with Grafana's own builder library
(grafana-foundation-sdk), so field names and shapes follow Grafana's JSON model (schemaVersion 41).

Every query selects the deployment through three textbox variables, `$namespace`, `$pod` and `$container`, each an
RE2 regex used with `=~`, so the user can point the dashboard at another namespace or pod set. Grafana substitutes
a single-valued variable into PromQL with its backslashes doubled (and, depending on its version and feature
toggles, single or double quotes escaped), so a variable's default holds no quote character at all: a `"` is
written `\\x22` and a `'` `\\x27` (RE2 escapes), which reads the same under either escaping and matches the label
value exactly (`label_regex`, `quote_free`). The annotations (the deploy, the change point) are Prometheus
annotation queries whose value is the event's time (`vector(<unix ms>)` with "series value as timestamp"), so they
appear at that instant whatever the panel's step; the builder library has no field for that option or for the
annotation's title and text, so those keys are added to its output.

This module renders only: it knows Grafana's model and PromQL, not where the spec came from (diagnose/grafana.py
reads a run folder or a manifest into it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

HISTOGRAM, SUMMARY, COUNTERS = "histogram", "summary", "counters"
QUANTILES = "quantiles"  # a histogram or a summary, not known which: the query reads whichever exists
RATE = "$__rate_interval"
VARIABLES = ("namespace", "pod", "container")  # the textbox variables every query selects with
THROTTLING_HIGH = 0.25  # kubernetes-mixin's CPUThrottlingHigh threshold
DCGM_REASONS = ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")  # before / since 535
UNITS = {0.000001: "ns", 0.001: "µs", 1.0: "ms", 1000.0: "s"}  # milliseconds per unit -> Grafana's unit id
_RE2_META = set("*+?()|\\.[]{}^$")
_QUOTES = {'"': "\\x22", "'": "\\x27", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
PANEL_H, PANEL_W = 8, 12
MEMORY_RESOURCE, OOMKILLED_REASON = ',resource="memory"', ',reason="OOMKilled"'


@dataclass(frozen=True)
class LatencySeries:
    """One latency series as the serving system exports it: `kind` (HISTOGRAM: `<metric>_bucket`; SUMMARY:
    `<metric>{quantile=...}`; COUNTERS: a time counter `metric` over a request counter `count`; QUANTILES: a
    histogram or summary), and the Grafana unit of its values."""

    kind: str
    metric: str
    unit: str
    count: str | None = None


@dataclass(frozen=True)
class Latency:
    """The serving system's request latency (`total`) and the stages it splits out (`parts`: role -> series);
    `compute_from_queue`: compute is the total less the queue (TorchServe's inference latency includes it)."""

    server: str
    total: LatencySeries
    parts: tuple[tuple[str, LatencySeries], ...] = ()
    compute_from_queue: bool = False
    probe_routes: tuple[str, ...] = ()  # route labels whose health-check and scrape routes are left out
    probe_regex: str = ""


@dataclass(frozen=True)
class Event:
    """An annotation: a moment (aware datetime), its title and text."""

    at: datetime
    title: str
    text: str = ""


@dataclass(frozen=True)
class DashboardSpec:
    """What to chart. `namespace`, `pod_regex`, `container`: the variables' defaults, as label values / regexes
    (None: any). `containers`: the container series found, of CONTAINER_PANELS' keys. `gpu`: DCGM series found;
    `gpu_reasons`: (name, bit) of the throttle reasons to chart (empty: no reasons series). `notes`: lines for the
    dashboard's text panel (what the run found, what is missing)."""

    title: str
    uid: str
    namespace: str | None = None
    pod_regex: str | None = None
    container: str | None = None
    latency: Latency | None = None
    containers: frozenset[str] = frozenset()
    gpu: bool = False
    gpu_reasons: tuple[tuple[str, int], ...] = ()
    events: tuple[Event, ...] = ()  # the deploy first, then the change point(s)
    time_range: tuple[datetime, datetime] | None = None
    notes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ("diagnose",)


# the container series a run may have found, each a panel's target (diagnose/grafana.py says which exist)
THROTTLING, CPU, MEMORY, MEMORY_LIMIT, OOM, RESTARTS, OOMKILLED = (
    "throttling", "cpu", "memory", "memory_limit", "oom_events", "restarts", "oomkilled")
CONTAINER_PANELS = frozenset({THROTTLING, CPU, MEMORY, MEMORY_LIMIT, OOM, RESTARTS, OOMKILLED})


def label_regex(value: str) -> str:
    """An RE2 regex that matches exactly `value` (fully anchored, as PromQL's `=~`), with no quote character in it:
    RE2's metacharacters escaped, quotes and control characters as RE2 escapes (`\\x22`)."""
    out = []
    for ch in value:
        if ch in _RE2_META:
            out.append("\\" + ch)
        elif ch in _QUOTES:
            out.append(_QUOTES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def quote_free(regex: str) -> str:
    """The same RE2 regex with its quote and control characters written as escapes (`"` and `\\"` both as
    `\\x22`), so Grafana's interpolation cannot break the PromQL string it lands in."""
    out, i = [], 0
    while i < len(regex):
        ch = regex[i]
        if ch == "\\" and i + 1 < len(regex):
            nxt = regex[i + 1]
            out.append(_QUOTES.get(nxt) or (f"\\x{ord(nxt):02x}" if ord(nxt) < 0x20 else "\\" + nxt))
            i += 2
            continue
        out.append(_QUOTES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch))
        i += 1
    return "".join(out)


def variable_defaults(spec: DashboardSpec) -> dict[str, str]:
    """The textbox variables' defaults: the deployment's namespace and container as exact regexes, its pod regex;
    `.*` (namespace, pod) or `.+` (container: never cAdvisor's pod-level "" series) for any."""
    return {
        "namespace": label_regex(spec.namespace) if spec.namespace is not None else ".*",
        "pod": quote_free(spec.pod_regex) if spec.pod_regex is not None else ".*",
        "container": label_regex(spec.container) if spec.container is not None else ".+",
    }


# --- PromQL ---------------------------------------------------------------------------------------------------


def _pods(extra: str = "", exported: bool = False) -> str:
    prefix = "exported_" if exported else ""
    return f'{prefix}namespace=~"$namespace",{prefix}pod=~"$pod"' + extra


def _containers(extra: str = "") -> str:
    return "{" + _pods(',container=~"$container",container!="POD"' + extra) + "}"


def _latency_selector(latency: Latency, extra: str = "") -> str:
    probes = "".join(f',{label}!~"{latency.probe_regex}"' for label in latency.probe_routes)
    return "{" + _pods(probes + extra) + "}"


def _dcgm(name: str) -> str:
    """A DCGM series of the deployment's pods: dcgm-exporter names the pod holding the GPU as `pod`, or as
    `exported_pod` when Prometheus scraped it without honor_labels."""
    return f"({name}{{{_pods()}}} or {name}{{{_pods(exported=True)}}})"


def _quantile(series: LatencySeries, q: float, latency: Latency) -> str:
    bucket = f"histogram_quantile({q:g}, sum by (le) (rate({series.metric}_bucket{_latency_selector(latency)}[{RATE}])))"
    quantile = ',quantile="' + f'{q:g}"'
    summary = f"avg({series.metric}{_latency_selector(latency, quantile)})"
    if series.kind == HISTOGRAM:
        return bucket
    if series.kind == SUMMARY:
        return summary
    return f"{bucket} or {summary}"


def _average(series: LatencySeries, latency: Latency, count: str | None = None) -> str:
    """Time spent over requests served, per second of each step: the counters' average."""
    sel = _latency_selector(latency)
    if series.kind == COUNTERS:
        return f"sum(rate({series.metric}{sel}[{RATE}])) / sum(rate({count or series.count}{sel}[{RATE}]))"
    return f"sum(rate({series.metric}_sum{sel}[{RATE}])) / sum(rate({series.metric}_count{sel}[{RATE}]))"


def _requests(latency: Latency) -> str:
    total = latency.total
    name = total.count if total.kind == COUNTERS else f"{total.metric}_count"
    return f"sum(rate({name}{_latency_selector(latency)}[{RATE}]))"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    threshold: float | None = None
    max_value: float | None = None


def latency_panels(latency: Latency) -> list[PanelSpec]:
    """The latency (p99 and p50, or the average), the stages against each other, and the request rate."""
    total = latency.total
    name = total.metric if total.kind != COUNTERS else f"{total.metric} / {total.count}"
    if total.kind == COUNTERS:
        head = [Target(_average(total, latency), "average")]
        what = f"average latency per request from {latency.server}'s counters {name}"
    else:
        head = [Target(_quantile(total, 0.99, latency), "p99"), Target(_quantile(total, 0.5, latency), "p50")]
        what = f"p99 and p50 latency from {latency.server}'s {name}"
    panels = [PanelSpec(f"Request latency ({name})", what + ", the deployment's pods together", total.unit,
                        tuple(head))]
    if latency.parts:
        stat = "average" if total.kind == COUNTERS else "p99"
        targets = [Target(head[0].expr, f"request {stat} ({total.metric})")]
        for role, part in latency.parts:
            expr = (_average(part, latency, total.count) if part.kind == COUNTERS else _quantile(part, 0.99, latency))
            targets.append(Target(expr, f"{role} {stat} ({part.metric})"))
        if latency.compute_from_queue:
            queue = dict(latency.parts)["queue"]
            sel = _latency_selector(latency)
            expr = (f"(sum(rate({total.metric}{sel}[{RATE}])) - sum(rate({queue.metric}{sel}[{RATE}]))) / "
                    f"sum(rate({total.count}{sel}[{RATE}]))")
            targets.append(Target(expr, f"compute {stat} ({total.metric} - {queue.metric})"))
        panels.append(PanelSpec(
            "Queue against compute", "Where a request's time goes: queue growth with steady compute points at "
            "capacity or contention (too few replicas, a batcher's delay); compute growth at the model, the runtime "
            "or the GPU", total.unit, tuple(targets)))
    panels.append(PanelSpec("Requests per second", "requests served per second, the deployment's pods together",
                            "reqps", (Target(_requests(latency), "requests/s"),)))
    return panels


def container_panels(found: frozenset[str]) -> list[PanelSpec]:
    """cAdvisor's and kube-state-metrics' series: CFS throttling, CPU, memory against the limit, OOM kills and
    restarts (only those in `found`)."""
    panels = []
    if THROTTLING in found:
        throttled = f"rate(container_cpu_cfs_throttled_periods_total{_containers()}[{RATE}])"
        periods = f"rate(container_cpu_cfs_periods_total{_containers()}[{RATE}])"
        panels.append(PanelSpec(
            "CPU throttling (CFS throttled periods / periods)",
            "Share of CFS periods in which the containers hit their CPU quota; above 25% kubernetes-mixin's "
            "CPUThrottlingHigh fires, and latency rises in steps of the CFS period", "percentunit",
            (Target(f"sum({throttled}) / sum({periods})", "all pods"),
             Target(f"sum by (pod) ({throttled}) / sum by (pod) ({periods})", "{{pod}}")),
            threshold=THROTTLING_HIGH, max_value=1.0))
    if CPU in found:
        panels.append(PanelSpec(
            "CPU used (cores)", "CPU seconds per second, per pod", "short",
            (Target(f"sum by (pod) (rate(container_cpu_usage_seconds_total{_containers()}[{RATE}]))", "{{pod}}"),)))
    if MEMORY in found:
        targets = [Target(f"max by (pod) (container_memory_working_set_bytes{_containers()})", "{{pod}} working set")]
        if MEMORY_LIMIT in found:
            targets.append(Target(f"min(kube_pod_container_resource_limits{_containers(MEMORY_RESOURCE)})",
                                  "memory limit"))
        panels.append(PanelSpec("Memory working set against the limit",
                                "The working set the OOM killer judges, per pod, against the containers' limit",
                                "bytes", tuple(targets)))
    events = []
    if OOM in found:
        events.append(Target(f"sum by (pod) (increase(container_oom_events_total{_containers()}[{RATE}]))",
                             "{{pod}} OOM events"))
    if RESTARTS in found:
        events.append(Target(f"sum by (pod) (increase(kube_pod_container_status_restarts_total{_containers()}[{RATE}]))",
                             "{{pod}} restarts"))
    if OOMKILLED in found:
        events.append(Target("max by (pod) (kube_pod_container_status_last_terminated_reason"
                             f"{_containers(OOMKILLED_REASON)})", "{{pod}} last terminated OOMKilled"))
    if events:
        panels.append(PanelSpec("OOM events and restarts", "OOM kills and container restarts per step, per pod",
                                "short", tuple(events)))
    return panels


def gpu_panels(reasons: tuple[tuple[str, int], ...]) -> list[PanelSpec]:
    """DCGM: the SM clock per GPU, and which clock-event (throttle) reasons are set."""
    panels = [PanelSpec("GPU SM clock (DCGM)", "SM clock per GPU; a drop after the deploy with a throttle reason set "
                        "slows every kernel", "rotmhz",
                        (Target(f"max by (Hostname, gpu) ({_dcgm('DCGM_FI_DEV_SM_CLOCK')})", "{{Hostname}} GPU {{gpu}}"),))]
    if reasons:
        mask = "(" + " or ".join(_dcgm(name) for name in DCGM_REASONS) + ")"
        targets = tuple(Target(f"max by (Hostname, gpu) (floor({mask} / {bit}) % 2)", f"{name} {{{{Hostname}}}} GPU {{{{gpu}}}}")
                        for name, bit in reasons)
        panels.append(PanelSpec("GPU throttle reasons (DCGM, 1 = active)",
                                "Each clock-event reason bit of DCGM's throttle-reasons mask (NVML's constants)",
                                "short", targets, max_value=1.0))
    return panels


def annotation_expr(at: datetime) -> str:
    """A PromQL expression whose every sample is `at` in Unix milliseconds: with "series value as timestamp" it is
    one annotation at that instant, whatever the query's step."""
    return f"vector({int(round(at.timestamp() * 1000))})"


# --- the dashboard ----------------------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _markdown(lines) -> str:
    escape = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+!|~$"})
    return "\n".join(f"- {line.translate(escape)}" for line in lines)


def build(spec: DashboardSpec) -> dict:
    """The dashboard as Grafana's JSON model (a dict), ready for json.dumps and Grafana's import."""
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard, prometheus, text, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models import text as text_model

    datasource = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = dashboard.Dashboard(spec.title).uid(spec.uid).tags(list(spec.tags)).timezone("utc").editable()
    if spec.time_range:
        board = board.time(_iso(spec.time_range[0]), _iso(spec.time_range[1]))
    else:
        board = board.time("now-6h", "now")
    board = board.with_variable(dashboard.DatasourceVariable("datasource").type("prometheus").label("Prometheus"))
    for name, value in variable_defaults(spec).items():
        board = board.with_variable(
            dashboard.TextBoxVariable(name).label(f"{name} (regex)").default_value(value)
            .current(model.VariableOption(text=value, value=value))
            .description(f"RE2 regex of the {name} label, matched with =~ by every query"))

    builtin = model.DataSourceRef(type_val="grafana", uid="-- Grafana --")
    board = board.annotation(dashboard.AnnotationQuery().name("Annotations & Alerts").datasource(builtin)
                             .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard").built_in(1))
    colors = ("blue", "red", "orange", "purple")
    for i, event in enumerate(spec.events):
        board = board.annotation(dashboard.AnnotationQuery().name(event.title).datasource(datasource).enable(True)
                                 .icon_color(colors[min(i, len(colors) - 1)]).expr(annotation_expr(event.at)))

    legend = (common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
              .placement(common.LegendPlacement.BOTTOM).show_legend(True))
    tooltip = common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
    next_id, y = 1, 0

    def add_row(title: str) -> None:
        nonlocal board, next_id, y
        board = board.with_row(dashboard.Row(title).id(next_id).grid_pos(model.GridPos(h=1, w=24, x=0, y=y)))
        next_id, y = next_id + 1, y + 1

    def add_panels(panels: list[PanelSpec]) -> None:
        nonlocal board, next_id, y
        for i, p in enumerate(panels):
            panel = (timeseries.Panel().id(next_id).title(p.title).description(p.description).unit(p.unit)
                     .datasource(datasource).legend(legend).tooltip(tooltip)
                     .grid_pos(model.GridPos(h=PANEL_H, w=PANEL_W, x=PANEL_W * (i % 2), y=y + PANEL_H * (i // 2))))
            for ref, target in enumerate(p.targets):
                panel = panel.with_target(prometheus.Dataquery().expr(target.expr).legend_format(target.legend)
                                          .ref_id(chr(ord("A") + ref)).range().datasource(datasource))
            if p.max_value is not None:
                panel = panel.min(0).max(p.max_value)
            if p.threshold is not None:
                steps = [model.Threshold(color="green", value=None), model.Threshold(color="red", value=p.threshold)]
                panel = (panel.thresholds(dashboard.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
                         .thresholds_style(common_builders.GraphThresholdsStyleConfig()
                                           .mode(common.GraphThresholdsStyleMode.LINE)))
            board = board.with_panel(panel)
            next_id += 1
        y += PANEL_H * ((len(panels) + 1) // 2)

    if spec.notes:
        board = board.with_panel(text.Panel().id(next_id).title("What the run found")
                                 .mode(text_model.TextMode.MARKDOWN).content(_markdown(spec.notes))
                                 .grid_pos(model.GridPos(h=PANEL_H, w=24, x=0, y=y)))
        next_id, y = next_id + 1, y + PANEL_H
    if spec.latency:
        add_row(f"Production latency ({spec.latency.server})")
        add_panels(latency_panels(spec.latency))
    found = container_panels(spec.containers)
    if found:
        add_row("Containers (cAdvisor, kube-state-metrics)")
        add_panels(found)
    if spec.gpu:
        add_row("GPU (DCGM)")
        add_panels(gpu_panels(spec.gpu_reasons))

    out = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    # the builder has no fields for a Prometheus annotation's time-from-value, title and text
    for entry, event in zip(out["annotations"]["list"][1:], spec.events, strict=True):
        entry.update({"useValueForTime": True, "titleFormat": event.title, "textFormat": event.text, "step": "60s"})
    return out
