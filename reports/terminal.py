"""The short summary the CLI prints: verdict, p50/p99 with CIs, attribution, top causes, run folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reports.sections import LIKELY_MIN_SCORE, split_causes

if TYPE_CHECKING:
    from diagnose.core.report import Report


def _latency_lines(report: Report) -> list[str]:
    """p50 and p99 of both sides with their CIs, and the factorial's split of the change."""
    lat = report.latency
    old, new, delta = lat.old.stats, lat.new.stats, lat.delta
    lines = []
    for q in ("p50", "p99"):
        lo, hi = getattr(delta, f"{q}_pct_ci")
        old_ci, new_ci = getattr(old, f"{q}_ci"), getattr(new, f"{q}_ci")
        lines.append(
            f"  {q}: {getattr(old, q + '_ms'):.2f} ms [{old_ci[0]:.2f}, {old_ci[1]:.2f}] -> "
            f"{getattr(new, q + '_ms'):.2f} ms [{new_ci[0]:.2f}, {new_ci[1]:.2f}]  "
            f"{getattr(delta, q + '_pct'):+.1f}% [{lo:+.1f}%, {hi:+.1f}%]"
        )
    att = report.attribution
    parts = []
    for name in ("model", "input"):
        effect = att.effect(name)
        if effect:
            share = f" ({100 * effect.share:.0f}%)" if effect.share is not None else ""
            parts.append(f"{name} {effect.effect_ms:+.2f} ms{share}")
    if parts:
        lines.append("  attribution: " + ", ".join(parts))
    if att.note:
        lines.append(f"  note: {att.note}")
    return lines


def _production_lines(report: Report) -> list[str]:
    """Production's latency across the deploy, its own verdict and where it jumped."""
    p = report.production
    if p is None:
        return []
    lines = [f"  {p.describe()}: {p.verdict.replace('_', ' ')}"]
    cp = p.change_point
    if cp:
        lines.append(f"    jump at {cp['at']} ({cp['lag_s']:+.0f} s from the deploy, {cp['step_pct']:+.0f}%)")
    if report.verdict_source:
        lines.append(f"  verdict from: {report.verdict_source}")
    return lines


def render(report: Report, top: int = 3) -> str:
    """The verdict and figures, then the top `top` likely causes, each with its first two pieces of evidence and
    the first command that checks it (report.md and report.json hold all of them)."""
    lines = [f"{report.verdict.upper()}: {report.summary}"]
    if report.latency:
        lines += _latency_lines(report)
    lines += _production_lines(report)
    drift = report.drift
    if drift and not drift.identical:
        changes = [c["text"] for c in drift.schema_changes]
        lines.append(f"  requests: {len(drift.drifted)} of {drift.features_tested} features drifted"
                     + (f"; schema: {'; '.join(changes[:3])}" if changes else ""))
        tie = drift.latency_tie
        if tie["status"] == "ok" and (drift.drifted or tie["significant"] and abs(tie.get("share") or 0) >= 0.1):
            lines.append(f"    tied to latency: {tie['text']}")
    if report.profile and report.profile.findings:
        lines.append("  where the time went (profiler):")
        lines += [f"    {finding}" for finding in report.profile.findings[:top]]
    likely, unsupported = split_causes(report.hypotheses)
    if likely:
        lines.append("  likely causes:")
        for hyp in likely[:top]:
            lines.append(f"    {hyp.score:.2f}  {hyp.cause}: {hyp.summary}")
            lines += [f"          because: {line}" for line in hyp.evidence[:2]]
            command = next((step for step in hyp.next_steps if step.startswith(("$ ", "PromQL: "))), None)
            if command:
                lines.append(f"          next: {command}")
    elif unsupported:
        lines.append("  likely causes: none that the evidence points at")
    if unsupported:
        lines.append(f"  not supported (score < {LIKELY_MIN_SCORE:g}): "
                     + ", ".join(f"{h.cause} ({h.score:.2f})" for h in unsupported))
    if report.fix:
        lines.append(f"  verify: {report.fix.verdict}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    lines.append(f"  run folder: {report.run.dir}")
    return "\n".join(lines)
