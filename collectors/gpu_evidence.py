"""GPU readings -> Evidence: per GPU, SM clock before vs after the deploy, throttle reasons, heat, power, load
and co-tenants, with one summary line per finding (`gpu_evidence`, shared by the CSV, JSON and live paths)."""

from __future__ import annotations

import statistics
from datetime import datetime

from collectors.gpu_readings import REASON_BITS, REASON_WORDS, GpuReading, naive_utc
from diagnose.core.evidence import Evidence

SOURCE = "gpu"
# Reasons that say the GPU had nothing to do, or was told to run at these clocks: not a slowdown of the model.
BENIGN_REASONS = frozenset({"GpuIdle", "ApplicationsClocksSetting"})
# A reason counts as active after the deploy when it is set in at least this share of the samples.
REASON_SHARE = 0.20
# A clock change smaller than this (in %) is called steady in the summary.
CLOCK_STEADY_PCT = 3.0
# Utilization at or above this (mean over the samples, in %) is called saturated.
SATURATED_PCT = 90.0


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _busy(readings: list[GpuReading]) -> list[int]:
    """SM clocks of the samples where the GPU was not idle (an idle GPU parks its clock; that is no slowdown)."""
    clocks = [r.sm_clock_mhz for r in readings if r.sm_clock_mhz is not None and "GpuIdle" not in r.reasons]
    return clocks or [r.sm_clock_mhz for r in readings if r.sm_clock_mhz is not None]


def _gpu(index: int, rs: list[GpuReading], deploy: datetime | None, own_pids) -> dict:
    if deploy is not None:
        before = [r for r in rs if r.timestamp < deploy]
        after = [r for r in rs if r.timestamp >= deploy]
    else:
        before, after = [], rs
    busy_all, busy_after = _busy(rs), _busy(after)
    if before and _busy(before):
        baseline, clock_before = "before_deploy", _median(_busy(before))
    else:
        baseline, clock_before = "max_seen", (float(max(busy_all)) if busy_all else None)
    clock_after = _median(busy_after)
    drop = None
    if clock_before and clock_after is not None:
        drop = round((clock_before - clock_after) / clock_before * 100, 1)

    known = [r for r in after if r.reasons_mask is not None]
    shares: dict[str, float] = {}
    for name in REASON_BITS.values():
        n = sum(name in r.reasons for r in known)
        if n:
            shares[name] = round(n / len(known), 3)
    for r in known:  # bits this module has no name for
        for name in r.reasons:
            if name.startswith("Unknown") and name not in shares:
                shares[name] = round(sum(name in k.reasons for k in known) / len(known), 3)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 1) if values else None

    used_after = [r.memory_used_mib for r in after if r.memory_used_mib is not None]
    used_before = [r.memory_used_mib for r in before if r.memory_used_mib is not None]
    totals = [r.memory_total_mib for r in rs if r.memory_total_mib is not None]
    temps = [r.temperature_c for r in after if r.temperature_c is not None]

    foreign = None
    with_procs = [r for r in (after or rs) if r.processes is not None]
    if with_procs:
        seen: dict[int, dict] = {}
        for r in with_procs:
            for p in r.processes:
                if p["pid"] in own_pids:
                    continue
                entry = seen.setdefault(p["pid"], {"pid": p["pid"], "name": p.get("name") or "", "used_mib": None})
                if p.get("used_mib") is not None:
                    entry["used_mib"] = max(entry["used_mib"] or 0, p["used_mib"])
        foreign = sorted(seen.values(), key=lambda p: p["pid"])
    util_after = mean(r.util_pct for r in after)
    return {
        "index": index,
        "name": next((r.name for r in reversed(rs) if r.name), ""),
        "samples_before": len(before),
        "samples_after": len(after),
        "baseline": baseline,
        "sm_clock_mhz_before": clock_before,
        "sm_clock_mhz_after": clock_after,
        "sm_clock_mhz_max": float(max(busy_all)) if busy_all else None,
        "clock_drop_pct": drop,
        "mem_clock_mhz_after": _median(r.mem_clock_mhz for r in after),
        "reasons_after": shares,
        "reasons_recorded": bool(known),
        "temperature_c_after": _median(temps),
        "temperature_c_max_after": max(temps) if temps else None,
        "power_w_after": _round(_median(r.power_w for r in after), 2),
        "util_pct_before": mean(r.util_pct for r in before),
        "util_pct_after": util_after,
        "saturated": None if util_after is None else util_after >= SATURATED_PCT,
        "memory_used_mib_before": max(used_before) if used_before else None,
        "memory_used_mib_after": max(used_after) if used_after else None,
        "memory_total_mib": totals[-1] if totals else None,
        "foreign_processes": foreign,
    }


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _summary(g: dict, deployed: bool) -> list[str]:
    head = f"GPU {g['index']} ({g['name']})" if g["name"] else f"GPU {g['index']}"
    if deployed and not g["samples_after"]:
        return [f"{head}: no samples after the deploy"]
    b, a, drop = g["sm_clock_mhz_before"], g["sm_clock_mhz_after"], g["clock_drop_pct"]
    when = "after the deploy" if deployed else "during the run"
    if a is None:
        clock = "SM clock not recorded"
    elif drop is None:
        clock = f"SM clock {a:.0f} MHz"
    elif abs(drop) < CLOCK_STEADY_PCT:
        ref = f"{b:.0f} before the deploy" if g["baseline"] == "before_deploy" else f"highest seen {b:.0f}"
        clock = f"SM clock steady at {a:.0f} MHz ({ref})"
    elif g["baseline"] == "before_deploy":
        clock = f"SM clock {b:.0f} -> {a:.0f} MHz ({-drop:+.0f}%) {when}"
    else:
        clock = f"SM clock median {a:.0f} MHz {when}, {drop:.0f}% below the highest seen ({b:.0f} MHz)"
    parts = [clock]
    active = [(n, s) for n, s in g["reasons_after"].items() if n not in BENIGN_REASONS and s >= REASON_SHARE]
    bits = {name: bit for bit, name in REASON_BITS.items()}
    active.sort(key=lambda item: (-item[1], -bits.get(item[0], 0)))  # ties: the specific reason before HwSlowdown
    if active:
        words = [f"{REASON_WORDS.get(n, n)} active in {_pct(s)} of samples" if i == 0 else
                 f"{REASON_WORDS.get(n, n)} in {_pct(s)}" for i, (n, s) in enumerate(active)]
        parts.append(", ".join(words))
    elif g["reasons_recorded"]:
        parts.append("no clock throttling")
    else:
        parts.append("throttle reasons not recorded")
    heat = []
    if g["temperature_c_after"] is not None:
        hottest = g["temperature_c_max_after"]
        peak = f" (max {hottest} C)" if hottest > g["temperature_c_after"] + 1 else ""
        heat.append(f"{g['temperature_c_after']:.0f} C{peak}")
    if g["power_w_after"] is not None:
        heat.append(f"{g['power_w_after']:.0f} W")
    if heat:
        parts.append(", ".join(heat))
    lines = [f"{head}: " + "; ".join(parts)]

    load = []
    if g["util_pct_after"] is not None:
        ub = f" ({g['util_pct_before']:.0f}% before)" if g["util_pct_before"] is not None else ""
        busy = f"{g['util_pct_after']:.0f}% busy {when}{ub}"
        if g["saturated"]:
            busy += ": saturated"
            before = g["util_pct_before"]
            if deployed and before is not None and before >= SATURATED_PCT and not g["foreign_processes"]:
                busy += ", and already before the deploy: look for another workload sharing this GPU"
        load.append(busy)
    if g["memory_used_mib_after"] is not None:
        total = f" of {_gib(g['memory_total_mib'])}" if g["memory_total_mib"] else ""
        load.append(f"memory {_gib(g['memory_used_mib_after'])}{total} used")
    if load:
        lines.append(f"GPU {g['index']}: " + "; ".join(load))
    foreign = g["foreign_processes"]
    if foreign:
        procs = ", ".join(f"pid {p['pid']} {p['name'] or '?'}" + (f" ({_gib(p['used_mib'])})" if p["used_mib"] else "")
                          for p in foreign)
        n = len(foreign)
        lines.append(f"GPU {g['index']}: {n} other process{'es' if n != 1 else ''} on the GPU: {procs}")
    elif foreign == []:
        lines.append(f"GPU {g['index']}: no other process on the GPU")
    return lines


def gpu_evidence(readings, deployed_at: datetime | None = None, own_pids=frozenset()) -> Evidence:
    """Per GPU: SM clock before vs after the deploy, the throttle reasons after, heat, power, load, co-tenants.

    With `deployed_at`, samples at or after it are "after" and the baseline is the median SM clock of the
    samples before it; without it (or with no sample before it) every sample is "after" and the baseline is
    the highest SM clock seen. Clock medians leave out samples with GpuIdle set. `own_pids` are the serving
    processes: any other process NVML lists on a GPU is foreign. Data keys: docs/signals.md, section GPU.
    """
    skipped = getattr(readings, "skipped", 0)  # rows of the file parse_nvidia_smi_csv skipped
    readings = list(readings)
    if not readings:
        return Evidence.unavailable(SOURCE, "no GPU samples were recorded")
    deploy = naive_utc(deployed_at)
    own = set(own_pids)
    by_gpu: dict[int, list[GpuReading]] = {}
    for r in sorted(readings, key=lambda r: (r.index, r.timestamp)):
        by_gpu.setdefault(r.index, []).append(r)
    first = min(r.timestamp for r in readings)
    last = max(r.timestamp for r in readings)
    if deploy is not None and last < deploy:
        return Evidence.unavailable(SOURCE, f"no GPU samples after the deploy at {deploy.isoformat(sep=' ')}: "
                                            f"the last one is at {last.isoformat(sep=' ')}")
    gpus = [_gpu(index, rs, deploy, own) for index, rs in by_gpu.items()]

    drops = [g["clock_drop_pct"] for g in gpus if g["clock_drop_pct"] is not None]
    reasons = {n for g in gpus for n, s in g["reasons_after"].items() if s >= REASON_SHARE and n not in BENIGN_REASONS}
    order = list(REASON_BITS.values())
    known_procs = [g["foreign_processes"] for g in gpus if g["foreign_processes"] is not None]
    data = {
        "gpus": gpus,
        "clock_drop_pct": max(drops) if drops else None,
        "throttle_reasons": sorted(reasons, key=lambda n: order.index(n) if n in order else len(order)),
        "foreign_processes": len({p["pid"] for procs in known_procs for p in procs}) if known_procs else None,
        "deployed_at": None if deploy is None else deploy.isoformat(timespec="milliseconds"),
        "first_sample": first.isoformat(timespec="milliseconds"),
        "last_sample": last.isoformat(timespec="milliseconds"),
        "samples": len(readings),
        "skipped_rows": skipped,
    }
    summary = [line for g in gpus for line in _summary(g, deploy is not None)]
    if not known_procs:
        summary.append("processes not recorded (nvidia-smi's --query-gpu CSV has none; live NVML sampling lists them)")
    if skipped:
        summary.append(f"{skipped} malformed row{'s' if skipped != 1 else ''} of the GPU log skipped")
    return Evidence(source=SOURCE, status="ok", data=data, summary=summary)
