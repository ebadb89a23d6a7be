"""What Prometheus recorded around the deploy: CPU throttling, memory vs limit, OOM kills, GPU clocks, latency.

The series an on-call engineer already has in Prometheus tell whether the machine around the model changed when
the new version went out: cAdvisor's CFS counters (a CPU limit that throttles the new model), working set vs
the limit kube-state-metrics reports (a model that no longer fits), OOM events and restarts, DCGM's clocks and
throttle reasons (a GPU that clocks down), and the serving latency histogram itself, with the moment its p99
jumped.

Two ways in, one result (`prometheus_evidence`):

    PrometheusCollector(url, namespace=..., pod_regex=..., container=..., deployed_at=...).collect()
        live: /api/v1/query_range through prometheus-api-client, every call with a timeout
    read_offline("metrics.om", deployed_at, container=..., pod_regex=...)
        a recorded file in OpenMetrics text with timestamps (collectors/openmetrics.py), the same form
        `promtool tsdb create-blocks-from openmetrics` backfills and `save_openmetrics` writes

Both put every series on one time grid before any arithmetic: points every `step_s` seconds from the hour
before the deploy to the hour after. Live, the grid is what query_range returns (each point the latest sample
within Prometheus's lookback, 5 min by default); from a file, each sample goes to the first grid point at or
after it, within one step, so no sample is counted twice and a live collection saved with `save_openmetrics`
(points already on the grid) reads back to exactly the same evidence.

The series math (module functions, shared by both paths):

- counter increases between grid points are reset-aware: a drop means the counter restarted from zero, so the
  increase across it is the new value (the same as adding the pre-reset value back, as PromQL's increase()
  does); there is no extrapolation to the window's edges;
- CPU throttling is increase(container_cpu_cfs_throttled_periods_total) / increase(container_cpu_cfs_periods_total)
  as kubernetes-mixin's CPUThrottlingHigh computes it (summed over the selected containers; the worst one is
  named too);
- latency quantiles are histogram_quantile's interpolation (Prometheus's bucketQuantile) on bucket increases
  summed by `le`, over each window and over each grid step for the p99 timeline;
- the change point is binary segmentation on log p99 (docs/signals.md, "Prometheus").

The `prometheus_api_client` package is imported only inside the live path: offline reading needs no client.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from collectors.openmetrics import MAX_SERIES_PER_METRIC, Series, SeriesKey, read_openmetrics, write_openmetrics
from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence

SOURCE = "prometheus"
METRICS_FILE = "metrics.om"
DEFAULT_LATENCY_METRIC = "http_request_duration_seconds"
WINDOW = timedelta(hours=1)
STEP_S = 30
ALIGN_TOLERANCE_S = 600     # a change point this close to the deploy "lines up" with it
THROTTLING_HIGH = 0.25      # kubernetes-mixin's CPUThrottlingHigh threshold
MAX_POINTS = 11_000         # Prometheus refuses a query_range with more points per series
MIN_STEP_PCT = 10.0         # a smaller shift in p99 is not called a jump
MIN_SEGMENT = 3             # bins on each side of a change point, at least
MAX_CHANGE_POINTS = 5
PENALTY = 2.0               # split when the SSE gain exceeds PENALTY * sigma^2 * log(n)
SIGMA_FLOOR = 0.02          # log-scale noise floor: 2% (bucket interpolation makes a flat p99 look noiseless)
MIN_THROTTLE_PERIODS = 10   # a container with fewer CFS periods in the window is not named the worst

CADVISOR = ("container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_periods_total",
            "container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_oom_events_total")
KSM = ("kube_pod_container_resource_limits", "kube_pod_container_status_restarts_total",
       "kube_pod_container_status_last_terminated_reason")
DCGM = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


# --- what is selected -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Which containers: a namespace, a pod regex (fully anchored, as PromQL's =~) and a container name.

    None means "any"; without a container, cAdvisor's pod-level (`container=""`) and pause (`POD`) series
    are left out, as kubernetes-mixin does."""

    namespace: str | None = None
    pod_regex: str | None = None
    container: str | None = None

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
        if self.pod_regex is not None:
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


def promql_selectors(target: Target, latency_metric: str) -> dict[str, str]:
    """The query_range expressions the live collector sends, one per group of metrics."""

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
        "latency": sel(tuple(f"{latency_metric}_{s}" for s in ("bucket", "count", "sum")), pod),
    }


def select_series(series: dict[SeriesKey, Series], target: Target, latency_metric: str) -> dict[str, dict]:
    """Split series into the groups the math reads: `containers`, `gpu`, `latency`."""
    latency_names = {f"{latency_metric}_bucket", f"{latency_metric}_count", f"{latency_metric}_sum"}
    out: dict[str, dict] = {"containers": {}, "gpu": {}, "latency": {}}
    for key, value in series.items():
        name, labels = key[0], dict(key[1])
        if name in CADVISOR or name in KSM:
            if target.container_ok(labels):
                out["containers"][key] = value
        elif name in DCGM:
            if target.gpu_ok(labels):
                out["gpu"][key] = value
        elif name in latency_names and target.pod_ok(labels):
            out["latency"][key] = value
    return out


# --- the grid and counter math ------------------------------------------------------------------------------


def make_grid(deploy_s: float, window_s: float, step_s: int) -> np.ndarray:
    """Points every step_s seconds from deploy - window to deploy + window, anchored on the deploy second."""
    anchor = round(deploy_s)
    n = math.ceil(window_s / step_s)
    return anchor + step_s * np.arange(-n, n + 1, dtype=float)


def on_grid(ts: np.ndarray, vs: np.ndarray, grid: np.ndarray, lookback_s: float) -> np.ndarray:
    """The value at each grid point: the latest sample at or before it if that is less than `lookback_s` old,
    else NaN. With lookback_s = the grid step, every sample lands on one grid point (the first at or after it)
    and none is repeated; with Prometheus's 5 min it is what query_range returns."""
    ts, vs = np.asarray(ts, dtype=float), np.asarray(vs, dtype=float)
    out = np.full(len(grid), np.nan)
    if len(ts) == 0:
        return out
    idx = np.searchsorted(ts, grid, side="right") - 1
    ok = idx >= 0
    ok[ok] = (grid[ok] - ts[idx[ok]]) < lookback_s
    out[ok] = vs[idx[ok]]
    return out


def counter_deltas(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reset-aware increases between consecutive valid grid values, put at the later point (NaN elsewhere),
    and the seconds each spans. A drop means a reset: the increase across it is the new value."""
    deltas, spans = np.full(len(values), np.nan), np.full(len(values), np.nan)
    idx = np.flatnonzero(~np.isnan(values))
    if len(idx) < 2:
        return deltas, spans
    prev, cur = values[idx[:-1]], values[idx[1:]]
    deltas[idx[1:]] = np.where(cur < prev, cur, cur - prev)
    spans[idx[1:]] = grid[idx[1:]] - grid[idx[:-1]]
    return deltas, spans


def increase(values: np.ndarray, grid: np.ndarray, mask: np.ndarray) -> float | None:
    """A counter's reset-aware increase over the grid points in `mask` (None: no two samples there)."""
    deltas, _ = counter_deltas(values, grid)
    picked = deltas[mask]
    return float(np.nansum(picked)) if np.any(~np.isnan(picked)) else None


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's bucketQuantile: (upper bound, cumulative count) pairs -> the q-quantile, linearly
    interpolated inside its bucket; the +Inf bucket gives the largest finite bound; NaN without +Inf or counts."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    bounds = [b for b, _ in buckets]
    counts = list(np.maximum.accumulate([c for _, c in buckets]))  # counts must not fall with le
    total = counts[-1]
    if not total > 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(buckets) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if b == 0 else (bounds[b - 1], counts[b - 1])
    in_bucket = counts[b] - below
    return start + (bounds[b] - start) * ((rank - below) / in_bucket) if in_bucket > 0 else bounds[b]


# --- change point -------------------------------------------------------------------------------------------


def _split(x: np.ndarray, lo: int, hi: int, min_size: int) -> tuple[int | None, float]:
    """The best single split of x[lo:hi] (least squares on two means) and its SSE gain."""
    seg = x[lo:hi]
    n = len(seg)
    if n < 2 * min_size:
        return None, 0.0
    cs, cs2 = np.cumsum(seg), np.cumsum(seg * seg)
    k = np.arange(min_size, n - min_size + 1)
    sse_left = cs2[k - 1] - cs[k - 1] ** 2 / k
    right_sum, right_sq = cs[-1] - cs[k - 1], cs2[-1] - cs2[k - 1]
    sse_right = right_sq - right_sum ** 2 / (n - k)
    gain = (cs2[-1] - cs[-1] ** 2 / n) - sse_left - sse_right
    best = int(np.argmax(gain))
    return lo + int(k[best]), float(gain[best])


def change_points(x, *, min_size: int = MIN_SEGMENT, max_points: int = MAX_CHANGE_POINTS, penalty: float = PENALTY,
                  sigma_floor: float = SIGMA_FLOOR) -> list[dict]:
    """Binary segmentation for shifts in the mean of x (log p99): split where two means fit best, while the
    SSE gain exceeds penalty * sigma^2 * log(n); sigma is robust (MAD of first differences / sqrt 2, at least
    sigma_floor). Returns [{index, gain, left_mean, right_mean, left, right}] by index; `index` starts the
    new segment, `left`/`right` are the neighbouring segments' bounds."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2 * min_size:
        return []
    diffs = np.diff(x)
    sigma = max(1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2), sigma_floor)
    threshold = penalty * sigma * sigma * math.log(n)
    bounds = [0, n]
    for _ in range(max_points):
        best = (None, 0.0)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            k, gain = _split(x, lo, hi, min_size)
            if k is not None and gain > best[1]:
                best = (k, gain)
        if best[0] is None or best[1] <= threshold:
            break
        bounds = sorted(bounds + [best[0]])
    out = []
    for i in range(1, len(bounds) - 1):
        lo, k, hi = bounds[i - 1], bounds[i], bounds[i + 1]
        left, right = x[lo:k], x[k:hi]
        gain = float(((x[lo:hi] - x[lo:hi].mean()) ** 2).sum() - ((left - left.mean()) ** 2).sum()
                     - ((right - right.mean()) ** 2).sum())
        out.append({"index": k, "gain": gain, "left_mean": float(left.mean()), "right_mean": float(right.mean()),
                    "left_median": float(np.median(left)), "right_median": float(np.median(right)),
                    "left": (lo, k), "right": (k, hi)})
    return out


# --- small formatting -----------------------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


def _r(value, digits: int):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _bytes(value: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%" if ratio * 100 >= 1 or ratio == 0 else f"{ratio * 100:.1f}%"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _container_key(labels) -> tuple:
    labels = dict(labels)
    return labels.get("namespace"), labels.get("pod"), labels.get("container")


# --- the evidence -------------------------------------------------------------------------------------------


def _seconds(window) -> float:
    return window.total_seconds() if isinstance(window, timedelta) else float(window)


def _parse_deploy(deployed_at) -> datetime | None:
    from collectors.kubernetes import parse_time

    return parse_time(deployed_at)


class _Windows:
    def __init__(self, deploy_s: float, window_s: float, step_s: int):
        self.grid = make_grid(deploy_s, window_s, step_s)
        self.deploy = float(round(deploy_s))
        self.window_s, self.step_s = window_s, step_s
        # counters: the increase up to grid point g covers (g - step, g], so the steps ending in
        # (deploy - window, deploy] are before and those ending in (deploy, deploy + window] after
        self.before = (self.grid > self.deploy - window_s) & (self.grid <= self.deploy)
        self.after = (self.grid > self.deploy) & (self.grid <= self.deploy + window_s)
        # gauges: a value at the deploy instant is already "after" (a new pod's first sample)
        self.gauge_before = (self.grid >= self.deploy - window_s) & (self.grid < self.deploy)
        self.gauge_after = (self.grid >= self.deploy) & (self.grid <= self.deploy + window_s)

    def masks(self):
        return (("before", self.before), ("after", self.after))

    def gauge_masks(self):
        return (("before", self.gauge_before), ("after", self.gauge_after))


def _cpu(group: dict, w: _Windows, notes: list[str], target: Target) -> dict:
    by_name: dict[str, dict] = {}
    for (name, labels), values in group.items():
        by_name.setdefault(name, {})[_container_key(labels)] = values
    out: dict = {}

    throttled, periods = by_name.get(CADVISOR[0], {}), by_name.get(CADVISOR[1], {})
    ratio = {"before": None, "after": None, "worst_after": None}
    if periods:
        for side, mask in w.masks():
            num = [increase(v, w.grid, mask) for v in throttled.values()]
            den = [increase(v, w.grid, mask) for v in periods.values()]
            num, den = [x for x in num if x is not None], [x for x in den if x is not None]
            if den and sum(den) > 0 and num:
                ratio[side] = _r(sum(num) / sum(den), 4)
        worst = None
        for key, v in periods.items():
            den = increase(v, w.grid, w.after)
            num = increase(throttled[key], w.grid, w.after) if key in throttled else None
            if den and den >= MIN_THROTTLE_PERIODS and num is not None and (worst is None or num / den > worst[2]):
                worst = (key[1], key[2], num / den)
        if worst:
            ratio["worst_after"] = {"pod": worst[0], "container": worst[1], "ratio": _r(worst[2], 4)}
    if not periods or not throttled:
        notes.append(f"no {CADVISOR[1] if not periods else CADVISOR[0]} series for {target.describe()}: "
                     "CPU throttling unknown")
    out["throttled_ratio"] = ratio
    out["throttling_high"] = None if ratio["after"] is None else ratio["after"] > THROTTLING_HIGH

    usage = by_name.get(CADVISOR[2], {})
    cores = {"before": None, "after": None}
    running = {"before": None, "after": None}
    if usage:
        for side, mask in w.masks():
            used = busy = 0.0
            for v in usage.values():
                deltas, spans = counter_deltas(v, w.grid)
                on = mask & (deltas > 0)  # the container ran in this step (its CPU counter advanced)
                used += float(np.nansum(deltas[on]))
                busy += float(np.nansum(spans[on]))
            if busy > 0:
                cores[side] = _r(used / busy, 4)
                running[side] = _r(busy / w.window_s, 2)
    else:
        notes.append(f"no {CADVISOR[2]} series for {target.describe()}: CPU use unknown")
    out["cpu_usage_cores"] = cores
    out["containers_running"] = running

    ws = by_name.get(CADVISOR[3], {})
    peaks: dict[str, dict] = {"before": {}, "after": {}}
    for key, v in ws.items():
        for side, mask in w.gauge_masks():
            if np.any(~np.isnan(v[mask])):
                peaks[side][key] = float(np.nanmax(v[mask]))
    out["memory_working_set_bytes"] = {side: (int(max(p.values())) if p else None) for side, p in peaks.items()}
    if not ws:
        notes.append(f"no {CADVISOR[3]} series for {target.describe()}: memory use unknown")

    limits: dict[tuple, tuple[float, float]] = {}  # container -> (time of its last value, value)
    for (name, labels), v in group.items():
        if name != KSM[0] or dict(labels).get("resource") != "memory":
            continue
        for mask in (w.gauge_after, w.gauge_before):
            valid = np.flatnonzero(mask & ~np.isnan(v))
            if len(valid):
                limits[_container_key(labels)] = (float(w.grid[valid[-1]]), float(v[valid[-1]]))
                break
    limit = None
    if limits:
        latest = max(t for t, _ in limits.values())
        current = sorted({val for t, val in limits.values() if t == latest})
        limit = int(current[0])
        if len(current) > 1:
            notes.append(f"the containers' memory limits differ ({', '.join(_bytes(c) for c in current)}): "
                         "the smallest is reported")
    else:
        notes.append(f"no {KSM[0]}{{resource=\"memory\"}} series for {target.describe()}: memory limit unknown")
    out["memory_limit_bytes"] = limit
    headrooms = [(limits[k][1] - peak) / limits[k][1] for k, peak in peaks["after"].items()
                 if k in limits and limits[k][1] > 0]
    out["memory_headroom_after"] = _r(min(headrooms), 4) if headrooms else None

    for field, name, what in (("oom_events", CADVISOR[4], "OOM events"), ("restarts", KSM[1], "restarts")):
        found = by_name.get(name, {})
        values = [increase(v, w.grid, w.after) for v in found.values()]
        values = [x for x in values if x is not None]
        out[field] = int(round(sum(values))) if values else None
        if not found:
            notes.append(f"no {name} series for {target.describe()}: {what} unknown")
    for side, mask in w.gauge_masks():
        killed = {_container_key(labels) for (name, labels), v in group.items()
                  if name == KSM[2] and dict(labels).get("reason") == "OOMKilled"
                  and np.any(v[mask & ~np.isnan(v)] >= 1)}
        key = "last_terminated_oomkilled" + ("" if side == "after" else "_before")
        out[key] = len(killed) if KSM[2] in by_name or KSM[1] in by_name else None
    if KSM[2] not in by_name and KSM[1] not in by_name:
        notes.append(f"no kube-state-metrics container status series for {target.describe()}: OOMKilled unknown")
    return out


def _gpu(group: dict, w: _Windows, notes: list[str], target: Target) -> dict:
    from collectors.gpu import REASON_SHARE, decode_reasons

    def values(name: str, mask) -> np.ndarray:
        found = [v[mask] for (n, _), v in group.items() if n == name]
        flat = np.concatenate(found) if found else np.array([])
        return flat[~np.isnan(flat)]

    def stat(name, mask, fn, digits=1):
        v = values(name, mask)
        return _r(fn(v), digits) if len(v) else None

    sm = {side: stat("DCGM_FI_DEV_SM_CLOCK", mask, np.median, 0) for side, mask in w.gauge_masks()}
    util = {side: stat("DCGM_FI_DEV_GPU_UTIL", mask, np.mean) for side, mask in w.gauge_masks()}
    drop = None
    if sm["before"] and sm["after"] is not None:
        drop = round((sm["before"] - sm["after"]) / sm["before"] * 100, 1)
    masks = np.concatenate([values(n, w.gauge_after) for n in DCGM[4:]])
    shares: dict[str, float] = {}
    if len(masks):
        counts: dict[str, int] = {}
        for m in masks:
            for reason in decode_reasons(int(m)):
                counts[reason] = counts.get(reason, 0) + 1
        shares = {r: round(c / len(masks), 3) for r, c in sorted(counts.items(), key=lambda kv: -kv[1])}
    gpus = {(dict(labels).get("Hostname"), dict(labels).get("UUID") or dict(labels).get("gpu"))
            for (_, labels) in group}
    if not group:
        notes.append(f"no DCGM series for {target.describe()}: GPU unknown (no GPU, or dcgm-exporter not scraped)")
    return {
        "gpus": len(gpus) if group else 0,
        "sm_clock_mhz": sm,
        "clock_drop_pct": drop,
        "util_pct": util,
        "temp_c_after": stat("DCGM_FI_DEV_GPU_TEMP", w.gauge_after, np.median),
        "power_w_after": stat("DCGM_FI_DEV_POWER_USAGE", w.gauge_after, np.median),
        "throttle_reasons_after": [r for r, s in shares.items() if s >= REASON_SHARE] if len(masks) else None,
        "throttle_reason_share_after": shares if len(masks) else None,
    }


def _latency(group: dict, w: _Windows, notes: list[str], target: Target, metric: str, tolerance_s: float) -> dict:
    to_ms = 1.0 if metric.endswith(("_milliseconds", "_ms")) else 1000.0
    by_le: dict[float, list[np.ndarray]] = {}
    for (name, labels), v in group.items():
        if name != f"{metric}_bucket":
            continue
        try:
            le = float(dict(labels).get("le", "nan"))
        except ValueError:
            continue
        if not math.isnan(le):
            by_le.setdefault(le, []).append(counter_deltas(v, w.grid)[0])
    # sum by (le) over the series, step by step; a step where no series has an increase stays NaN
    per_le = {le: np.where(np.all(np.isnan(np.vstack(rows)), axis=0), np.nan, np.nansum(np.vstack(rows), axis=0))
              for le, rows in by_le.items()}
    out: dict = {"metric": metric, "p50_ms": {"before": None, "after": None}, "p99_ms": {"before": None, "after": None},
                 "requests": {"before": None, "after": None}, "change_point": None, "change_points": [],
                 "timeline": None}
    if not per_le:
        notes.append(f"no {metric}_bucket series for {target.describe()}: latency unknown")
        return out
    if not any(math.isinf(le) for le in per_le):
        notes.append(f"{metric}_bucket has no le=\"+Inf\" bucket: quantiles cannot be computed")
        return out
    les = sorted(per_le)
    matrix = np.vstack([per_le[le] for le in les])  # (buckets, grid points)

    def quantiles(counts: np.ndarray) -> tuple[float, float]:
        pairs = list(zip(les, counts, strict=True))
        return histogram_quantile(0.5, pairs) * to_ms, histogram_quantile(0.99, pairs) * to_ms

    for side, mask in w.masks():
        cols = matrix[:, mask]
        if np.any(~np.isnan(cols)):
            counts = np.nansum(cols, axis=1)
            p50, p99 = quantiles(counts)
            out["p50_ms"][side], out["p99_ms"][side] = _r(p50, 2), _r(p99, 2)
            out["requests"][side] = int(round(counts[-1]))
    # the timeline: one p50/p99 per grid step (the requests that finished in it), for the change point
    t, p50s, p99s = [], [], []
    for j in range(1, len(w.grid)):
        col = matrix[:, j]
        if np.all(np.isnan(col)) or not np.nansum(col[-1:]) > 0:
            continue
        p50, p99 = quantiles(np.nan_to_num(col))
        t.append(float(w.grid[j]))
        p50s.append(p50)
        p99s.append(p99)
    out["timeline"] = {"t": t, "p50_ms": [_r(v, 2) for v in p50s], "p99_ms": [_r(v, 2) for v in p99s]}
    good = [i for i, v in enumerate(p99s) if v > 0 and math.isfinite(v)]
    x = np.log([p99s[i] for i in good])
    found = []
    for cp in change_points(x):
        start = t[good[cp["index"]]] - w.step_s  # the step's start: the first requests of the new level
        before_ms, after_ms = math.exp(cp["left_median"]), math.exp(cp["right_median"])
        step_pct = (after_ms / before_ms - 1) * 100
        if abs(step_pct) < MIN_STEP_PCT:
            continue
        lag = start - w.deploy
        found.append({"at": _iso(start), "lag_s": round(lag, 1), "aligned_with_deploy": abs(lag) <= tolerance_s,
                      "step_pct": round(step_pct, 1), "before_ms": _r(before_ms, 2), "after_ms": _r(after_ms, 2),
                      "gain": cp["gain"]})
    if found:
        ups = [c for c in found if c["step_pct"] > 0]
        main = max(ups or found, key=lambda c: c["gain"])
        out["change_point"] = {k: v for k, v in main.items() if k != "gain"} | {
            "tolerance_s": tolerance_s,
            "method": "binary segmentation on log p99 per step (BIC-like penalty, robust noise)"}
    out["change_points"] = [{k: v for k, v in c.items() if k != "gain"} for c in found]
    return out


def prometheus_evidence(series: dict[SeriesKey, Series], deployed_at, *, target: Target | None = None,
                        latency_metric: str = DEFAULT_LATENCY_METRIC, window=WINDOW, step_s: int = STEP_S,
                        tolerance_s: float = ALIGN_TOLERANCE_S, origin: dict | None = None,
                        lookback_s: float | None = None) -> Evidence:
    """Raw series {(name, labels): (timestamps, values)} -> Evidence: before vs after the deploy. See
    docs/signals.md ("Prometheus") for every key. `origin` says where the series came from (file or URL)."""
    target = target or Target()
    origin = dict(origin or {})
    where = origin.get("path") or origin.get("url") or "the series"
    deploy = _parse_deploy(deployed_at)
    if deploy is None:
        why = "no deployed_at given" if deployed_at in (None, "") else f"deployed_at {deployed_at!r} is not a time"
        return Evidence.unavailable(SOURCE, f"{why}: Prometheus series are compared before and after the deploy")
    window_s, step_s = _seconds(window), int(step_s)
    lookback_s = step_s if lookback_s is None else lookback_s
    w = _Windows(deploy.timestamp(), window_s, step_s)
    groups = select_series(series, target, latency_metric)
    if not any(groups.values()):
        names = sorted({name for name, _ in series})
        present = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        return Evidence.unavailable(SOURCE, f"no series for {target.describe()} in {where} (metrics present: "
                                            f"{present or 'none'})")
    gridded = {g: {k: on_grid(ts, vs, w.grid, lookback_s) for k, (ts, vs) in items.items()}
               for g, items in groups.items()}
    if not any(np.any(~np.isnan(v)) for items in gridded.values() for v in items.values()):
        starts = [ts[0] for items in groups.values() for ts, _ in items.values() if len(ts)]
        ends = [ts[-1] for items in groups.values() for ts, _ in items.values() if len(ts)]
        covers = f" (the series cover {_iso(min(starts))} .. {_iso(max(ends))})" if starts else ""
        return Evidence.unavailable(SOURCE, f"no samples for {target.describe()} in {where} between "
                                            f"{_iso(w.grid[0])} and {_iso(w.grid[-1])}{covers}")
    notes: list[str] = []
    data: dict = {
        "origin": origin,
        "deployed_at": _iso(w.deploy),
        "window_s": window_s,
        "step_s": step_s,
        "windows": {"before": [_iso(w.deploy - window_s), _iso(w.deploy)],
                    "after": [_iso(w.deploy), _iso(w.deploy + window_s)]},
        "target": target.to_dict(),
        "series_matched": {g: len(items) for g, items in groups.items()},
    }
    data.update(_cpu(gridded["containers"], w, notes, target))
    data["gpu"] = _gpu(gridded["gpu"], w, notes, target)
    data["latency"] = _latency(gridded["latency"], w, notes, target, latency_metric, tolerance_s)
    data["notes"] = notes
    return Evidence(source=SOURCE, status="ok", data=data, summary=_summary(data))


def _summary(d: dict) -> list[str]:
    lines: list[str] = []
    r = d["throttled_ratio"]
    if r["after"] is not None:
        before = f"{_pct(r['before'])} before" if r["before"] is not None else "no data before"
        line = f"CPU throttled in {_pct(r['after'])} of CFS periods after the deploy ({before})"
        if d["throttling_high"]:
            line += "; above the 25% at which kubernetes-mixin's CPUThrottlingHigh fires"
            if r["worst_after"]:
                line += f" (worst: pod {r['worst_after']['pod']}, {_pct(r['worst_after']['ratio'])})"
        lines.append(line)
    c = d["cpu_usage_cores"]
    if c["after"] is not None:
        before = f"{c['before']:.2f} before" if c["before"] is not None else "no data before"
        lines.append(f"CPU use {c['after']:.2f} cores per container after the deploy ({before})")
    m, limit, headroom = d["memory_working_set_bytes"], d["memory_limit_bytes"], d["memory_headroom_after"]
    if m["after"] is not None:
        line = f"memory working set peaked at {_bytes(m['after'])} after the deploy"
        line += f" ({_bytes(m['before'])} before)" if m["before"] is not None else ""
        if limit is not None:
            line += f"; limit {_bytes(limit)}"
            if headroom is not None:
                line += f", {_pct(max(headroom, 0))} headroom" + (" (at the limit)" if headroom <= 0.02 else "")
        lines.append(line)
    oom, restarts, killed = d["oom_events"], d["restarts"], d["last_terminated_oomkilled"]
    if oom is not None or restarts is not None:
        parts = []
        if oom is not None:
            parts.append(f"{_plural(oom, 'OOM event')}" if oom else "no OOM events")
        if restarts is not None:
            parts.append(f"{_plural(restarts, 'restart')}" if restarts else "no restarts")
        line = " and ".join(parts) + " after the deploy"
        if killed:
            line += f"; {_plural(killed, 'container')} last terminated OOMKilled"
        lines.append(line)
    g = d["gpu"]
    sm = g["sm_clock_mhz"]
    if sm["after"] is not None:
        from collectors.gpu import CLOCK_STEADY_PCT, REASON_WORDS

        if g["clock_drop_pct"] is not None and abs(g["clock_drop_pct"]) >= CLOCK_STEADY_PCT:
            line = (f"GPU SM clock {sm['before']:.0f} -> {sm['after']:.0f} MHz ({-g['clock_drop_pct']:+.0f}%) "
                    "after the deploy")
        else:
            before = f" ({sm['before']:.0f} before the deploy)" if sm["before"] is not None else ""
            line = f"GPU SM clock steady at {sm['after']:.0f} MHz{before}"
        reasons = g["throttle_reasons_after"]
        if reasons is not None:
            words = [f"{REASON_WORDS.get(x, x)} in {g['throttle_reason_share_after'][x]:.0%} of samples" for x in reasons]
            line += "; " + (", ".join(words) if words else "no clock throttling")
        extras = [f"{g['temp_c_after']:.0f} C" if g["temp_c_after"] is not None else None,
                  f"{g['power_w_after']:.0f} W" if g["power_w_after"] is not None else None]
        extras = [e for e in extras if e]
        lines.append(line + (f"; {', '.join(extras)}" if extras else ""))
    if g["util_pct"]["after"] is not None:
        before = f" ({g['util_pct']['before']:.0f}% before)" if g["util_pct"]["before"] is not None else ""
        lines.append(f"GPU {g['util_pct']['after']:.0f}% busy after the deploy{before}")
    lat = d["latency"]
    p99, p50 = lat["p99_ms"], lat["p50_ms"]
    if p99["after"] is not None and p99["before"] is not None:
        lines.append(f"p99 latency {_ms(p99['before'])} -> {_ms(p99['after'])} ms (p50 {_ms(p50['before'])} -> "
                     f"{_ms(p50['after'])} ms), the hour before the deploy vs the hour after")
    elif p99["after"] is not None:
        lines.append(f"p99 latency {_ms(p99['after'])} ms after the deploy (p50 {_ms(p50['after'])} ms); none before")
    cp = lat["change_point"]
    if cp:
        at = datetime.strptime(cp["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
        rel = "after" if cp["lag_s"] >= 0 else "before"
        line = (f"the p99 jump began at {_hms(at)} UTC, {_span(cp['lag_s'])} {rel} the deploy "
                f"({_ms(cp['before_ms'])} -> {_ms(cp['after_ms'])} ms, {cp['step_pct']:+.0f}%)")
        if cp["aligned_with_deploy"]:
            line += f": within {_span(cp['tolerance_s'])} of the deploy"
        else:
            line += (f": beyond the {_span(cp['tolerance_s'])} tolerance, so it did not start with the rollout itself; "
                     f"look at what changed at {_hms(at)} (OOM kills, restarts, traffic)")
        lines.append(line)
    elif lat["timeline"] is not None and lat["timeline"]["t"]:
        lines.append("no change point in p99 latency around the deploy")
    lines.extend(d["notes"])
    return lines


# --- offline ---------------------------------------------------------------------------------------------


def read_offline(path, deployed_at, container: str | None = None, pod_regex: str | None = None,
                 latency_metric: str = DEFAULT_LATENCY_METRIC, *, namespace: str | None = None, window=WINDOW,
                 step_s: int = STEP_S, tolerance_s: float = ALIGN_TOLERANCE_S,
                 max_series_per_metric: int = MAX_SERIES_PER_METRIC) -> Evidence:
    """A recorded `metrics.om` (OpenMetrics text with timestamps) -> Evidence.

    UserError naming the file for a file that cannot be used (see collectors/openmetrics.py), a pod regex
    that does not compile, or a latency metric name that is not a metric name."""
    path = Path(path)
    target = _target(namespace, pod_regex, container, latency_metric, path)
    parsed = read_openmetrics(path, max_series_per_metric=max_series_per_metric)
    evidence = prometheus_evidence(parsed.series, deployed_at, target=target, latency_metric=latency_metric,
                                   window=window, step_s=step_s, tolerance_s=tolerance_s,
                                   origin={"kind": "file", "path": str(path)})
    if evidence.ok:
        evidence.data["parse"] = parsed.stats()
        extra = []
        if parsed.skipped_lines:
            extra.append(f"{path.name}: {_plural(parsed.skipped_lines, 'bad line')} skipped "
                         f"(first: {parsed.skipped[0]})")
        if parsed.dropped_series:
            total = sum(parsed.dropped_series.values())
            extra.append(f"{path.name}: {total} series beyond {max_series_per_metric} per metric dropped "
                         f"({', '.join(f'{k} {v}' for k, v in parsed.dropped_series.items())})")
        evidence.data["notes"].extend(extra)
        evidence.summary.extend(extra)
    return evidence


def _target(namespace, pod_regex, container, latency_metric, where) -> Target:
    if not _METRIC_NAME.match(latency_metric or ""):
        raise UserError(f"{latency_metric!r} is not a Prometheus metric name", where, "latency_metric")
    try:
        return Target(namespace, pod_regex, container)
    except re.error as exc:
        raise UserError(f"pod regex {pod_regex!r} does not compile: {exc}", where, "pod_regex") from None


def save_openmetrics(path, series: dict[SeriesKey, Series]) -> Path:
    """Write series (as the live collector read them) to an OpenMetrics file that read_offline and
    `promtool tsdb create-blocks-from openmetrics` take."""
    return write_openmetrics(path, series)


# --- live ------------------------------------------------------------------------------------------------


def _client_error(exc) -> tuple[int | None, str]:
    """prometheus-api-client's "HTTP Status Code 400 (b'{...}')" -> (400, Prometheus's own error text)."""
    import json

    m = re.match(r"^HTTP Status Code (\d+) \((b?['\"].*['\"])\)$", str(exc), re.S)
    if not m:
        return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    status = int(m.group(1))
    try:
        body = ast.literal_eval(m.group(2))
        body = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    except (ValueError, SyntaxError):
        body = m.group(2)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error"):
        kind = f"{doc.get('errorType')}: " if doc.get("errorType") else ""
        return status, f"{kind}{doc['error']}"
    text = body.strip().splitlines()
    return status, text[0][:300] if text else ""


class PrometheusCollector:
    """The deployment's series around the deploy, read live from Prometheus's HTTP API -> Evidence.

    `http`: a `prometheus_api_client.PrometheusConnect` to use as is; without one the collector makes its
    own (no retry of a read timeout, one retry of a refused connection, `headers` sent with every call).
    Three query_range calls (containers, GPU, latency), each with `timeout_s` on the HTTP call and as
    Prometheus's own query `timeout`. After `collect()`, `series` holds what was read and `save(folder)`
    writes it as `metrics.om` for read_offline. `collect()` never raises.
    """

    name = SOURCE

    def __init__(self, url: str, namespace: str | None = None, pod_regex: str | None = None,
                 container: str | None = None, deployed_at=None, window=WINDOW,
                 latency_metric: str = DEFAULT_LATENCY_METRIC, timeout_s: float = 10, http=None, *,
                 step_s: int = STEP_S, tolerance_s: float = ALIGN_TOLERANCE_S, headers: dict | None = None,
                 max_series_per_metric: int = MAX_SERIES_PER_METRIC):
        self.url = (url or "").rstrip("/")
        self.namespace, self.pod_regex, self.container = namespace, pod_regex, container
        self.deployed_at, self.window, self.latency_metric = deployed_at, window, latency_metric
        self.timeout_s, self.http, self.step_s, self.tolerance_s = timeout_s, http, int(step_s), tolerance_s
        self.headers, self.max_series_per_metric = headers, max_series_per_metric
        self.series: dict[SeriesKey, Series] | None = None
        self.queries: list[str] = []

    @classmethod
    def from_deployment(cls, url: str, deployment: dict, **kwargs) -> PrometheusCollector:
        """From a manifest's `deployment` mapping: namespace, container, deployed_at, and `pod_regex` (else
        derived from `selector` with pod_regex_from_selector)."""
        regex = deployment.get("pod_regex") or pod_regex_from_selector(deployment.get("selector"))
        return cls(url, deployment.get("namespace"), regex, deployment.get("container"),
                   deployment.get("deployed_at"), **kwargs)

    def collect(self) -> Evidence:
        if not self.url:
            return Evidence.unavailable(SOURCE, "no Prometheus URL given")
        try:
            target = _target(self.namespace, self.pod_regex, self.container, self.latency_metric, self.url)
        except UserError as exc:
            return Evidence.error(SOURCE, ValueError(str(exc)))
        deploy = _parse_deploy(self.deployed_at)
        if deploy is None:
            return prometheus_evidence({}, self.deployed_at)  # unavailable, with the reason
        window_s = _seconds(self.window)
        grid = make_grid(deploy.timestamp(), window_s, self.step_s)
        if len(grid) > MAX_POINTS:
            return Evidence.error(SOURCE, ValueError(
                f"a {_span(window_s)} window each side at step_s={self.step_s} gives {len(grid)} points; "
                f"Prometheus allows {MAX_POINTS}: raise step_s"))
        own = self.http is None
        if own:
            try:
                client = self._own_client()
            except ImportError:
                return Evidence.unavailable(SOURCE, "the prometheus-api-client package is not installed "
                                                    "(pip install prometheus-api-client)")
            except Exception as exc:
                return Evidence.error(SOURCE, exc)
        else:
            client = self.http
        try:
            series: dict[SeriesKey, Series] = {}
            notes: list[str] = []
            for what, query in promql_selectors(target, self.latency_metric).items():
                self._read(client, what, query, grid, series, notes)
        except Exception as exc:
            return Evidence.error(SOURCE, exc)
        finally:
            if own:
                client.close()
        self.series = series
        try:
            evidence = prometheus_evidence(series, deploy, target=target, latency_metric=self.latency_metric,
                                           window=self.window, step_s=self.step_s, tolerance_s=self.tolerance_s,
                                           origin={"kind": "prometheus", "url": self.url})
        except Exception as exc:
            return Evidence.error(SOURCE, exc)
        if evidence.ok and notes:
            evidence.data["notes"].extend(notes)
            evidence.summary.extend(notes)
        return evidence

    def save(self, folder) -> Path | None:
        """Write what the last collect() read into `folder/metrics.om` (None when nothing was read)."""
        if not self.series:
            return None
        return save_openmetrics(Path(folder) / METRICS_FILE, self.series)

    def _own_client(self):
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        # A read timeout is not retried (a hung Prometheus costs timeout_s once); a refused connection once.
        retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0)
        return PrometheusConnect(url=self.url, headers=self.headers, retry=retry, timeout=self.timeout_s)

    def _read(self, client, what: str, query: str, grid: np.ndarray, series: dict, notes: list[str]) -> None:
        start = datetime.fromtimestamp(float(grid[0]), timezone.utc)
        end = datetime.fromtimestamp(float(grid[-1]), timezone.utc)
        self.queries.append(query)
        result = self._call(client, what, query, start, end)
        if not isinstance(result, list):
            raise RuntimeError(f"unexpected answer from Prometheus at {self.url} to the {what} query: "
                               f"not a list of series")
        per_metric: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for item in result:
            metric = dict(item.get("metric") or {}) if isinstance(item, dict) else None
            if metric is None or not isinstance(item.get("values"), list):
                raise RuntimeError(f"unexpected answer from Prometheus at {self.url} to the {what} query: "
                                   "a series without metric and values (was this a range query?)")
            name = metric.pop("__name__", "")
            if per_metric.get(name, 0) >= self.max_series_per_metric:
                dropped[name] = dropped.get(name, 0) + 1
                continue
            per_metric[name] = per_metric.get(name, 0) + 1
            points = item["values"]
            ts = np.array([float(p[0]) for p in points], dtype=float)
            vs = np.array([float(p[1]) for p in points], dtype=float)  # "NaN", "+Inf" parse as floats
            series[(name, tuple(sorted(metric.items())))] = (ts, vs)
        for name, n in dropped.items():
            notes.append(f"{n} {name} series beyond {self.max_series_per_metric} per metric dropped")

    def _call(self, client, what: str, query: str, start: datetime, end: datetime):
        """One query_range; every failure becomes an exception whose one line says what happened."""
        import requests
        from prometheus_api_client import PrometheusApiClientException

        try:
            return client.custom_query_range(query, start_time=start, end_time=end, step=str(self.step_s),
                                             params={"timeout": f"{self.timeout_s:g}"}, timeout=self.timeout_s)
        except PrometheusApiClientException as exc:
            status, message = _client_error(exc)
            code = f"{status} " if status else ""
            raise RuntimeError(f"Prometheus at {self.url} refused the {what} query ({code.strip() or 'error'}): "
                               f"{message}") from None
        except ValueError as exc:  # a 200 whose body is not JSON (requests' JSONDecodeError is a ValueError too)
            raise RuntimeError(f"the answer from Prometheus at {self.url} to the {what} query is not Prometheus "
                               f"JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
        except requests.exceptions.RequestException as exc:
            cause = str(exc)
            # with read=0 urllib3 reports a read timeout as a ConnectionError whose text says "timed out"
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in cause.lower():
                raise TimeoutError(f"no answer from Prometheus at {self.url} within the {self.timeout_s:g} s "
                                   f"timeout (timeout_s) to the {what} query") from None
            if "refused" in cause.lower():
                detail = "connection refused"
            else:
                detail = (cause.strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConnectionError(f"cannot reach Prometheus at {self.url}: {detail}") from None
        except (KeyError, TypeError) as exc:
            raise RuntimeError(f"the answer from Prometheus at {self.url} to the {what} query has no "
                               f"data.result ({type(exc).__name__}: {exc})") from None
