"""Evidence in a run folder -> one Report: statistics, attribution, ranked hypotheses, drift, profile, fix.

This is the only place a Report is made, for `compare` and `analyze` alike, and it reads nothing but the
run folder (through `RunFolder`), so a report can always be remade from what was saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collectors.environment import mismatches
from diagnose import __version__, gate, sources
from diagnose.attribution import NN, NO, ON, OO, attribute
from diagnose.core import stats
from diagnose.core.errors import UserError
from diagnose.core.report import (
    Attribution,
    CellSummary,
    DriftSection,
    Latency,
    Measurement,
    ProfileSection,
    Report,
    RunInfo,
    Slo,
    SourceStatus,
    Tail,
)
from diagnose.core.runfolder import SIDES, RunFolder
from diagnose.hypotheses import Context, rank
from diagnose.production import production_latency, production_timelines
from diagnose.verify import fix_section

THROTTLED_BENCHMARK = 0.05  # share of CFS periods throttled during the benchmark that earns a warning


@dataclass(frozen=True)
class Outcome:
    """The verdict and the attribution, from the samples alone: what decides whether the verify stage runs."""

    verdict: str
    delta: stats.Delta
    attribution: Attribution
    cells: dict[str, np.ndarray]
    tail: Tail
    regression_kind: str | None


def _cell_summaries(samples: pd.DataFrame) -> dict[str, CellSummary]:
    return {
        key: CellSummary(
            n=int(len(group)),
            p50_ms=float(group["latency_ms"].median()),
            preprocess_p50_ms=float(group["preprocess_ms"].median()),
            infer_p50_ms=float(group["infer_ms"].median()),
            input_elements_mean=float(group["input_elements"].mean()),
            input_signature=str(group["input_signature"].mode().iloc[0]),
        )
        for key, group in samples.groupby("cell", sort=True)
    }


def _summary_line(model: str, old: str, new: str, result: Outcome) -> str:
    delta, tail = result.delta, result.tail
    lo, hi = delta.p50_pct_ci
    p99_lo, p99_hi = delta.p99_pct_ci
    change = f"p50 {delta.p50_pct:+.1f}% (95% CI {lo:+.1f}% .. {hi:+.1f}%), p99 {delta.p99_pct:+.1f}%, p = {delta.p_value:.2g}"
    words = {
        "regression": f"{model} {new} is slower than {old}",
        "improvement": f"{model} {new} is faster than {old}",
        "no_regression": f"{model} {new} is as fast as {old} (within ±{stats.EQUIVALENCE_PCT:g}%)",
        "inconclusive": f"{model} {new} vs {old}: not enough evidence either way",
    }
    if result.regression_kind == "tail":
        median = {"no_regression": "unchanged", "regression": "up far less"}.get(
            tail.median_verdict, tail.median_verdict.replace("_", " "))
        line = (f"{model} {new} has a slower tail than {old} (a tail-only regression): p99 {delta.p99_pct:+.1f}% "
                f"(95% CI {p99_lo:+.1f}% .. {p99_hi:+.1f}%), p50 {delta.p50_pct:+.1f}% ({median})")
    else:
        line = f"{words[result.verdict]}: {change}"
    if not tail.settled:
        why = (f"only {tail.samples} samples a side, {tail.min_samples} needed" if tail.samples < tail.min_samples
               else f"its change CI {p99_lo:+.1f}% .. {p99_hi:+.1f}% spans the ±{tail.noise_floor_pct:g}% floor")
        line += f"; p99 not settled ({why}: raise --budget)"
    return line


def _summary(run: dict, result: Outcome | None, production, verdict_source: str | None) -> str:
    """The headline: the lab's line, with production's where it carries or contradicts the verdict."""
    model, old, new = run["model"], run["old"], run["new"]
    if result is None:
        if production is None:
            return (f"{model} {new} vs {old}: latency not measured here (--no-benchmark); the causes are ranked from "
                    "the recorded signals and the request logs alone")
        words = {"regression": "slowed down in production after the deploy", "improvement": "sped up in production",
                 "no_regression": "held its latency in production", "inconclusive": "changed production latency by an "
                 "uncertain amount"}[production.verdict]
        return f"{model} {new} {words}: {production.describe()}; not replayed here (--no-benchmark)"
    line = _summary_line(model, old, new, result)
    if production is None:
        return line
    if verdict_source == "production":
        return (f"{model} {new} is slower in production after the deploy: {production.describe()}; the lab replay "
                f"shows no such change ({line})")
    if verdict_source == "lab" and result.verdict == "regression":
        return f"{line}; production shows no settled change at the deploy ({production.describe()})"
    return f"{line}; {production.describe()}"


def _production_warnings(lab_verdict: str, production) -> list[str]:
    """The warning for a lab regression that production does not show."""
    if production is None:
        return []
    if lab_verdict == "regression" and production.verdict in ("no_regression", "improvement"):
        return [f"the lab regression does not show in production ({production.describe()}): the replayed requests, "
                "batching or hardware may differ from production's, or the new version serves little traffic yet"]
    return []


def load_evidence(folder: RunFolder) -> dict[str, dict]:
    """Every registered source's evidence file (a missing optional one reads as unavailable)."""
    return {s.name: folder.evidence(s.name, required=s.required) for s in sources.SOURCES}


def _profile_section(profile: dict, rows: int = 10) -> ProfileSection | None:
    """The part of the trace diff that goes into report.json: findings, totals, the top rows of each table."""
    if profile.get("status") != "ok":
        return None
    return ProfileSection(
        findings=tuple(profile["findings"]), totals=profile["totals"],
        tables={name: table[:rows] for name, table in profile["tables"].items()},
        traces=profile["traces"], logdir=profile["logdir"],
    )


def _drift_section(folder: RunFolder, drift: dict, samples: pd.DataFrame, seed: int) -> DriftSection | None:
    """Schema changes, drifted features, and how much of the latency change the input shift explains."""
    from diagnose.shift_latency import tie_to_latency

    if drift.get("status") != "ok":
        return None
    sizes = folder.request_sizes()
    if drift.get("identical"):
        tie = {"status": "unavailable", "reason": "both versions replayed the same requests"}
    elif samples.empty:
        tie = {"status": "unavailable", "reason": "no benchmark samples (--no-benchmark)"}
    elif sizes is not None:
        tie = tie_to_latency(samples, sizes, drift.get("drifted"), seed=seed)
    else:
        tie = {"status": "unavailable", "reason": f"{RunFolder.REQUEST_SIZES} is missing"}
    features = drift.get("features") or []
    return DriftSection(
        identical=drift.get("identical"),
        schema_changes=tuple(drift.get("schema_changes") or []),
        expected_schema=tuple(drift.get("expected_schema") or []),
        drifted=tuple(f for f in features if f.get("drift")),
        features_tested=sum(1 for f in features if f.get("status") == "ok"),
        settings=drift.get("settings"),
        latency_tie=tie,
        distributions=_distributions(features),
    )


def _distributions(features: list[dict], most: int = 6) -> tuple[dict, ...]:
    """The features an incident report overlays old against new: drifted first, then by statistic, those whose
    evidence kept quantiles or category shares (docs/drift.md)."""
    kept = [f for f in features if f.get("quantiles") or f.get("categories")]
    kept.sort(key=lambda f: (not f.get("drift"), -(f.get("statistic") or 0.0), str(f.get("feature"))))
    return tuple({"feature": f["feature"], "drift": bool(f.get("drift")), "method": f.get("method"),
                  **({"quantiles": f["quantiles"]} if f.get("quantiles") else {"categories": f["categories"]})}
                 for f in kept[:most])


def _reproduce(folder: RunFolder, run: dict) -> tuple[str, ...]:
    """The commands that remake this report (from the folder alone) and rerun the comparison (run.json's command
    line, already redacted when it was written)."""
    import shlex

    out = [f"diagnose analyze {shlex.quote(str(folder.path))}"]
    command = [str(a) for a in run.get("command") or []]
    if len(command) > 1:
        out.append(shlex.join(["diagnose", *command[1:]]))
    return tuple(out)


def thresholds(folder: RunFolder) -> stats.Thresholds:
    """The verdict's bounds: wider when the old side's samples come from a baseline run (not interleaved)."""
    return stats.Thresholds.for_run(between_runs=bool(folder.run().get("baseline")))


def outcome(folder: RunFolder) -> Outcome:
    """Verdict and attribution from samples.parquet and the request evidence alone (no rules, no sections)."""
    samples = folder.samples()
    seed = int(folder.run().get("seed", 0))
    cells = {key: group["latency_ms"].to_numpy() for key, group in samples.groupby("cell")}
    if OO not in cells or NN not in cells:
        missing = [k for k in (OO, NN) if k not in cells]
        raise UserError(f"no samples for {', '.join(missing)}", folder.file(RunFolder.SAMPLES))
    blocks = None
    if "round" in samples:  # each round timed one block per cell: the tail's CI resamples those blocks
        rounds = {key: group["round"].to_numpy() for key, group in samples.groupby("cell")}
        blocks = (rounds[OO], rounds[NN])
    delta = stats.relative_change(cells[OO], cells[NN], seed=seed, blocks=blocks)
    identical = folder.evidence("requests", required=True).get("identical")
    crossed = dict(cells)
    if identical:  # one request log for both versions: the crossed cells are the diagonal ones, input effect is nil
        crossed.setdefault(NO, cells[NN])
        crossed.setdefault(ON, cells[OO])
    unavailable = dict(folder.evidence("benchmark", required=True).get("unavailable", {}))
    attribution = attribute(crossed, unavailable, seed=seed)
    if identical:
        attribution["note"] = "both versions replayed the same requests: the input effect is zero by design"
    limits = thresholds(folder)
    median = stats.verdict(delta, noise_floor_pct=limits.noise_floor_pct, equivalence_pct=limits.equivalence_pct)
    n = min(len(cells[OO]), len(cells[NN]))
    tail = Tail(stats.tail_verdict(delta, n, limits.tail_noise_floor_pct, limits.tail_equivalence_pct), median, n,
                stats.MIN_TAIL_SAMPLES, limits.tail_noise_floor_pct, limits.tail_equivalence_pct)
    verdict, kind = stats.overall_verdict(median, tail.verdict, delta)
    return Outcome(verdict, delta, Attribution.from_dict(attribution), cells, tail, kind)


def _environment_warnings(folder: RunFolder, env: dict, allow_env_mismatch: bool) -> tuple[list[str], list[str]]:
    env_diff = mismatches(env["old"], env["new"])
    if not env_diff:
        return [], []
    if not (allow_env_mismatch or folder.run().get("allow_env_mismatch")):
        raise UserError(
            "the old and new sample sets were measured in different environments ("
            + "; ".join(env_diff) + "); pass --allow-env-mismatch to compare them anyway",
            folder.evidence_path("environment"),
        )
    return env_diff, ["sample sets come from different environments: " + "; ".join(env_diff)]


def _check_sides(folder: RunFolder, evidence: dict[str, dict]) -> None:
    """The per-side evidence the report indexes by side; a hand-edited or foreign file fails naming itself."""
    for name in ("versions", "environment"):
        if not all(isinstance(evidence[name].get(side), dict) for side in SIDES):
            raise UserError("not an evidence object of this source (expected 'old' and 'new' objects)",
                            folder.evidence_path(name))


def _incomplete_warnings(folder: RunFolder, reason: str | None) -> list[str]:
    """An interrupted run is reported as such, naming the evidence it never wrote, so no one reads it as complete."""
    if reason is None:
        return []
    missing = [s.name for s in sources.SOURCES if not folder.has_evidence(s.name)]
    return [f"the run was interrupted ({reason}); missing evidence: {', '.join(missing) or 'none'}"]


def _measurement_warnings(folder: RunFolder, evidence: dict[str, dict], run: dict, result: Outcome | None,
                          samples: pd.DataFrame) -> list[str]:
    """What a reader must know about how the lab figures were taken: throttled, shared cores, another device,
    inputs cast, noisy samples."""
    warnings = []
    for side in SIDES:
        entry = evidence["versions"][side]
        if entry.get("replayed_on", entry["serving"]["device"]) != entry["serving"]["device"]:
            warnings.append(f"{run[side]} is served on {entry['serving']['device']} but was replayed on "
                            f"{entry['replayed_on']} (no {entry['serving']['device']} device here): its lab figures are "
                            "not production's; the change between versions and the recorded signals still hold")
    if result is None:
        return warnings
    cgroup = evidence["cgroup"]
    if cgroup.get("status") == "ok" and (cgroup["data"].get("throttled_ratio") or 0) > THROTTLED_BENCHMARK:
        warnings.append(f"the benchmark itself ran CPU-throttled ({cgroup['summary'][0]}): latencies are inflated on both "
                        "sides alike (cells interleave), so the comparison holds but absolute figures do not")
    host = evidence["host"]
    if host.get("status") == "ok" and host["data"].get("contended"):
        warnings.append(f"the benchmark shared the CPU: {host['summary'][0]}; cells interleave, so the comparison "
                        "holds for versions with the same threads, but a thread change measures the contention")
    for side, cast in (evidence["benchmark"].get("input_casts") or {}).items():
        warnings.append(f"{run[side]} refused its requests in the logged dtype, so they were replayed cast ({cast}), as "
                        "its server must cast them; a log in the served dtype would make this figure exact")
    sizes = {key: group["input_elements"].to_numpy() for key, group in samples.groupby("cell")}
    return warnings + stats.noise_warnings(result.cells[OO], result.cells[NN], old_sizes=sizes[OO], new_sizes=sizes[NN])


def measured(folder: RunFolder) -> bool:
    """Whether the compare replayed the versions at all (`--no-benchmark` diagnoses from the signals alone)."""
    return folder.evidence("benchmark", required=True).get("status") != "skipped"


def analyze(run_dir: Path | RunFolder, allow_env_mismatch: bool = False) -> Report:
    """Build the Report from the run folder; an interrupted one (samples saved) is reported with `incomplete` set.
    A run without a benchmark (`--no-benchmark`) has verdict `not_measured`, no latency and no attribution, and its
    causes ranked from the signals and the request logs."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    folder.check_complete()
    run = folder.run()
    evidence = load_evidence(folder)
    _check_sides(folder, evidence)
    samples = folder.samples()
    incomplete = folder.incomplete()
    env_diff, warnings = _environment_warnings(folder, evidence["environment"], allow_env_mismatch)
    warnings = _incomplete_warnings(folder, incomplete) + warnings

    result = outcome(folder) if measured(folder) else None
    seed = int(run.get("seed", 0))
    latency = result and Latency(old=Measurement(result.cells[OO]), new=Measurement(result.cells[NN]), delta=result.delta,
                                 noise_floor_pct=thresholds(folder).noise_floor_pct, alpha=stats.ALPHA,
                                 tail=result.tail)
    warnings += _measurement_warnings(folder, evidence, run, result, samples)
    if run.get("baseline"):
        base = run["baseline"]
        warnings.append(f"the old side's samples come from the baseline run {base['dir']} ({base.get('started_at')}): "
                        "they were not interleaved with the new version's, so a machine that changed between the two "
                        f"runs shows up as a change; a change is called only beyond ±{stats.BETWEEN_RUNS_FLOOR_PCT:g}% "
                        f"(p50) and ±{stats.BETWEEN_RUNS_TAIL_FLOOR_PCT:g}% (tail)")

    cells = _cell_summaries(samples)
    drift = _drift_section(folder, evidence["drift"], samples, seed)
    profile = _profile_section(evidence["profile"])
    lab_verdict = result.verdict if result else "not_measured"
    production = production_latency(evidence["prometheus"])
    verdict, verdict_source = stats.joint_verdict(lab_verdict, production and production.verdict)
    warnings += _production_warnings(lab_verdict, production)
    ctx = Context(
        verdict=verdict, lab_verdict=lab_verdict, production=production,
        delta=result.delta.to_dict() if result else {},
        attribution=result.attribution.to_dict() if result else {},
        versions=evidence["versions"], requests=evidence["requests"],
        cells={key: cell.to_dict() for key, cell in cells.items()}, environment_diff=env_diff,
        profile=profile and profile.to_dict(), drift=drift and drift.to_dict(),
        signals={s.name: evidence[s.name] for s in sources.signal_sources()},
        run={"model": run.get("model"), "old": run.get("old"), "new": run.get("new"), "registry": run.get("registry"),
             "dir": str(folder.path)},
    )
    hypotheses, rule_errors, unjudged = rank(ctx)
    warnings += [f"cause rule {e.rule} failed ({e.error}); its causes are not ranked" for e in rule_errors]

    slo = evidence["versions"]["new"].get("slo", {})
    slo_p99 = slo.get("p99_ms") if latency else None
    benchmark = evidence["benchmark"]
    summary = _summary(run, result, production, verdict_source)
    return Report(
        tool={"name": "diagnose", "version": __version__},
        model=run["model"], old=run["old"], new=run["new"],
        verdict=verdict,
        summary=summary,
        latency=latency,
        attribution=result and result.attribution,
        cells=cells,
        hypotheses=tuple(hypotheses),
        profile=profile,
        drift=drift,
        fix=fix_section(folder, slo, seed),
        evidence_sources={name: SourceStatus(e.get("status", "unknown"), e.get("reason"), e.get("source"))
                          for name, e in evidence.items()},
        slo=Slo(p99_ms=slo_p99, old_within=bool(latency.old.stats.p99_ms <= slo_p99) if slo_p99 else None,
                new_within=bool(latency.new.stats.p99_ms <= slo_p99) if slo_p99 else None),
        warnings=tuple(warnings),
        run=RunInfo(dir=str(folder.path), started_at=run.get("started_at"), budget_s=run.get("budget_s"),
                    rounds=benchmark.get("rounds"), elapsed_s=benchmark.get("elapsed_s"), stopped=benchmark.get("stopped"),
                    registry=run.get("registry")),
        rule_errors=tuple(rule_errors),
        incomplete=incomplete,
        regression_kind=result and result.regression_kind,
        production=production,
        lab_verdict=lab_verdict,
        verdict_source=verdict_source,
        unjudged=tuple(unjudged),
        gate=gate.evaluate(run.get("gate"), result and result.delta, result.tail.samples if result else 0,
                           thresholds(folder), benchmark.get("elapsed_s")),
        timelines=production_timelines(evidence["prometheus"]),
        environment={side: dict(evidence["environment"][side]) for side in SIDES},
        reproduce=_reproduce(folder, run),
        baseline=run.get("baseline"),
    )
