"""report.md: the incident-report view of a compare, for pasting into a ticket or chat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reports.sections import LIKELY_MIN_SCORE, render_fix, render_regions, split_causes

if TYPE_CHECKING:
    from diagnose.core.report import DriftSection, Report


def _ci(pair) -> str:
    return f"{pair[0]:.2f} .. {pair[1]:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _drift_lines(drift: DriftSection | None) -> list[str]:
    if not drift:
        return []
    lines = ["", "## Did the requests change?", ""]
    if drift.identical:
        return lines + ["Both versions replayed the same request log."]
    tie = drift.latency_tie
    if tie["status"] == "ok":
        lines.append(f"**Tied to latency:** {tie['text']}.")
    else:
        lines.append(f"Latency tie: not available ({tie['reason']}).")
    changes = list(drift.schema_changes) + [dict(c, text="model expects: " + c["text"]) for c in drift.expected_schema]
    if changes:
        lines += ["", f"Schema: {len(changes)} change(s):", ""] + [f"- {c['text']}" for c in changes]
    else:
        lines += ["", "Schema: unchanged."]
    lines += ["", f"Drift: {len(drift.drifted)} of {drift.features_tested} features drifted."]
    if drift.drifted:
        lines += ["", "| feature | test | statistic | p (Holm) | old mean | new mean |", "|---|---|---:|---:|---:|---:|"]
        for f in drift.drifted[:10]:
            p = "" if f.get("p_adjusted") is None else f"{f['p_adjusted']:.2g}"
            means = [("" if f.get(k) is None else f"{f[k]:.4g}") for k in ("old_mean", "new_mean")]
            lines.append(f"| {f['feature']} | {f['method']} | {f['statistic']:.3g} | {p} | {means[0]} | {means[1]} |")
    return lines


def _latency_lines(report: Report) -> list[str]:
    """The latency table with CIs, the SLO, and the factorial's split between model and inputs."""
    lat = report.latency
    old, new, delta = lat.old.stats, lat.new.stats, lat.delta
    lines = [
        "", "## Latency (ms per batch)", "",
        f"| | {report.old} | 95% CI | {report.new} | 95% CI | change | 95% CI |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for q in ("p50", "p90", "p99"):
        pct_ci = getattr(delta, q + "_pct_ci")
        lines.append(
            f"| {q} | {getattr(old, q + '_ms'):.2f} | {_ci(getattr(old, q + '_ci'))} | {getattr(new, q + '_ms'):.2f} "
            f"| {_ci(getattr(new, q + '_ci'))} | {getattr(delta, q + '_pct'):+.1f}% | {pct_ci[0]:+.1f}% .. {pct_ci[1]:+.1f}% |"
        )
    lines += ["", f"Samples: {old.n} old, {new.n} new; {delta.test} p = {delta.p_value:.3g}; "
                  f"noise floor {lat.noise_floor_pct:g}%."]
    if lat.tail:
        lines.append(f"p99 on its own: {lat.tail.verdict.replace('_', ' ')} (median: "
                     f"{lat.tail.median_verdict.replace('_', ' ')}; {lat.tail.samples} samples a side, "
                     f"{lat.tail.min_samples} needed; tail noise floor {lat.tail.noise_floor_pct:g}%).")
    slo = report.slo
    if slo.p99_ms:
        lines.append(f"SLO p99 <= {slo.p99_ms} ms: old {'meets' if slo.old_within else 'misses'} it, "
                     f"new {'meets' if slo.new_within else 'misses'} it.")

    att = report.attribution
    lines += ["", "## Model or inputs?", ""]
    if att.model or att.input:
        lines += ["| effect | ms | 95% CI | share of change |", "|---|---:|---|---:|"]
        for name in ("model", "input", "interaction"):
            effect = att.effect(name)
            if effect:
                share = "" if effect.share is None else f"{100 * effect.share:.0f}%"
                lines.append(f"| {name} | {effect.effect_ms:+.2f} | {_ci(effect.ci_ms)} | {share} |")
    if att.note:
        lines += ["", f"_{att.note}_"]
    for key, reason in sorted(att.unavailable.items()):
        lines.append(f"- cell {key} could not run: {reason}")
    return lines


def _production_lines(report: Report) -> list[str]:
    """Production's latency across the deploy: the figures, the CI, its verdict, the jump, the parts."""
    p = report.production
    if p is None:
        return []
    what = "average" if p.statistic == "average" else p.statistic
    lines = ["", "## Production (the serving system's own latency)", "",
             "| metric | statistic | before (ms) | after (ms) | change | 95% CI | verdict |", "|---|---|---:|---:|---:|---|---|",
             f"| {p.metric} ({p.server_label or ''}) | {what} | {p.before_ms:.3g} | {p.after_ms:.3g} | "
             f"{p.change_pct:+.0f}% | {p.ci_pct[0]:+.0f}% .. {p.ci_pct[1]:+.0f}% | {p.verdict.replace('_', ' ')} |"]
    for role, part in p.parts.items():
        if part.get("before") is not None and part.get("after") is not None:
            lines.append(f"| {part['metric']} ({role}) | {part['statistic']} | {part['before']:.3g} | "
                         f"{part['after']:.3g} | | | |")
    windows = p.windows
    if windows:
        lines += ["", f"Before: {windows['before'][0]} .. {windows['before'][1]}; after: {windows['after'][0]} .. "
                      f"{windows['after'][1]} (deployed {p.deployed_at})."]
    if p.change_point:
        cp = p.change_point
        lines.append(f"The jump began at {cp['at']}, {cp['lag_s']:+.0f} s from the deploy ({cp['step_pct']:+.0f}%).")
    if report.verdict_source:
        lines.append(f"The verdict comes from: {report.verdict_source} (lab: {(report.lab_verdict or '').replace('_', ' ')}).")
    return lines


def gate_lines(report: Report) -> list[str]:
    """The CI gate: each gated statistic's budget, change and outcome (report.gate)."""
    gate = report.gate
    if gate is None:
        return []
    what = "the budgets `diagnose ci` was given" if gate.source == "ci" else "the default budgets"
    lines = ["", f"## CI gate: {gate.status.upper()}", "",
             f"Gated on {what}{' (strict: inconclusive fails)' if gate.strict else ''}.", "",
             "| statistic | budget | change | 95% CI | significant | outcome |", "|---|---:|---:|---|---|---|"]
    for c in gate.checks:
        ci = "n/a" if c.ci_pct is None else f"{c.ci_pct[0]:+.1f}% .. {c.ci_pct[1]:+.1f}%"
        lines.append(f"| {c.metric} | +{c.max_pct:g}% | {_pct(c.change_pct)} | {ci} | {'yes' if c.significant else 'no'} "
                     f"| {c.status} |")
    return lines


def ci_summary(report: Report, top: int = 3) -> str:
    """What `diagnose ci` appends to $GITHUB_STEP_SUMMARY: the gate, the verdict and the top causes."""
    lines = [f"# diagnose ci: {report.model} {report.old} -> {report.new}", "", f"**{report.summary}**"]
    lines += gate_lines(report)
    likely, _ = split_causes(report.hypotheses)
    lines += ["", "## Likely causes", ""]
    lines += [f"{rank}. **{h.cause}** ({h.score:.2f}): {h.summary}" for rank, h in enumerate(likely[:top], 1)] or \
        ["No cause is supported by the evidence collected."]
    lines += ["", f"Run folder: `{report.run.dir}` (`diagnose report {report.run.dir} --format html`)."]
    return "\n".join(lines) + "\n"


def render(report: Report) -> str:
    lines = [f"# {report.model}: {report.old} -> {report.new}", "", f"**Verdict: {report.verdict}.** {report.summary}"]
    if report.latency:
        lines += _latency_lines(report)
    lines += gate_lines(report)
    lines += _production_lines(report)

    profile = report.profile
    if profile:
        tot = profile.totals
        lines += ["", "## Where the time went (profiler, same requests on both sides)", "",
                  f"CPU op self time per step {tot['old_self_ms_per_step']:.2f} -> {tot['new_self_ms_per_step']:.2f} ms; "
                  f"FLOPs per step {tot['old_flops_per_step']:.3g} -> {tot['new_flops_per_step']:.3g}. "
                  f"Traces: `{profile.traces['old']}`, `{profile.traces['new']}` "
                  f"(open in Perfetto, or `tensorboard --logdir {profile.logdir}` in the run folder).", ""]
        lines += [f"- {finding}" for finding in profile.findings]
        modules = profile.tables.get("modules") or []
        if modules:
            lines += ["", "| module | old ms/step | new ms/step | delta | share |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {r['key']} | {r['old_self_us'] / 1000:.2f} | {r['new_self_us'] / 1000:.2f} | "
                      f"{r['delta_self_us'] / 1000:+.2f} | {100 * r['share']:.0f}% |" for r in modules[:8]]
        regions = profile.tables.get("regions") or []
        if regions:
            lines += ["", "Regions (user annotations, collectives, the step; inclusive time):", "",
                      render_regions(regions, 8).rstrip()]

    lines += _drift_lines(report.drift)
    if report.fix:
        lines += ["", "## Fix (optimized variants of the new version, measured side by side)", "",
                  render_fix(report.fix).rstrip()]
    likely, unsupported = split_causes(report.hypotheses)
    lines += ["", "## Likely causes", ""]
    if not likely:
        lines.append("No cause is supported by the evidence collected.")
    for rank, hyp in enumerate(likely, 1):
        lines.append(f"{rank}. **{hyp.cause}** (score {hyp.score:.2f}): {hyp.summary}")
        lines += [f"   - {item}" for item in hyp.evidence]
        words = [step for step in hyp.next_steps if not step.startswith(("$ ", "PromQL: "))]
        commands = [step for step in hyp.next_steps if step.startswith(("$ ", "PromQL: "))]
        if words:
            lines.append("   - Next: " + "; ".join(words))
        lines += [f"   - Run: `{step.removeprefix('$ ')}`" if step.startswith("$ ") else f"   - Query: `{step[8:]}`"
                  for step in commands]
        lines += [f"   - Missing: {item}" for item in hyp.missing]
    if unsupported:
        lines += ["", f"Not supported by the evidence (score below {LIKELY_MIN_SCORE:g}; report.json keeps them):", ""]
        lines += [f"- {hyp.cause} (score {hyp.score:.2f}): {hyp.summary}" for hyp in unsupported]

    if report.unjudged:
        lines += ["", "Not judged, for want of evidence:", ""]
        lines += [f"- {u['cause']}: needs {u['missing']}" for u in report.unjudged]

    lines += ["", "## Evidence sources", ""]
    for name, entry in sorted(report.evidence_sources.items()):
        reason = f" ({entry.reason})" if entry.reason else ""
        lines.append(f"- {name}: {entry.status}{reason}")
    for error in report.rule_errors:
        lines.append(f"- cause rule {error.rule}: error ({error.error})")
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    run = report.run
    measured = f"{run.rounds} rounds in {run.elapsed_s} s ({run.stopped})" if report.latency else "no benchmark"
    lines += ["", f"Run folder: `{run.dir}`; {measured}."]
    if report.baseline:
        lines.append(f"The old side's samples come from the baseline run `{report.baseline['dir']}` "
                     f"({report.baseline.get('started_at')}).")
    if report.reproduce:
        lines += ["", "Reproduce:", "", "```bash", *report.reproduce, "```"]
    return "\n".join(lines) + "\n"
