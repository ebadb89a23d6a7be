"""Which Prometheus series are the deployment's: the metric names read, the `Target`, and the PromQL sent.

cAdvisor's and kube-state-metrics' container series are matched on namespace, pod and container; DCGM's GPU
series on the pod holding the GPU; the serving latency series (every preset's of collectors/serving_metrics.py,
the user's `latency_metric` first) on namespace and pod. The same `Target` picks series
out of a recorded file (`select_series`) and writes the live query_range selectors (`promql_selectors`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collectors.openmetrics import Series, SeriesKey
from collectors.serving_metrics import DISCOVERABLE, candidates
from diagnose.core.errors import UserError

CADVISOR = ("container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_periods_total",
            "container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_oom_events_total")
KSM = ("kube_pod_container_resource_limits", "kube_pod_container_status_restarts_total",
       "kube_pod_container_status_last_terminated_reason")
DCGM = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@dataclass(frozen=True)
class Target:
    """Which containers: a namespace, a pod regex (fully anchored, as PromQL's =~) and a container name.

    None means "any"; without a container, cAdvisor's pod-level (`container=""`) and pause (`POD`) series
    are left out, as kubernetes-mixin does."""

    namespace: str | None = None
    pod_regex: str | None = None
    container: str | None = None
    pods_text: str | None = field(default=None, compare=False)  # describe() says this instead of the regex

    def __post_init__(self):
        if self.pod_regex is not None:
            re.compile(self.pod_regex)  # re.error (a ValueError) on a bad regex

    def _pod_ok(self, labels: dict, exported: bool = False) -> bool:
        ns = labels.get("namespace") or (labels.get("exported_namespace") if exported else None)
        pod = labels.get("pod") or (labels.get("exported_pod") if exported else None)
        if self.namespace is not None and ns != self.namespace:
            return False
        return self.pod_regex is None or (pod is not None and re.fullmatch(self.pod_regex, pod) is not None)

    def container_ok(self, labels: dict) -> bool:
        if not self._pod_ok(labels):
            return False
        if self.container is not None:
            return labels.get("container") == self.container
        return labels.get("container") not in (None, "", "POD")

    def pod_ok(self, labels: dict) -> bool:
        return self._pod_ok(labels)

    def gpu_ok(self, labels: dict) -> bool:
        """DCGM series name the pod that holds the GPU as `pod` (or `exported_pod` when Prometheus renamed it)."""
        return self._pod_ok(labels, exported=True)

    def describe(self) -> str:
        parts = []
        if self.namespace is not None:
            parts.append(f"namespace={self.namespace}")
        if self.pods_text is not None:
            parts.append(self.pods_text)
        elif self.pod_regex is not None:
            parts.append(f"pod=~{self.pod_regex}")
        if self.container is not None:
            parts.append(f"container={self.container}")
        return ", ".join(parts) or "all series"

    def to_dict(self) -> dict:
        return {"namespace": self.namespace, "pod_regex": self.pod_regex, "container": self.container}


def pod_regex_from_selector(selector: str | None) -> str | None:
    """A Deployment's pods are `<name>-<replicaset hash>-<suffix>`; from `app=textclf,version=v2` this gives
    `textclf-[a-z0-9]+-[a-z0-9]+`, which matches the old and the new ReplicaSet's pods alike (cAdvisor and
    kube-state-metrics name pods, not their labels). Uses `app.kubernetes.io/name`, `app`, `k8s-app` or
    `name`; None when the selector has none of them."""
    labels = {}
    for part in (selector or "").split(","):
        if "=" in part and "!=" not in part:
            key, _, value = part.partition("=")
            labels[key.strip()] = value.strip().lstrip("=").strip()
    for key in ("app.kubernetes.io/name", "app", "k8s-app", "name"):
        if labels.get(key):
            return re.escape(labels[key]) + "-[a-z0-9]+-[a-z0-9]+"
    return None


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal: backslash, double quote and newline escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def pod_labels_selector(namespace: str | None) -> str:
    """The query_range expression for the namespace's kube_pod_labels (kube-state-metrics' own `namespace` may
    have become `exported_namespace`, scraped without honor_labels)."""
    if namespace is None:
        return "kube_pod_labels"
    ns = promql_string(namespace)
    return f"kube_pod_labels{{namespace={ns}}} or kube_pod_labels{{exported_namespace={ns}}}"


def pods_seen_selector(namespace: str | None) -> str:
    """One series per pod of the namespace that cAdvisor or kube-state-metrics reports (the pods Prometheus saw,
    listed when the chosen ones have no series)."""
    names = promql_string("|".join(("kube_pod_labels", CADVISOR[2], CADVISOR[3], KSM[0], KSM[1])))
    if namespace is None:
        inner = f"{{__name__=~{names}}}"
    else:
        ns = promql_string(namespace)
        inner = f"{{__name__=~{names},namespace={ns}}} or {{__name__=~{names},exported_namespace={ns}}}"
    return f"count by (namespace, pod, exported_namespace, exported_pod) ({inner})"


def latency_names(latency_metric: str | None) -> tuple[str, ...]:
    """The sample names of the latency group: the user's metric's first, then every serving preset's."""
    return tuple(dict.fromkeys(n for p in candidates(latency_metric) for n in p.series_names()))


# PromQL's side of serving_metrics.DISCOVERABLE, on every sample name of such a histogram or summary
DISCOVERY_REGEX = "[a-zA-Z_:][a-zA-Z0-9_:]*(latency|duration|_time|_seconds|_milliseconds|_ms|_microseconds|_us)" \
                  "(_bucket|_sum|_count)?"


def _discoverable(name: str) -> bool:
    return bool(DISCOVERABLE.fullmatch(re.sub(r"_(bucket|sum|count)$", "", name)) or DISCOVERABLE.fullmatch(name))


def promql_selectors(target: Target, latency_metric: str | None) -> dict[str, str]:
    """The query_range expressions the live collector sends, one per group of metrics (the latency one a
    single name regex over every serving preset's series)."""

    def sel(names, matchers) -> str:
        return "{" + ",".join([f"__name__=~{promql_string('|'.join(names))}", *matchers]) + "}"

    pod: list[str] = []
    exported: list[str] = []
    if target.namespace is not None:
        pod.append(f"namespace={promql_string(target.namespace)}")
        exported.append(f"exported_namespace={promql_string(target.namespace)}")
    if target.pod_regex is not None:
        pod.append(f"pod=~{promql_string(target.pod_regex)}")
        exported.append(f"exported_pod=~{promql_string(target.pod_regex)}")
    container = [f"container={promql_string(target.container)}" if target.container is not None
                 else 'container!~"|POD"']
    gpu = sel(DCGM, pod)
    if exported:
        gpu += " or " + sel(DCGM, exported)
    return {
        "containers": sel(CADVISOR + KSM, pod + container),
        "gpu": gpu,
        # the presets' names, and any histogram or summary whose name says it times something (discover)
        "latency": sel((*latency_names(latency_metric), DISCOVERY_REGEX), pod),
    }


def select_series(series: dict[SeriesKey, Series], target: Target, latency_metric: str | None) -> dict[str, dict]:
    """Split series into the groups the math reads: `containers`, `gpu`, `latency`."""
    latency = set(latency_names(latency_metric))
    out: dict[str, dict] = {"containers": {}, "gpu": {}, "latency": {}}
    for key, value in series.items():
        name, labels = key[0], dict(key[1])
        if name in CADVISOR or name in KSM:
            if target.container_ok(labels):
                out["containers"][key] = value
        elif name in DCGM:
            if target.gpu_ok(labels):
                out["gpu"][key] = value
        elif (name in latency or _discoverable(name)) and target.pod_ok(labels):
            out["latency"][key] = value
    return out


def make_target(namespace, pod_regex, container, latency_metric, where, pods_text: str | None = None) -> Target:
    """The user's settings as a Target; a UserError naming `where` (the file or the URL) and the setting when a
    metric name or a pod regex would only fail later, inside Prometheus or the series math."""
    if latency_metric is not None and not _METRIC_NAME.match(latency_metric):
        raise UserError(f"{latency_metric!r} is not a Prometheus metric name", where, "latency_metric")
    try:
        return Target(namespace, pod_regex, container, pods_text)
    except re.error as exc:
        raise UserError(f"pod regex {pod_regex!r} does not compile: {exc}", where, "pod_regex") from None
