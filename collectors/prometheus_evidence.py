"""Prometheus series -> Evidence: the deployment's containers, GPU and latency, the hour before the deploy vs
the hour after, with one summary line per finding (`prometheus_evidence`, shared by the file and live paths)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from collectors.gpu_evidence import CLOCK_STEADY_PCT
from collectors.gpu_readings import REASON_WORDS
from collectors.openmetrics import Series, SeriesKey
from collectors.prometheus_format import bytes_text, clock_time, duration, iso_time, ms_text, pct_text, plural
from collectors.prometheus_groups import Windows, container_numbers, gpu_numbers, latency_numbers, timelines
from collectors.prometheus_math import on_grid
from collectors.prometheus_pods import POD_LABELS, PodSelection, listed, no_match_reason, pods_seen
from collectors.prometheus_selection import Target, select_series
from diagnose.core.evidence import Evidence
from diagnose.core.times import parse_time

SOURCE = "prometheus"
DEFAULT_LATENCY_METRIC = "http_request_duration_seconds"  # the generic preset's (serving_metrics.PRESETS "http")
WINDOW = timedelta(hours=1)
STEP_S = 30
ALIGN_TOLERANCE_S = 600     # a change point this close to the deploy "lines up" with it


def window_seconds(window) -> float:
    """A window given as a timedelta or in seconds, in seconds."""
    return window.total_seconds() if isinstance(window, timedelta) else float(window)


def prometheus_evidence(series: dict[SeriesKey, Series], deployed_at, *, target: Target | None = None,
                        latency_metric: str | None = None, window=WINDOW, step_s: int = STEP_S,
                        tolerance_s: float = ALIGN_TOLERANCE_S, origin: dict | None = None,
                        lookback_s: float | None = None, extra_notes: list[str] | tuple = (),
                        parse_stats: dict | None = None, pods: PodSelection | None = None,
                        seen: list[str] | None = None, deployment_name: str | None = None) -> Evidence:
    """Raw series {(name, labels): (timestamps, values)} -> Evidence: before vs after the deploy. See
    docs/signals.md ("Prometheus") for every key. `origin` says where the series came from (file or URL).

    `extra_notes` are what reading the series noted (lines skipped, series dropped) and `parse_stats` a file's
    parse counts (data key `parse`): both go into the evidence as it is made, when there is evidence to make.

    `pods` says how the target's pods were chosen (`collectors.prometheus_pods.choose_pods`; data keys `pods_from`,
    `pods`, `pods_why`). When nothing matches, the reason lists the pods Prometheus saw (`seen`, else those
    in `series`) and how to select them."""
    target = target or Target()
    origin = dict(origin or {})
    where = origin.get("path") or origin.get("url") or "the series"
    deploy = parse_time(deployed_at)
    if deploy is None:
        why = "no deployed_at given" if deployed_at in (None, "") else f"deployed_at {deployed_at!r} is not a time"
        return Evidence.unavailable(SOURCE, f"{why}: Prometheus series are compared before and after the deploy")
    window_s, step_s = window_seconds(window), int(step_s)
    lookback_s = step_s if lookback_s is None else lookback_s
    w = Windows(deploy.timestamp(), window_s, step_s)
    groups = select_series(series, target, latency_metric)
    if not any(groups.values()):
        names = sorted({name for name, _ in series})
        present = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        seen = pods_seen(series, target.namespace) if seen is None else sorted(seen)
        reason = (f"no series for {target.describe()} in {where} (metrics present: {present or 'none'}); "
                  + no_match_reason(pods, seen, target.namespace, deployment_name))
        data = {"target": target.to_dict(), **_pod_data(pods, {}), "pods_seen": seen}
        return Evidence(SOURCE, "unavailable", reason, data=data)
    gridded = {g: {k: on_grid(ts, vs, w.grid, lookback_s) for k, (ts, vs) in items.items()}
               for g, items in groups.items()}
    if not any(np.any(~np.isnan(v)) for items in gridded.values() for v in items.values()):
        starts = [ts[0] for items in groups.values() for ts, _ in items.values() if len(ts)]
        ends = [ts[-1] for items in groups.values() for ts, _ in items.values() if len(ts)]
        covers = f" (the series cover {iso_time(min(starts))} .. {iso_time(max(ends))})" if starts else ""
        return Evidence.unavailable(SOURCE, f"no samples for {target.describe()} in {where} between "
                                            f"{iso_time(w.grid[0])} and {iso_time(w.grid[-1])}{covers}")
    notes: list[str] = []
    data: dict = {
        "origin": origin,
        "deployed_at": iso_time(w.deploy),
        "window_s": window_s,
        "step_s": step_s,
        "windows": {"before": [iso_time(w.deploy - window_s), iso_time(w.deploy)],
                    "after": [iso_time(w.deploy), iso_time(w.deploy + window_s)]},
        "target": target.to_dict(),
        "series_matched": {g: len(items) for g, items in groups.items()},
        **_pod_data(pods, groups),
    }
    data.update(container_numbers(gridded["containers"], w, notes, target))
    data["gpu"] = gpu_numbers(gridded["gpu"], w, notes, target)
    data["latency"] = latency_numbers(gridded["latency"], w, notes, target, latency_metric, tolerance_s)
    data["timelines"] = timelines(gridded["containers"], gridded["gpu"], w)
    data["notes"] = notes + list(pods.notes if pods else ()) + list(extra_notes)
    if parse_stats is not None:
        data["parse"] = parse_stats
    pods_line = None
    if pods is not None and pods.pods_from == POD_LABELS:
        n = len(pods.pods)
        pods_line = (f"{n} pod{'' if n == 1 else 's'} found by their labels ({pods.selector}) in {POD_LABELS}: "
                     f"{listed(pods.pods)}")
    return Evidence(source=SOURCE, status="ok", data=data, summary=_summary(data, pods_line))


def _pod_data(pods: PodSelection | None, groups: dict) -> dict:
    """`pods_from`, `pods` (kube_pod_labels' pods, else those whose series were selected) and `pods_why`."""
    if pods is not None and pods.pods_from == POD_LABELS:
        names = list(pods.pods)
    else:
        names = sorted({pod for items in groups.values() for _, labels in items
                        if (pod := dict(labels).get("pod") or dict(labels).get("exported_pod"))})
    return {"pods_from": pods.pods_from if pods else None, "pods": names, "pods_why": pods.why if pods else ""}


def _summary(d: dict, pods_line: str | None = None) -> list[str]:
    lines: list[str] = []
    r = d["throttled_ratio"]
    if r["after"] is not None:
        before = f"{pct_text(r['before'])} before" if r["before"] is not None else "no data before"
        line = f"CPU throttled in {pct_text(r['after'])} of CFS periods after the deploy ({before})"
        if d["throttling_high"]:
            line += "; above the 25% at which kubernetes-mixin's CPUThrottlingHigh fires"
            if r["worst_after"]:
                line += f" (worst: pod {r['worst_after']['pod']}, {pct_text(r['worst_after']['ratio'])})"
        lines.append(line)
    c = d["cpu_usage_cores"]
    if c["after"] is not None:
        before = f"{c['before']:.2f} before" if c["before"] is not None else "no data before"
        lines.append(f"CPU use {c['after']:.2f} cores per container after the deploy ({before})")
    m, limit, headroom = d["memory_working_set_bytes"], d["memory_limit_bytes"], d["memory_headroom_after"]
    if m["after"] is not None:
        line = f"memory working set peaked at {bytes_text(m['after'])} after the deploy"
        line += f" ({bytes_text(m['before'])} before)" if m["before"] is not None else ""
        if limit is not None:
            line += f"; limit {bytes_text(limit)}"
            if headroom is not None:
                line += f", {pct_text(max(headroom, 0))} headroom" + (" (at the limit)" if headroom <= 0.02 else "")
        lines.append(line)
    oom, restarts, killed = d["oom_events"], d["restarts"], d["last_terminated_oomkilled"]
    if oom is not None or restarts is not None:
        parts = []
        if oom is not None:
            parts.append(f"{plural(oom, 'OOM event')}" if oom else "no OOM events")
        if restarts is not None:
            parts.append(f"{plural(restarts, 'restart')}" if restarts else "no restarts")
        line = " and ".join(parts) + " after the deploy"
        if killed:
            line += f"; {plural(killed, 'container')} last terminated OOMKilled"
        lines.append(line)
    g = d["gpu"]
    sm = g["sm_clock_mhz"]
    if sm["after"] is not None:
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
    line = _latency_line(lat)
    if line:
        lines.append(line)
    cp = lat["change_point"]
    if cp:
        at = datetime.strptime(cp["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
        rel = "after" if cp["lag_s"] >= 0 else "before"
        what = "average latency" if cp.get("statistic") == "average" else cp.get("statistic", "p99")
        line = (f"the {what} jump began at {clock_time(at)} UTC, {duration(cp['lag_s'])} {rel} the deploy "
                f"({ms_text(cp['before_ms'])} -> {ms_text(cp['after_ms'])} ms, {cp['step_pct']:+.0f}%)")
        if cp["aligned_with_deploy"]:
            line += f": within {duration(cp['tolerance_s'])} of the deploy"
        else:
            line += (f": beyond the {duration(cp['tolerance_s'])} tolerance, so it did not start with the rollout itself; "
                     f"look at what changed at {clock_time(at)} (OOM kills, restarts, traffic)")
        lines.append(line)
    elif lat["timeline"] is not None and lat["timeline"]["t"]:
        what = "average" if lat.get("statistic") == "average" else "p99"
        lines.append(f"no change point in {what} latency around the deploy")
    if pods_line:
        lines.append(pods_line)
    lines.extend(d["notes"])
    return lines


def _latency_line(lat: dict) -> str | None:
    """"average request latency 12 -> 30 ms from Triton nv_inference_request_duration_us (counters); queue 1.0 ->
    19 ms, compute 11 -> 11 ms, the hour before the deploy vs the hour after": the headline statistic (p99 from
    quantiles, else the counters' average), where it came from, and the parts the server splits."""
    p99, p50, avg = lat["p99_ms"], lat["p50_ms"], lat.get("avg_ms") or {"before": None, "after": None}
    average = lat.get("statistic") == "average"
    fig, head = (avg, "average request latency") if average else (p99, "p99 latency")
    if fig["after"] is None:
        return None
    if fig["before"] is not None:
        line = f"{head} {ms_text(fig['before'])} -> {ms_text(fig['after'])} ms"
        change = lat.get("change")
        if change:
            lo, hi = change["ci_pct"]
            line += f" ({change['pct']:+.0f}%, 95% CI {lo:+.0f}% .. {hi:+.0f}%)"
        if not average and p50["before"] is not None and p50["after"] is not None:
            line += f" (p50 {ms_text(p50['before'])} -> {ms_text(p50['after'])} ms)"
    else:
        line = f"{head} {ms_text(fig['after'])} ms after the deploy"
        if not average and p50["after"] is not None:
            line += f" (p50 {ms_text(p50['after'])} ms)"
    if lat.get("server"):
        who = "" if lat["server"] in ("user", "discovered") else f"{lat['server_label']} "
        line += f" from {who}{lat['metric']} ({'counters' if average else 'quantiles'})"
    parts = []
    for role in ("queue", "compute", "preprocess", "postprocess"):
        part = lat.get(role)
        if part and part["before"] is not None and part["after"] is not None:
            stat = "" if part["statistic"] == "average" else f" {part['statistic']}"
            parts.append(f"{role}{stat} {ms_text(part['before'])} -> {ms_text(part['after'])} ms")
    if parts:
        line += "; " + ", ".join(parts)
    return line + (", the hour before the deploy vs the hour after" if fig["before"] is not None else "; none before")
