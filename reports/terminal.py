"""The short summary the CLI prints: verdict, p50/p99 with CIs, attribution, top causes, run folder."""

from __future__ import annotations


def render(report: dict, top: int = 3) -> str:
    lat = report["latency"]
    old, new, delta = lat["old"], lat["new"], lat["delta"]
    lines = [f"{report['verdict'].upper()}: {report['summary']}"]
    for q in ("p50", "p99"):
        lo, hi = delta[f"{q}_pct_ci"]
        lines.append(
            f"  {q}: {old[q + '_ms']:.2f} ms [{old[q + '_ci'][0]:.2f}, {old[q + '_ci'][1]:.2f}] -> "
            f"{new[q + '_ms']:.2f} ms [{new[q + '_ci'][0]:.2f}, {new[q + '_ci'][1]:.2f}]  "
            f"{delta[q + '_pct']:+.1f}% [{lo:+.1f}%, {hi:+.1f}%]"
        )
    att = report["attribution"]
    parts = []
    for name in ("model", "input"):
        effect = att.get(name)
        if effect:
            share = f" ({100 * effect['share']:.0f}%)" if effect["share"] is not None else ""
            parts.append(f"{name} {effect['effect_ms']:+.2f} ms{share}")
    if parts:
        lines.append("  attribution: " + ", ".join(parts))
    if att.get("note"):
        lines.append(f"  note: {att['note']}")
    drift = report.get("drift")
    if drift and not drift.get("identical"):
        changes = [c["text"] for c in drift["schema_changes"]]
        lines.append(f"  requests: {len(drift['drifted'])} of {drift['features_tested']} features drifted"
                     + (f"; schema: {'; '.join(changes[:3])}" if changes else ""))
        tie = drift["latency_tie"]
        if tie["status"] == "ok" and (drift["drifted"] or tie["significant"] and abs(tie.get("share") or 0) >= 0.1):
            lines.append(f"    tied to latency: {tie['text']}")
    profile = report.get("profile")
    if profile and profile["findings"]:
        lines.append("  where the time went (profiler):")
        lines += [f"    {finding}" for finding in profile["findings"][:top]]
    if report["hypotheses"]:
        lines.append("  likely causes:")
        for hyp in report["hypotheses"][:top]:
            lines.append(f"    {hyp['score']:.2f}  {hyp['cause']}: {hyp['summary']}")
    fix = report.get("fix")
    if fix:
        lines.append(f"  verify: {fix['verdict']}")
    for warning in report.get("warnings", []):
        lines.append(f"  warning: {warning}")
    lines.append(f"  run folder: {report['run']['dir']}")
    return "\n".join(lines)
