"""The numbers of each group of series, before vs after the deploy: containers (CPU throttling and use, memory
against the limit, OOM kills, restarts), the GPU (DCGM clocks, throttle reasons, heat, power) and latency
(p50/p99 per window, the p99 timeline and its change point); and the containers' and GPU's signals point by
point across both windows (`timelines`, for plots).

Each reader appends a note for what it could not find, so a missing exporter is said, never guessed.
"""

from __future__ import annotations

import math
import re

import numpy as np

from collectors.gpu_evidence import REASON_SHARE
from collectors.gpu_readings import decode_reasons
from collectors.prometheus_change import window_change
from collectors.prometheus_change_points import change_points
from collectors.prometheus_format import bytes_text, iso_time, rounded
from collectors.prometheus_math import counter_deltas, histogram_quantile, increase, make_grid
from collectors.prometheus_selection import CADVISOR, DCGM, KSM, Target
from collectors.serving_metrics import COUNTERS, HISTOGRAM, SUMMARY, Preset, detect, sample_names, unit_to_ms

THROTTLING_HIGH = 0.25      # kubernetes-mixin's CPUThrottlingHigh threshold
MIN_STEP_PCT = 10.0         # a smaller shift in p99 is not called a jump
MIN_THROTTLE_PERIODS = 10   # a container with fewer CFS periods in the window is not named the worst


def _container_key(labels) -> tuple:
    labels = dict(labels)
    return labels.get("namespace"), labels.get("pod"), labels.get("container")


def _instance_key(labels) -> tuple:
    """A container's key plus cAdvisor's instance labels: a restarted container is a new series (new `id` and
    `name`), and each instance's samples must be kept (the peak before an OOM kill is in the old one)."""
    labels = dict(labels)
    return _container_key(labels) + (labels.get("id"), labels.get("name"))


class Windows:
    """The grid around the deploy, and which of its points are before and after it (counters and
    gauges differ at the deploy instant)."""

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


def container_numbers(group: dict, w: Windows, notes: list[str], target: Target) -> dict:
    """cAdvisor and kube-state-metrics: CPU throttling and use, memory vs limit, OOM kills, restarts."""
    by_name: dict[str, dict] = {}
    for (name, labels), values in group.items():
        by_name.setdefault(name, {})[_instance_key(labels)] = values
    out: dict = {}

    throttled, periods = by_name.get(CADVISOR[0], {}), by_name.get(CADVISOR[1], {})
    ratio = {"before": None, "after": None, "worst_after": None}
    if periods:
        for side, mask in w.masks():
            num = [increase(v, w.grid, mask) for v in throttled.values()]
            den = [increase(v, w.grid, mask) for v in periods.values()]
            num, den = [x for x in num if x is not None], [x for x in den if x is not None]
            if den and sum(den) > 0 and num:
                ratio[side] = rounded(sum(num) / sum(den), 4)
        worst = None
        for key, v in periods.items():
            den = increase(v, w.grid, w.after)
            num = increase(throttled[key], w.grid, w.after) if key in throttled else None
            if den and den >= MIN_THROTTLE_PERIODS and num is not None and (worst is None or num / den > worst[2]):
                worst = (key[1], key[2], num / den)
        if worst:
            ratio["worst_after"] = {"pod": worst[0], "container": worst[1], "ratio": rounded(worst[2], 4)}
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
                cores[side] = rounded(used / busy, 4)
                running[side] = rounded(busy / w.window_s, 2)
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
            notes.append(f"the containers' memory limits differ ({', '.join(bytes_text(c) for c in current)}): "
                         "the smallest is reported")
    else:
        notes.append(f"no {KSM[0]}{{resource=\"memory\"}} series for {target.describe()}: memory limit unknown")
    out["memory_limit_bytes"] = limit
    headrooms = [(limits[k[:3]][1] - peak) / limits[k[:3]][1] for k, peak in peaks["after"].items()
                 if k[:3] in limits and limits[k[:3]][1] > 0]
    out["memory_headroom_after"] = rounded(min(headrooms), 4) if headrooms else None

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


def gpu_numbers(group: dict, w: Windows, notes: list[str], target: Target) -> dict:
    """DCGM: SM clock before vs after, utilization, and heat, power and throttle reasons after."""

    def values(name: str, mask) -> np.ndarray:
        found = [v[mask] for (n, _), v in group.items() if n == name]
        flat = np.concatenate(found) if found else np.array([])
        return flat[~np.isnan(flat)]

    def stat(name, mask, fn, digits=1):
        v = values(name, mask)
        return rounded(fn(v), digits) if len(v) else None

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


MAX_TIMELINE_POINTS = 600  # a longer grid is thinned evenly, so the evidence file stays small
HOLD_S = 300                # a gauge's sample stands for the points after it up to Prometheus's default lookback


def _held(v: np.ndarray, grid: np.ndarray, hold_s: float = HOLD_S) -> np.ndarray:
    """A gauge on the grid with the gaps inside its samples filled by the last sample less than `hold_s` old, as
    query_range shows a series scraped less often than the step (dcgm-exporter, kube-state-metrics every 60 s);
    never past its last sample, so a file and a live query agree except at a series' end."""
    valid = ~np.isnan(v)
    if not valid.any():
        return v
    last = np.maximum.accumulate(np.where(valid, np.arange(len(v)), -1))
    inside = (last >= 0) & (np.arange(len(v)) <= np.flatnonzero(valid)[-1])
    fill = inside & ~valid & (grid - grid[np.maximum(last, 0)] < hold_s)
    out = v.copy()
    out[fill] = v[last[fill]]
    return out


def _stacked(rows: list[np.ndarray], fn) -> np.ndarray:
    """fn over the series at each grid point (NaN where none has a value)."""
    matrix = np.vstack(rows)
    found = ~np.all(np.isnan(matrix), axis=0)
    out = np.full(matrix.shape[1], np.nan)
    if found.any():
        out[found] = fn(matrix[:, found], axis=0)
    return out


def _thinned(n: int, most: int = MAX_TIMELINE_POINTS) -> np.ndarray:
    """The grid indices a timeline keeps: all, or `most` spread evenly from the first to the last."""
    return np.arange(n) if n <= most else np.unique(np.round(np.linspace(0, n - 1, most)).astype(int))


def timelines(containers: dict, gpu: dict, w: Windows, most: int = MAX_TIMELINE_POINTS) -> dict | None:
    """The containers' and GPU's signals at each grid point across both windows, for plots: `t` (unix seconds),
    `throttled_ratio` (summed throttled over summed CFS periods of the step), `memory_working_set_bytes` (the
    largest container), `restarts` (cumulative since the first point, summed over containers, reset-aware) and
    `gpu_sm_clock_mhz` (the median over GPUs); None at a point without data, a key left out without its metric,
    None without any. A grid of more than `most` points is thinned evenly: the ratio then covers the steps since
    the previous kept point and the memory is their peak."""
    grid = w.grid
    keep = _thinned(len(grid), most)
    spans = [(int(a) + 1, int(b) + 1) for a, b in zip(np.concatenate([[keep[0] - 1], keep[:-1]]), keep, strict=True)]

    def series(group: dict, name: str) -> list[np.ndarray]:
        return [v for (n, _), v in group.items() if n == name]

    def summed(rows: list[np.ndarray]) -> np.ndarray:
        return _stacked([counter_deltas(v, grid)[0] for v in rows], np.nansum)

    out: dict = {}
    throttled, periods = series(containers, CADVISOR[0]), series(containers, CADVISOR[1])
    if throttled and periods:
        num, den = summed(throttled), summed(periods)
        ratio = []
        for a, b in spans:
            n, d = num[a:b], den[a:b]
            n_sum, d_sum = float(np.nansum(n)), float(np.nansum(d))
            ok = d_sum > 0 and np.any(~np.isnan(n))
            ratio.append(rounded(n_sum / d_sum, 4) if ok else None)
        out["throttled_ratio"] = ratio
    ws = series(containers, CADVISOR[3])
    if ws:
        peak = _stacked([_held(v, grid) for v in ws], np.nanmax)
        out["memory_working_set_bytes"] = [None if np.all(np.isnan(peak[a:b])) else int(np.nanmax(peak[a:b]))
                                           for a, b in spans]
    restarts = series(containers, KSM[1])
    if restarts:
        seen = _stacked([_held(v, grid) for v in restarts], np.nanmax)
        total = np.cumsum(np.nan_to_num(summed(restarts)))
        out["restarts"] = [None if np.isnan(seen[i]) else int(round(total[i])) for i in keep]
    clocks = series(gpu, DCGM[0])
    if clocks:
        median = _stacked([_held(v, grid) for v in clocks], np.nanmedian)
        out["gpu_sm_clock_mhz"] = [None if np.isnan(median[i]) else int(round(median[i])) for i in keep]
    if not out:
        return None
    return {"t": [int(grid[i]) for i in keep], **out}


def _empty(metric: str | None) -> dict:
    return {"metric": metric, "p50_ms": _nones(), "p99_ms": _nones(), "requests": _nones(), "change_point": None,
            "change_points": [], "timeline": None, "change": None}


def latency_numbers(group: dict, w: Windows, notes: list[str], target: Target, user_metric: str | None,
                    tolerance_s: float) -> dict:
    """The serving system's latency (collectors/serving_metrics.py picks the preset): p50/p99 per window from
    a histogram or a summary, else the average from counters; the p99 timeline and its change point (histograms);
    and the queue/compute (pre/postprocess) parts where the server splits them. Keys: `server`, `metric`,
    `statistic` ("quantiles" or "average"), `unit` ("ms"), `p50_ms`, `p99_ms`, `avg_ms`, `requests`, the parts'
    roles, `change_point(s)`, `timeline`, and `left_out_routes` (the probe and scrape routes whose series were left
    out, so a dashboard can leave them out too)."""
    group, probes = _without_probes(group)
    if probes:
        notes.append(f"left out the latency series of {len(probes)} probe and scrape routes ({', '.join(probes[:3])}"
                     f"{', ...' if len(probes) > 3 else ''}): health checks and /metrics are not requests")
    preset = detect(group, user_metric)
    if user_metric and (preset is None or preset.name != "user"):
        instead = "" if preset is None else f"; read {preset.metric} instead" if preset.name == "discovered" else \
            f"; read {preset.label}'s {preset.metric} instead"
        notes.append(f"no {user_metric} series (histogram, summary or _sum/_count counters) for "
                     f"{target.describe()}{instead}")
    if preset is None:
        if not user_metric:
            notes.append(f"no serving latency series for {target.describe()} (none of the serving presets' "
                         "metrics, docs/signals.md): latency unknown")
        return {"server": None, "server_label": None, "statistic": None, "unit": "ms", **_empty(user_metric),
                "avg_ms": _nones(), "left_out_routes": probes}
    if preset.name == "user" and not unit_to_ms(user_metric)[1]:
        notes.append(f"{user_metric}: no unit suffix (_seconds, _ms, _us): taken as seconds")
    if preset.name == "discovered":
        parts = "".join(f", {role} {metric}" for role, metric in preset.parts)
        notes.append(f"no serving preset's latency series for {target.describe()}: read the {preset.kind} "
                     f"{preset.metric}{parts}, found by its name (set deployment.latency_metric to choose another)"
                     + ("" if unit_to_ms(preset.metric)[1] else "; no unit suffix: taken as seconds"))
    out = {"server": preset.name, "server_label": preset.label, "statistic": "average" if preset.kind == COUNTERS
           else "quantiles", "unit": "ms", **_component(preset, preset.metric, preset.count, group, w, notes, target,
                                                        tolerance_s), "left_out_routes": probes}
    names = {name for name, _ in group}
    for role, metric in preset.parts:
        if not names & set(sample_names(metric, preset.kind)):
            continue  # the server does not export this part here
        part = _component(preset, metric, preset.count, group, w, [], target, tolerance_s)
        if preset.kind == COUNTERS:
            out[role] = {"metric": metric, "statistic": "average", **part["avg_ms"]}
        else:
            out[role] = {"metric": metric, "statistic": "p99", **part["p99_ms"]}
    if preset.name == "torchserve" and "queue" in out:  # its inference latency includes the queue
        total, queue = out["avg_ms"], out["queue"]
        out["compute"] = {"metric": f"{preset.metric} - {queue['metric']}", "statistic": "average",
                          **{s: rounded(total[s] - queue[s], 2) if total[s] is not None and queue[s] is not None
                             else None for s in ("before", "after")}}
    return out


# the labels a latency series names its route by, and the routes that are a kubelet's or Prometheus's, not users'
ROUTE_LABELS = ("handler", "route", "path", "endpoint", "uri", "url", "http_route", "http_target", "url_path")
PROBE_WORDS = ("health", "healthz", "healthcheck", "ready", "readyz", "readiness", "live", "livez", "liveness", "ping",
               "metrics", "status")  # a route's last path segment that makes it a probe's (diagnose.grafana reads it too)
PROBE_ROUTE = re.compile(rf"(?:^|/)(?:{'|'.join(PROBE_WORDS)})(?:$|[/?])", re.IGNORECASE)


def _without_probes(group: dict) -> tuple[dict, list[str]]:
    """`group` less the series of probe and scrape routes (a kubelet's /healthz, Prometheus's /metrics), and those
    routes: they are frequent and fast, so mixed into the requests' histogram they drag its quantiles down and
    dilute a regression. Kept when nothing else would be left."""
    kept, probes = {}, set()
    for key, series in group.items():
        labels = dict(key[1])
        route = next((labels[k] for k in ROUTE_LABELS if k in labels), None)
        if route is not None and PROBE_ROUTE.search(route):
            probes.add(route)
        else:
            kept[key] = series
    if not probes or not any(name.endswith(("_bucket", "_count")) for name, _ in kept):
        return group, []
    return kept, sorted(probes)


def _nones() -> dict:
    return {"before": None, "after": None}


def _component(preset: Preset, metric: str, count: str | None, group: dict, w: Windows, notes: list[str],
               target: Target, tolerance_s: float) -> dict:
    if preset.kind == HISTOGRAM:
        return {**_histogram(group, w, notes, target, metric, preset.to_ms, tolerance_s), "avg_ms": _nones()}
    if preset.kind == SUMMARY:
        return {**_summary(group, w, notes, target, metric, preset.to_ms, tolerance_s), "avg_ms": _nones()}
    return _counters(group, w, notes, target, metric, count, preset.to_ms, tolerance_s)


def _summary(group: dict, w: Windows, notes: list[str], target: Target, metric: str, to_ms: float,
             tolerance_s: float) -> dict:
    """A summary's own quantiles: per window, the mean of the quantile over its points and series; requests
    from `_count`; the p99 timeline (the mean over series at each point), its change point and change."""
    out = _empty(metric)
    per_point: dict[str, np.ndarray] = {}
    for q, key in ((0.5, "p50_ms"), (0.99, "p99_ms")):
        rows = [v for (name, labels), v in group.items() if name == metric and _quantile(labels) == q]
        if not rows:
            continue
        matrix = np.vstack(rows)
        with np.errstate(all="ignore"):
            per_point[key] = np.where(np.all(np.isnan(matrix), axis=0), np.nan, np.nanmean(matrix, axis=0)) * to_ms
        for side, mask in w.gauge_masks():
            cols = matrix[:, mask]
            if np.any(~np.isnan(cols)):
                out[key][side] = rounded(float(np.nanmean(cols)) * to_ms, 2)
    if not per_point:
        notes.append(f"no {metric} quantile 0.5 or 0.99 series for {target.describe()}: latency unknown")
    for side, mask in w.masks():
        n = _increases([v for (name, _), v in group.items() if name == f"{metric}_count"], w, mask)
        out["requests"][side] = int(round(sum(n))) if n else None
    head = "p99_ms" if "p99_ms" in per_point else "p50_ms" if per_point else None
    if head:
        values = per_point[head]
        live = ~np.isnan(values)
        t = [float(x) for x in w.grid[live]]
        out["timeline"] = {"t": t, **{k: [rounded(float(x), 2) for x in v[live]] for k, v in per_point.items()}}
        _find_change_points(out, t, list(values[live]), head[:3], w, tolerance_s)
        out["change"] = _change(np.nan_to_num(values)[:, None], live, w, lambda rows: float(rows.mean()), head[:3],
                                gauge=True)
    return out


def _increases(series: list, w: Windows, mask) -> list[float]:
    """Each counter series' reset-aware increase over the window `mask`, where it has one."""
    return [x for v in series if (x := increase(v, w.grid, mask)) is not None]


def _quantile(labels) -> float | None:
    try:
        return float(dict(labels).get("quantile", "nan"))
    except ValueError:
        return None


def _summed_deltas(series: list, grid: np.ndarray) -> np.ndarray:
    """The series' reset-aware increases step by step, summed over the series (NaN where none has one)."""
    rows = np.vstack([counter_deltas(v, grid)[0] for v in series])
    return np.where(np.all(np.isnan(rows), axis=0), np.nan, np.nansum(rows, axis=0))


def _counters(group: dict, w: Windows, notes: list[str], target: Target, metric: str, count: str | None,
              to_ms: float, tolerance_s: float) -> dict:
    """A cumulative time counter over a request counter: the average per window, increase(time) /
    increase(requests) summed over the deployment's series (reset-aware); the average's timeline step by step,
    its change point and change."""
    out = {**_empty(metric), "avg_ms": _nones()}
    times = [v for (name, _), v in group.items() if name == metric]
    counts = [v for (name, _), v in group.items() if name == count]
    if not times or not counts:
        notes.append(f"no {metric} and {count} series for {target.describe()}: latency unknown")
        return out
    for side, mask in w.masks():
        t, n = _increases(times, w, mask), _increases(counts, w, mask)
        if t and n:
            out["requests"][side] = int(round(sum(n)))
            if sum(n) > 0:
                out["avg_ms"][side] = rounded(sum(t) / sum(n) * to_ms, 2)
    spent, served = _summed_deltas(times, w.grid), _summed_deltas(counts, w.grid)
    live = ~np.isnan(spent) & ~np.isnan(served) & (np.nan_to_num(served) > 0)
    with np.errstate(all="ignore"):
        avg = spent / served * to_ms
    t = [float(x) for x in w.grid[live]]
    out["timeline"] = {"t": t, "avg_ms": [rounded(float(x), 2) for x in avg[live]]}
    _find_change_points(out, t, list(avg[live]), "average", w, tolerance_s)
    rows = np.column_stack([np.nan_to_num(spent), np.nan_to_num(served)])
    out["change"] = _change(rows, live, w, lambda r: float(r[:, 0].sum() / r[:, 1].sum() * to_ms)
                            if r[:, 1].sum() > 0 else math.nan, "average")
    return out


def _histogram(group: dict, w: Windows, notes: list[str], target: Target, metric: str, to_ms: float,
               tolerance_s: float) -> dict:
    """A latency histogram: p50/p99 per window, the p99 timeline and where it jumped."""
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
    out = _empty(metric)
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
            out["p50_ms"][side], out["p99_ms"][side] = rounded(p50, 2), rounded(p99, 2)
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
    out["timeline"] = {"t": t, "p50_ms": [rounded(v, 2) for v in p50s], "p99_ms": [rounded(v, 2) for v in p99s]}
    _find_change_points(out, t, p99s, "p99", w, tolerance_s)
    steps = np.nan_to_num(matrix).T  # (grid points, buckets)
    live = steps[:, -1] > 0

    def p99_of(rows: np.ndarray) -> float:
        return histogram_quantile(0.99, list(zip(les, rows.sum(axis=0), strict=True))) * to_ms

    out["change"] = _change(steps, live, w, p99_of, "p99")
    return out


def _change(rows: np.ndarray, live: np.ndarray, w: Windows, stat, statistic: str, gauge: bool = False) -> dict | None:
    """The headline statistic's change across the deploy with its CI (collectors/prometheus_change.py), from the
    steps of each window that saw requests."""
    before, after = (w.gauge_before, w.gauge_after) if gauge else (w.before, w.after)
    found = window_change(rows[before & live], rows[after & live], stat)
    return found and {"statistic": statistic, **found}


def _find_change_points(out: dict, t: list[float], values: list[float], statistic: str, w: Windows,
                        tolerance_s: float) -> None:
    """Where the headline statistic's timeline jumped (binary segmentation on its log), into `change_point` (the
    largest upward jump, else the largest) and `change_points`."""
    good = [i for i, v in enumerate(values) if v > 0 and math.isfinite(v)]
    x = np.log([values[i] for i in good])
    found = []
    for cp in change_points(x):
        start = t[good[cp["index"]]] - w.step_s  # the step's start: the first requests of the new level
        before_ms, after_ms = math.exp(cp["left_median"]), math.exp(cp["right_median"])
        step_pct = (after_ms / before_ms - 1) * 100
        if abs(step_pct) < MIN_STEP_PCT:
            continue
        lag = start - w.deploy
        found.append({"at": iso_time(start), "lag_s": round(lag, 1), "aligned_with_deploy": abs(lag) <= tolerance_s,
                      "step_pct": round(step_pct, 1), "before_ms": rounded(before_ms, 2), "after_ms": rounded(after_ms, 2),
                      "statistic": statistic, "gain": cp["gain"]})
    if found:
        ups = [c for c in found if c["step_pct"] > 0]
        main = max(ups or found, key=lambda c: c["gain"])
        out["change_point"] = {k: v for k, v in main.items() if k != "gain"} | {
            "tolerance_s": tolerance_s,
            "method": f"binary segmentation on log {statistic} per step (BIC-like penalty, robust noise)"}
    out["change_points"] = [{k: v for k, v in c.items() if k != "gain"} for c in found]
