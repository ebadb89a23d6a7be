"""Tables of a report's drift, fix and profile sections, shared by report.md and the commands that print them.

Plain text that is also valid Markdown, so the same lines serve the terminal and an incident report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diagnose.core.report import FixSection


def render_drift(report: dict, rows: int = 15) -> str:
    """Plain text (also valid Markdown): schema changes, then the feature table, drifted first."""
    lines = []
    paths = report.get("paths")
    if paths:
        lines.append(f"requests: {paths['old']} ({report['rows']['old']} rows) -> {paths['new']} ({report['rows']['new']} rows)")
    if report.get("identical"):
        lines.append("the two request logs are identical: no drift")
    changes = report.get("schema_changes") or []
    lines.append(f"schema changes: {len(changes)}" if changes else "schema: unchanged")
    lines += [f"  - {c['text']}" for c in changes]
    for finding in report.get("expected_schema") or []:
        lines.append(f"  - model expects: {finding['text']}")
    features = report.get("features") or []
    drifted = report.get("drifted") or []
    settings = report.get("settings", {})
    lines.append(f"distribution drift: {len(drifted)} of {len(features)} features "
                 f"(alpha {settings.get('alpha')} family-wise, {settings.get('correction')} correction; "
                 f"distance threshold {settings.get('threshold')})")
    lines.append(f"  {'feature':<28} {'method':<14} {'statistic':>10} {'p (adj.)':>10} {'old mean':>10} {'new mean':>10}  drift")
    for f in features[:rows]:
        p = "" if f.get("p_adjusted") is None else f"{f['p_adjusted']:.2g}"
        stat = "" if f.get("statistic") is None else f"{f['statistic']:.3g}"
        old_mean = "" if f.get("old_mean") is None else f"{f['old_mean']:.4g}"
        new_mean = "" if f.get("new_mean") is None else f"{f['new_mean']:.4g}"
        flag = "DRIFT" if f.get("drift") else ("skipped: " + str(f.get("reason")) if f.get("status") == "skipped" else "-")
        lines.append(f"  {f['feature'][:28]:<28} {str(f.get('method'))[:14]:<14} {stat:>10} {p:>10} {old_mean:>10} "
                     f"{new_mean:>10}  {flag}")
    if len(features) > rows:
        lines.append(f"  ... {len(features) - rows} more features (--json for all)")
    return "\n".join(lines) + "\n"


def render_fix(fix: FixSection) -> str:
    """The Pareto table as plain text (valid Markdown), verdict first."""
    lines = [fix.verdict, "",
             "| variant | runs as | p50 ms | p99 ms | x faster (p50) | max abs err | cosine | top-1 agree | accuracy | Pareto |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in fix.variants:
        acc = r["accuracy"] or {}
        top1 = acc.get("top1_agreement")
        cells = [r["name"], r.get("runs_as") or "-", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['speedup_p50']:.2f}",
                 "-" if not acc else f"{acc['max_abs']:.2g}", "-" if not acc else f"{acc['cosine']:.4f}",
                 "-" if top1 is None else f"{100 * top1:.1f}%", "ok" if r["accuracy_ok"] else r["accuracy_note"],
                 "yes" if r["pareto"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    for f in fix.not_measured:
        lines.append(f"| {f['name']} | {f['status']}: {f['reason']} ||||||||||")
    # OpenVINO or ONNX Runtime: published comparisons point both ways, so the table says which won on this machine
    duels = [r["vs_onnxruntime"]["summary"] for r in fix.variants if r.get("vs_onnxruntime")]
    if duels:
        lines += ["", *duels]
    return "\n".join(lines) + "\n"


def render_regions(regions: list[dict], rows: int = 8) -> str:
    """The trace diff's `regions` table (user annotations, collectives, the step) as plain text, valid Markdown:
    inclusive ms per step, biggest change first."""
    lines = ["| region | kind | old calls | new calls | old ms | new ms | delta ms | share | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in regions[:rows]:
        key = r["key"].replace("|", "\\|")
        lines.append(f"| {key} | {r['kind']} | {r['old_calls']:g} | {r['new_calls']:g} | {r['old_total_us'] / 1000:.3f} | "
                     f"{r['new_total_us'] / 1000:.3f} | {r['delta_total_us'] / 1000:+.3f} | {100 * r['share']:.0f}% | "
                     f"{r['status']} |")
    if len(regions) > rows:
        lines.append(f"| ... {len(regions) - rows} more regions (--json for all) |||||||||")
    return "\n".join(lines) + "\n"


# ---- causes: which ones a renderer lists as likely ------------------------------------------------------------------
LIKELY_MIN_SCORE = 0.05  # below it nothing in the evidence points at the cause: the rule fired on a side that explains ~0


def split_causes(hypotheses) -> tuple[list, list]:
    """(likely, not supported): the hypotheses scoring at least LIKELY_MIN_SCORE, best first, and the rest.
    report.json keeps every hypothesis with its score; only the "likely causes" lists leave the rest out."""
    likely = [h for h in hypotheses if h.score >= LIKELY_MIN_SCORE]
    return likely, [h for h in hypotheses if h.score < LIKELY_MIN_SCORE]
