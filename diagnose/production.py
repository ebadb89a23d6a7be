"""Production's side of the verdict: the serving system's own latency across the deploy, from the run folder's
Prometheus evidence, judged on its own (`stats.production_verdict`) and joined to the lab's (`stats.joint_verdict`).

The lab replay cannot reproduce a memory limit that OOM-kills, a CPU limit cut at the deploy, GPU clocks capped
by heat or a queue that grows under load; production's own latency can show them. It counts only when the
signals cover both sides of the deploy and the collector could put a CI on the change.
"""

from __future__ import annotations

from diagnose.core import stats
from diagnose.core.report import Production

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
