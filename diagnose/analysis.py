"""Evidence in a run folder -> one report: statistics, attribution, ranked hypotheses.

This is the only place a report is made, for `compare` and `analyze` alike, and it reads nothing but the
run folder, so a report can always be remade from what was saved.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from collectors.environment import mismatches
from diagnose import __version__, stats
from diagnose.attribution import NN, NO, ON, OO, attribute
from diagnose.core.errors import UserError
from diagnose.core.runfolder import SAMPLES, check_complete, read_json
from diagnose.hypotheses import Context, rank
from diagnose.verify import fix_section

SCHEMA_VERSION = "1.0"
THROTTLED_BENCHMARK = 0.05  # share of CFS periods throttled during the benchmark that earns a warning
EVIDENCE_SOURCES = ("versions", "requests", "environment", "benchmark")


def _cell_summaries(samples: pd.DataFrame) -> dict:
    out = {}
    for key, group in samples.groupby("cell", sort=True):
        out[key] = {
            "n": int(len(group)),
            "p50_ms": float(group["latency_ms"].median()),
            "preprocess_p50_ms": float(group["preprocess_ms"].median()),
            "infer_p50_ms": float(group["infer_ms"].median()),
            "input_elements_mean": float(group["input_elements"].mean()),
            "input_signature": str(group["input_signature"].mode().iloc[0]),
        }
    return out


def _summary_line(model: str, old: str, new: str, verdict: str, delta: stats.Delta) -> str:
    lo, hi = delta.p50_pct_ci
    change = f"p50 {delta.p50_pct:+.1f}% (95% CI {lo:+.1f}% .. {hi:+.1f}%), p99 {delta.p99_pct:+.1f}%, p = {delta.p_value:.2g}"
    words = {
        "regression": f"{model} {new} is slower than {old}",
        "improvement": f"{model} {new} is faster than {old}",
        "no_regression": f"{model} {new} is as fast as {old} (within ±{stats.EQUIVALENCE_PCT:g}%)",
        "inconclusive": f"{model} {new} vs {old}: not enough evidence either way",
    }
    return f"{words[verdict]}: {change}"


# absent when a stage was skipped (--no-profile) or the run folder predates the source
OPTIONAL_SOURCES = ("cgroup", "gpu", "kubernetes", "prometheus", "profile", "drift", "variants")


def load_evidence(run_dir: Path) -> dict:
    evidence = {name: read_json(run_dir / "evidence" / f"{name}.json") for name in EVIDENCE_SOURCES}
    for name in OPTIONAL_SOURCES:
        path = run_dir / "evidence" / f"{name}.json"
        evidence[name] = read_json(path) if path.exists() else {"status": "unavailable", "reason": "stage skipped"}
    return evidence


def _profile_section(profile: dict, rows: int = 10) -> dict | None:
    """The part of the trace diff that goes into report.json: findings, signals, the top rows of each table."""
    if profile.get("status") != "ok":
        return None
    return {
        "findings": profile["findings"],
        "signals": profile["signals"],
        "tables": {name: table[:rows] for name, table in profile["tables"].items()},
        "traces": profile["traces"],
        "logdir": profile["logdir"],
    }


def _drift_section(run_dir: Path, drift: dict, samples: pd.DataFrame, seed: int) -> dict | None:
    """Schema changes, drifted features, and how much of the latency change the input shift explains."""
    from diagnose.drift_stage import SIZES_FILE
    from diagnose.shift_latency import tie_to_latency

    if drift.get("status") != "ok":
        return None
    sizes_path = run_dir / SIZES_FILE
    if drift.get("identical"):
        tie = {"status": "unavailable", "reason": "both versions replayed the same requests"}
    elif sizes_path.exists():
        tie = tie_to_latency(samples, pd.read_parquet(sizes_path), drift.get("drifted"), seed=seed)
    else:
        tie = {"status": "unavailable", "reason": f"{SIZES_FILE} is missing"}
    features = drift.get("features") or []
    return {
        "identical": drift.get("identical"),
        "schema_changes": drift.get("schema_changes") or [],
        "expected_schema": drift.get("expected_schema") or [],
        "drifted": [f for f in features if f.get("drift")],
        "features_tested": sum(1 for f in features if f.get("status") == "ok"),
        "settings": drift.get("settings"),
        "latency_tie": tie,
    }


def analyze(run_dir: Path, allow_env_mismatch: bool = False) -> dict:
    """Build report.json's content from the run folder."""
    run_dir = Path(run_dir)
    check_complete(run_dir)
    run = read_json(run_dir / "run.json")
    evidence = load_evidence(run_dir)
    try:
        samples = pd.read_parquet(run_dir / SAMPLES)
    except Exception as exc:
        raise UserError(f"cannot read samples: {exc}", run_dir / SAMPLES) from None

    env = evidence["environment"]
    env_diff = mismatches(env["old"], env["new"])
    warnings: list[str] = []
    if env_diff:
        if not (allow_env_mismatch or run.get("allow_env_mismatch")):
            raise UserError(
                "the old and new sample sets were measured in different environments ("
                + "; ".join(env_diff) + "); pass --allow-env-mismatch to compare them anyway",
                run_dir / "evidence" / "environment.json",
            )
        warnings.append("sample sets come from different environments: " + "; ".join(env_diff))

    cells = {key: group["latency_ms"].to_numpy() for key, group in samples.groupby("cell")}
    if OO not in cells or NN not in cells:
        missing = [k for k in (OO, NN) if k not in cells]
        raise UserError(f"no samples for {', '.join(missing)}", run_dir / SAMPLES)
    old, new = cells[OO], cells[NN]
    seed = int(run.get("seed", 0))
    old_stats, new_stats = stats.summarize(old), stats.summarize(new)
    delta = stats.relative_change(old, new, seed=seed)
    verdict = stats.verdict(delta)
    cgroup = evidence["cgroup"]
    if cgroup.get("status") == "ok" and (cgroup["data"].get("throttled_ratio") or 0) > THROTTLED_BENCHMARK:
        warnings.append(f"the benchmark itself ran CPU-throttled ({cgroup['summary'][0]}): latencies are inflated on both "
                        "sides alike (cells interleave), so the comparison holds but absolute figures do not")
    sizes = {key: group["input_elements"].to_numpy() for key, group in samples.groupby("cell")}
    warnings += stats.noise_warnings(old, new, old_sizes=sizes[OO], new_sizes=sizes[NN])

    unavailable = dict(evidence["benchmark"].get("unavailable", {}))
    if evidence["requests"].get("identical"):
        # One request log for both versions: the crossed cells are the diagonal ones, input effect is nil.
        cells.setdefault(NO, cells[NN])
        cells.setdefault(ON, cells[OO])
    attribution = attribute(cells, unavailable, seed=seed)
    if evidence["requests"].get("identical"):
        attribution["note"] = "both versions replayed the same requests: the input effect is zero by design"
    cell_summaries = _cell_summaries(samples)
    drift = _drift_section(run_dir, evidence["drift"], samples, seed)

    ctx = Context(
        verdict=verdict, delta=delta.to_dict(), attribution=attribution,
        versions=evidence["versions"], requests=evidence["requests"], cells=cell_summaries,
        environment_diff=env_diff, profile=_profile_section(evidence["profile"]), drift=drift,
        signals={name: evidence[name] for name in ("cgroup", "gpu", "kubernetes", "prometheus")},
    )
    hypotheses = [h.to_dict() for h in rank(ctx)]

    slo_p99 = evidence["versions"]["new"].get("slo", {}).get("p99_ms")
    fix = fix_section(run_dir, evidence["versions"]["new"].get("slo", {}), seed)
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "diagnose", "version": __version__},
        "model": run["model"],
        "old": run["old"],
        "new": run["new"],
        "verdict": verdict,
        "summary": _summary_line(run["model"], run["old"], run["new"], verdict, delta),
        "latency": {
            "unit": "ms",
            "old": old_stats.to_dict(),
            "new": new_stats.to_dict(),
            "delta": delta.to_dict(),
            "noise_floor_pct": stats.NOISE_FLOOR_PCT,
            "alpha": stats.ALPHA,
        },
        "attribution": attribution,
        "cells": cell_summaries,
        "hypotheses": hypotheses,
        "profile": ctx.profile,
        "drift": drift,
        "fix": fix,
        "collectors": {name: {k: v for k, v in evidence[name].items() if k in ("status", "reason", "source")}
                       for name in EVIDENCE_SOURCES + OPTIONAL_SOURCES},
        "slo": {"p99_ms": slo_p99, "old_within": bool(old_stats.p99_ms <= slo_p99) if slo_p99 else None,
                "new_within": bool(new_stats.p99_ms <= slo_p99) if slo_p99 else None},
        "warnings": warnings,
        "run": {
            "dir": str(run_dir),
            "started_at": run.get("started_at"),
            "budget_s": run.get("budget_s"),
            "rounds": evidence["benchmark"].get("rounds"),
            "elapsed_s": evidence["benchmark"].get("elapsed_s"),
            "stopped": evidence["benchmark"].get("stopped"),
            "registry": run.get("registry"),
        },
    }
    return report

