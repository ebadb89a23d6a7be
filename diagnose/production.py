"""Production's side of the verdict: the serving system's own latency across the deploy, from the run folder's
Prometheus evidence, judged on its own (`stats.production_verdict`) and joined to the lab's (`stats.joint_verdict`).

The lab replay cannot reproduce a memory limit that OOM-kills, a CPU limit cut at the deploy, GPU clocks capped
by heat or a queue that grows under load; production's own latency can show them. It counts only when the
signals cover both sides of the deploy and the collector could put a CI on the change.
"""

from __future__ import annotations

from diagnose.core import stats
from diagnose.core.report import Production, Timeline, Timelines

PARTS = ("queue", "compute", "preprocess", "postprocess")


def production_latency(prometheus: dict) -> Production | None:
    """evidence/prometheus.json -> Production, or None when it has no latency change across the deploy."""
    if prometheus.get("status") != "ok":
        return None
    data = prometheus.get("data") or {}
    lat = data.get("latency") or {}
    change = lat.get("change")
    if not change:
        return None
    ci = (float(change["ci_pct"][0]), float(change["ci_pct"][1]))
    return Production(
        source="prometheus", server=lat.get("server"), server_label=lat.get("server_label"), metric=lat["metric"],
        statistic=change["statistic"], before_ms=change["before_ms"], after_ms=change["after_ms"],
        change_pct=change["pct"], ci_pct=ci, verdict=stats.production_verdict(change["pct"], ci),
        deployed_at=data.get("deployed_at"), windows=data.get("windows") or {}, change_point=lat.get("change_point"),
        parts={role: lat[role] for role in PARTS if lat.get(role)}, requests=lat.get("requests") or {},
    )


# name in the evidence -> (label, unit): the signals an incident report plots around the deploy
TIMELINE_SERIES = {
    "latency_p99_ms": ("production p99 latency", "ms"),
    "latency_p50_ms": ("production p50 latency", "ms"),
    "latency_avg_ms": ("production average latency", "ms"),
    "throttled_ratio": ("CPU throttled share of CFS periods", "ratio"),
    "memory_working_set_bytes": ("memory working set (peak over containers)", "bytes"),
    "restarts": ("container restarts since the window began", "count"),
    "gpu_sm_clock_mhz": ("GPU SM clock", "MHz"),
}


def _unix(value) -> float | None:
    from diagnose.core.times import parse_time

    dt = parse_time(value)
    return dt.timestamp() if dt else None


def production_timelines(prometheus: dict) -> Timelines | None:
    """evidence/prometheus.json -> the signals over time (latency's `timeline`, the containers' and GPU's
    `timelines`), each a Timeline with the same `t` as its evidence; None when the evidence holds none."""
    if prometheus.get("status") != "ok":
        return None
    data = prometheus.get("data") or {}
    lat = data.get("latency") or {}
    found: list[tuple[str, list, list]] = []
    timeline = lat.get("timeline") or {}
    for key in ("p99_ms", "p50_ms", "avg_ms"):
        if timeline.get(key) and any(v is not None for v in timeline[key]):
            found.append((f"latency_{key}", timeline["t"], timeline[key]))
    others = data.get("timelines") or {}
    for name in ("throttled_ratio", "memory_working_set_bytes", "restarts", "gpu_sm_clock_mhz"):
        if others.get(name) and any(v is not None for v in others[name]):
            found.append((name, others["t"], others[name]))
    if not found:
        return None
    series = tuple(
        Timeline(name, *TIMELINE_SERIES[name], t=tuple(float(x) for x in t),
                 values=tuple(None if v is None else float(v) for v in values),
                 limit=data.get("memory_limit_bytes") if name == "memory_working_set_bytes" else None)
        for name, t, values in found)
    return Timelines("prometheus", _unix(data.get("deployed_at")), _unix((lat.get("change_point") or {}).get("at")),
                     series)
