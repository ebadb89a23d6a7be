"""report.html: the self-contained incident report, summary first, then one section per kind of evidence.

One file that opens offline: CSS inline, plots inline SVG (reports/plots.py), no script, no font, no image, no
link to anything outside it, and a Content-Security-Policy that forbids loading any. Each section is there when the
Report has its data; when it has not, the section says "not available: <reason>" from `report.evidence_sources`.
Every string from the Report is escaped (`_e`); matplotlib escapes its own SVG text. Tables that report.md draws
from `reports.sections` (the fix's Pareto table, the regions) are the same tables here, converted from that
Markdown; like every renderer this one computes nothing.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from diagnose.core.errors import first_line
from reports import plots
from reports.sections import LIKELY_MIN_SCORE, render_fix, render_regions, split_causes

if TYPE_CHECKING:
    from diagnose.core.report import Report

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
VERDICT_COLOURS = {"regression": plots.WORSE, "improvement": plots.BETTER, "no_regression": plots.BETTER,
                   "inconclusive": "#6b6b6b", "not_measured": "#6b6b6b"}
STATUS_CLASS = {"ok": "good", "pass": "good", "confirmed": "good", "partial": "warn", "inconclusive": "grey",
                "unavailable": "grey", "skipped": "grey", "error": "bad", "fail": "bad", "none": "bad"}

CSS = """
@page { size: A4; margin: 14mm }
* { box-sizing: border-box }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d1d1f;
       margin: 0 auto; max-width: 1040px; padding: 18px 22px 40px; background: #fff }
h1 { font-size: 22px; margin: 4px 0 6px; overflow-wrap: anywhere }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #ddd; break-after: avoid }
h3 { font-size: 15px; margin: 16px 0 6px; break-after: avoid }
p { margin: 6px 0 }
code, pre { font: 12px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace }
pre { background: #f5f5f7; border: 1px solid #e3e3e6; border-radius: 4px; padding: 6px 9px; white-space: pre-wrap;
      overflow-wrap: anywhere; margin: 4px 0 }
.top { border-left: 10px solid var(--verdict); padding: 10px 16px; background: #fafafa; border-radius: 4px }
.verdict { display: inline-block; background: var(--verdict); color: #fff; font-size: 30px; font-weight: 700;
           letter-spacing: .04em; text-transform: uppercase; padding: 6px 18px; border-radius: 6px }
.summary { font-size: 16px; margin-top: 10px; overflow-wrap: anywhere }
.meta, .caption { color: #555; font-size: 12.5px }
.banner { background: #fff3cd; border: 1px solid #e0c36a; padding: 8px 12px; border-radius: 4px }
.glance { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; margin-top: 14px }
.card { border: 1px solid #e0e0e4; border-radius: 6px; padding: 10px 14px; break-inside: avoid; overflow-wrap: anywhere }
.card h3 { margin: 0 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: #555 }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff;
         background: #6b6b6b }
.badge.good { background: #2e7d32; color: #fff } .badge.bad { background: #c62828; color: #fff }
.badge.warn { background: #b26a00; color: #fff } .badge.grey { background: #6b6b6b; color: #fff }
.na { color: #6b6b6b; font-style: italic }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; max-width: 100% }
th, td { border-bottom: 1px solid #e6e6e9; padding: 3px 8px; text-align: left; vertical-align: top; overflow-wrap: break-word }
th { background: #f3f3f5; font-weight: 600 }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap }
tr { break-inside: avoid }
tr.diff td { background: #fff5e6 }
figure { margin: 10px 0; break-inside: avoid; page-break-inside: avoid }
svg.plot { display: block; width: 100%; height: auto; max-width: 100% }
ul, ol { margin: 4px 0; padding-left: 22px }
li { margin: 2px 0; overflow-wrap: anywhere }
.cause { margin-bottom: 12px; break-inside: avoid }
.score { display: inline-block; width: 90px; height: 9px; background: #eee; border-radius: 4px; vertical-align: middle }
.score > span { display: block; height: 100%; border-radius: 4px; background: #c62828 }
footer { margin-top: 30px; color: #777; font-size: 12px }
@media print {
  body { max-width: none; padding: 0; font-size: 11.5px }
  .glance { grid-template-columns: repeat(2, minmax(0, 1fr)) }
  h2 { break-before: auto }
}
"""


class _Html(str):
    """Markup this module wrote (already escaped): a table cell that `_cell` passes through as is."""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell(value) -> str:
    return value if isinstance(value, _Html) else _e(value)


def _num(value, fmt: str = ".3g", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _ci(pair, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if not pair else f"{pair[0]:{fmt}}{suffix} .. {pair[1]:{fmt}}{suffix}"


def _words(value: str | None) -> str:
    return (value or "").replace("_", " ")


def _badge(status: str | None) -> _Html:
    return _Html(f'<span class="badge {STATUS_CLASS.get(status or "", "")}">{_e(_words(status) or "n/a")}</span>')


def _table(headers: list[str], rows: list[list], num: set[int] = frozenset(), row_class=None) -> str:
    """An HTML table; every cell escaped unless it is _Html; columns in `num` right-aligned."""
    def cls(i: int) -> str:
        return ' class="num"' if i in num else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        extra = row_class(k) if row_class else ""
        tr = f'<tr class="{extra}">' if extra else "<tr>"
        body.append(tr + "".join(f"<td{cls(i)}>{_cell(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_PIPE = re.compile(r"(?<!\\)\|")


def _markdown_table(text: str) -> str:
    """The plain-text/Markdown that `reports.sections` writes (paragraph lines and pipe tables) as HTML, every
    cell escaped: report.md's tables, laid out the same here."""
    out: list[str] = []
    table: list[list[str]] = []
    align: list[bool] = []

    def flush():
        if table:
            header, rows = table[0], table[1:]
            width = len(header)
            rows = [r + [""] * (width - len(r)) if len(r) < width else r[:width] for r in rows]
            out.append(_table(header, rows, num={i for i, right in enumerate(align) if right}))
            table.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|") and len(s) > 1:
            cells = [c.strip().replace("\\|", "|") for c in _PIPE.split(s[1:-1])]
            if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                align = [c.endswith(":") for c in cells]
                continue
            table.append(cells)
            continue
        flush()
        if s:
            out.append(f"<p>{_e(s)}</p>")
    flush()
    return "".join(out)


def _unavailable(report: Report, source: str, fallback: str) -> str:
    """"not available: <reason>", the reason the evidence source gave, else `fallback`."""
    entry = report.evidence_sources.get(source)
    reason = fallback
    if entry is not None and entry.status != "ok":
        reason = entry.reason or f"the {source} evidence source is {entry.status}"
    return f'<p class="na">not available: {_e(reason)}</p>'


def _figure(plot, report: Report, caption: str) -> str:
    """The plot `plot(report)` draws, with its caption; "" when it has nothing to draw. A plot that fails says
    so in its place: the rest of the report (written by every compare) still stands."""
    try:
        svg = plot(report)
    except Exception as exc:  # noqa: BLE001 - a report with one plot missing beats no report
        return f'<p class="na">plot not drawn: {_e(first_line(exc, 300))}</p>'
    return f'<figure>{svg}<figcaption class="caption">{_e(caption)}</figcaption></figure>' if svg else ""


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_e(title)}</h2>{body}</section>'


# ---- summary ---------------------------------------------------------------------------------------------------------
def _header(report: Report) -> str:
    colour = VERDICT_COLOURS.get(report.verdict, "#6b6b6b")
    meta = []
    if report.regression_kind:
        meta.append(f"{report.regression_kind} regression")
    if report.verdict_source:
        meta.append(f"verdict from {report.verdict_source} (lab: {_words(report.lab_verdict) or 'n/a'})")
    if report.run.started_at:
        meta.append(f"run started {report.run.started_at}")
    meta.append(f"{report.tool.get('name', 'diagnose')} {report.tool.get('version', '')}, report schema "
                f"{report.schema_version}")
    banner = (f'<p class="banner">This run was interrupted ({_e(report.incomplete)}): some evidence may be missing.</p>'
              if report.incomplete else "")
    return (f'<header class="top verdict-{_e(report.verdict)}" style="--verdict:{colour}">'
            f'<div class="verdict" data-verdict="{_e(report.verdict)}">{_e(_words(report.verdict))}</div>'
            f"<h1>{_e(report.model)}: {_e(report.old)} &rarr; {_e(report.new)}</h1>"
            f'<p class="summary">{_e(report.summary)}</p><p class="meta">{_e("; ".join(meta))}</p>{banner}</header>')


def _how_sure(report: Report) -> str:
    parts = []
    lat = report.latency
    if lat is not None:
        d, old, new = lat.delta, lat.old.stats, lat.new.stats
        conf = f"{100 * d.confidence:g}% CI"
        rows = [[q, f"{getattr(old, q + '_ms'):.3g} → {getattr(new, q + '_ms'):.3g} ms", f"{getattr(d, q + '_pct'):+.1f}%",
                 _ci(getattr(d, q + "_pct_ci"), "+.1f", "%")] for q in ("p50", "p99")]
        parts.append(_table(["", "old → new", "change", conf], rows, num={2, 3}))
        parts.append(f"<p>{_e(d.test)} p = {d.p_value:.2g}; {old.n} samples old, {new.n} new; noise floor "
                     f"{lat.noise_floor_pct:g}%.</p>")
        if lat.tail and not lat.tail.settled:
            parts.append(f"<p>p99 not settled: {lat.tail.samples} samples a side, {lat.tail.min_samples} needed.</p>")
    if report.production is not None:
        parts.append(f"<p>{_e(report.production.describe())}; production's verdict: "
                     f"{_e(_words(report.production.verdict))}.</p>")
    if not parts:
        parts.append(_unavailable(report, "benchmark", "nothing measured latency"))
    return '<div class="card"><h3>How sure</h3>' + "".join(parts) + "</div>"


def _top_cause(report: Report) -> str:
    likely, _ = split_causes(report.hypotheses)
    if not likely:
        body = "<p>No cause is supported by the evidence collected.</p>"
    else:
        h = likely[0]
        more = f'<p class="meta">{len(likely) - 1} more likely cause(s) below.</p>' if len(likely) > 1 else ""
        body = f"<p><code>{_e(h.cause)}</code> (score {h.score:.2f})</p><p>{_e(h.summary)}</p>{more}"
    return '<div class="card"><h3>Top cause</h3>' + body + "</div>"


def _fix_card(report: Report) -> str:
    fix = report.fix
    if fix is None:
        body = _unavailable(report, "variants", "no variants were verified")
    else:
        best = f"<p>best: <code>{_e(fix.best)}</code></p>" if fix.best else ""
        body = f"<p>{_badge(fix.status)}</p><p>{_e(fix.verdict)}</p>{best}"
    return '<div class="card"><h3>The fix</h3>' + body + "</div>"


def _gate_card(report: Report) -> str:
    gate = report.gate
    if gate is None:
        body = '<p class="na">not measured: no lab latency to gate</p>'
    else:
        source = "diagnose ci's budgets" if gate.source == "ci" else "the default budgets (what diagnose ci would say)"
        strict = ", strict" if gate.strict else ""
        checks = "".join(f"<li>{_badge(c.status)} {_e(c.message)}</li>" for c in gate.checks)
        body = f"<p>{_badge(gate.status)} on {_e(source)}{strict}</p><ul>{checks}</ul>"
    return '<div class="card"><h3>CI gate</h3>' + body + "</div>"


def _glance(report: Report) -> str:
    return ('<section class="glance" id="summary">' + _how_sure(report) + _top_cause(report) + _fix_card(report)
            + _gate_card(report) + "</section>")


# ---- latency and the factorial ---------------------------------------------------------------------------------------
def _latency(report: Report) -> str:
    lat = report.latency
    if lat is None:
        body = _unavailable(report, "benchmark", "no latency samples")
        if report.production is not None:
            body += "<p>Production's latency across the deploy is under Production signals.</p>"
        return _section("latency", "Latency (ms per batch)", body)
    old, new, d = lat.old.stats, lat.new.stats, lat.delta
    conf = f"{100 * d.confidence:g}% CI"
    rows = [[q, f"{getattr(old, q + '_ms'):.2f}", _ci(getattr(old, q + "_ci")), f"{getattr(new, q + '_ms'):.2f}",
             _ci(getattr(new, q + "_ci")), f"{getattr(d, q + '_pct'):+.1f}%", _ci(getattr(d, q + "_pct_ci"), "+.1f", "%")]
            for q in ("p50", "p90", "p99")]
    rows.append(["mean", f"{old.mean_ms:.2f}", "", f"{new.mean_ms:.2f}", "", "", ""])
    rows.append(["samples", str(old.n), "", str(new.n), "", "", ""])
    body = [_figure(plots.latency, report, f"ECDF of every batch's latency ({report.old} blue, {report.new} orange); "
                                           "dashed: p50, dotted: p99."),
            _table(["", report.old, conf, report.new, conf, "change", conf], rows, num={1, 2, 3, 4, 5, 6}),
            f"<p>{_e(d.test)} p = {d.p_value:.3g}; noise floor {lat.noise_floor_pct:g}%, alpha {lat.alpha:g}; "
            f"spread IQR/median {old.iqr_ratio:.1%} old, {new.iqr_ratio:.1%} new.</p>"]
    if lat.tail:
        t = lat.tail
        body.append(f"<p>p99 on its own: {_e(_words(t.verdict))} (median: {_e(_words(t.median_verdict))}; {t.samples} "
                    f"samples a side, {t.min_samples} needed; tail noise floor {t.noise_floor_pct:g}%).</p>")
    slo = report.slo
    if slo.p99_ms:
        body.append(f"<p>SLO p99 &le; {_e(slo.p99_ms)} ms: {_e(report.old)} {'meets' if slo.old_within else 'misses'} it, "
                    f"{_e(report.new)} {'meets' if slo.new_within else 'misses'} it.</p>")
    return _section("latency", "Latency (ms per batch)", "".join(body))


def _cells(report: Report) -> str:
    att = report.attribution
    if not report.cells and att is None:
        return _section("cells", "Model or inputs?", _unavailable(report, "benchmark", "no benchmark cells"))
    body = [_figure(plots.cells, report, "Left: each cell's median (a model on a request set). Right: the 2x2 "
                                         "factorial's effects on the median with their 95% CIs.")]
    if report.cells:
        order = [k for k in plots.CELL_ORDER if k in report.cells] + sorted(k for k in report.cells if k not in plots.CELL_ORDER)
        rows = [[k, c.n, f"{c.p50_ms:.3g}", f"{c.preprocess_p50_ms:.3g}", f"{c.infer_p50_ms:.3g}",
                 f"{c.input_elements_mean:.4g}", c.input_signature] for k, c in ((k, report.cells[k]) for k in order)]
        body.append(_table(["cell", "n", "p50 ms", "preprocess p50 ms", "infer p50 ms", "input elements (mean)",
                            "input signature"], rows, num={1, 2, 3, 4, 5}))
    if att is not None:
        rows = []
        for name in ("model", "input", "interaction"):
            e = att.effect(name)
            if e is not None:
                rows.append([name, f"{e.effect_ms:+.3g}", _ci(e.ci_ms, "+.3g"), _num(e.effect_pct, "+.1f", "%"),
                             "" if e.share is None else f"{100 * e.share:.0f}%", "yes" if e.significant else "no"])
        if rows:
            body.append(_table(["effect", "ms", "95% CI", "% of old", "share of change", "significant"], rows,
                               num={1, 2, 3, 4}))
        body.append(f'<p class="meta">{_e(att.method)}' + (f"; total change {att.total_ms:+.3g} ms" if att.total_ms
                                                           is not None else "") + ".</p>")
        if att.note:
            body.append(f"<p><em>{_e(att.note)}</em></p>")
        if att.unavailable:
            body.append("<ul>" + "".join(f"<li>cell {_e(k)} could not run: {_e(v)}</li>"
                                         for k, v in sorted(att.unavailable.items())) + "</ul>")
    return _section("cells", "Model or inputs?", "".join(body))


# ---- profile ---------------------------------------------------------------------------------------------------------
def _rows_table(rows: list[dict], title: str, limit: int = 10) -> str:
    out = [[r["key"], f"{r.get('old_calls', 0):g}", f"{r.get('new_calls', 0):g}", f"{r['old_self_us'] / 1000:.3f}",
            f"{r['new_self_us'] / 1000:.3f}", f"{r['delta_self_us'] / 1000:+.3f}",
            "" if r.get("share") is None else f"{100 * r['share']:.0f}%", r.get("status", "")] for r in rows[:limit]]
    return _table([title, "old calls", "new calls", "old ms", "new ms", "delta ms", "share", "status"], out,
                  num={1, 2, 3, 4, 5, 6})


def _profile(report: Report) -> str:
    p = report.profile
    title = "Where the time went (profiler, same requests on both sides)"
    if p is None:
        return _section("profile", title, _unavailable(report, "profile", "not profiled"))
    tot = p.totals
    body = []
    if "old_self_ms_per_step" in tot:
        body.append(f"<p>CPU op self time per step {tot['old_self_ms_per_step']:.2f} &rarr; "
                    f"{tot['new_self_ms_per_step']:.2f} ms; FLOPs per step {_num(tot.get('old_flops_per_step'))} &rarr; "
                    f"{_num(tot.get('new_flops_per_step'))}.</p>")
    body.append(_figure(plots.ops, report, "Operators whose self time per step changed the most (red: slower in "
                                           f"{report.new}, green: faster), with their share of the change."))
    if p.findings:
        body.append("<h3>Findings</h3><ul>" + "".join(f"<li>{_e(f)}</li>" for f in p.findings) + "</ul>")
    ops = p.tables.get("ops") or []
    if ops:
        body.append("<h3>Operators (self time per step)</h3>" + _rows_table(ops, "operator"))
    modules = p.tables.get("modules") or []
    if modules:
        body.append("<h3>Modules</h3>" + _rows_table(modules, "module", 8))
    regions = p.tables.get("regions") or []
    if regions:
        body.append("<h3>Regions (user annotations, collectives, the step; inclusive time)</h3>"
                    + _markdown_table(render_regions(regions, 8)))
    for key, words in (("ops_added", "only in new"), ("ops_removed", "only in old")):
        if tot.get(key):
            body.append(f"<p>Ops {words}: {_e(', '.join(map(str, tot[key])))}</p>")
    if p.traces:
        traces = ", ".join(f"{k}: {v}" for k, v in p.traces.items())
        body.append(f'<p class="meta">Traces: <code>{_e(traces)}</code> (open in Perfetto, or tensorboard --logdir '
                    f"<code>{_e(p.logdir)}</code> in the run folder).</p>")
    return _section("profile", title, "".join(body))


# ---- production ------------------------------------------------------------------------------------------------------
def _signals(report: Report) -> str:
    title = "Production signals"
    body = []
    p = report.production
    if p is not None:
        body.append(f"<p><strong>{_e(p.describe())}</strong></p>")
        what = "average" if p.statistic == "average" else p.statistic
        rows = [[f"{p.metric} ({p.server_label or ''})", what, f"{p.before_ms:.3g}", f"{p.after_ms:.3g}",
                 f"{p.change_pct:+.0f}%", _ci(p.ci_pct, "+.0f", "%"), _words(p.verdict)]]
        for role, part in p.parts.items():
            if part.get("before") is not None and part.get("after") is not None:
                rows.append([f"{part.get('metric')} ({role})", part.get("statistic", ""), f"{part['before']:.3g}",
                             f"{part['after']:.3g}", "", "", ""])
        body.append(_table(["metric", "statistic", "before (ms)", "after (ms)", "change", "95% CI", "verdict"], rows,
                           num={2, 3, 4, 5}))
        if p.windows:
            w = p.windows
            body.append(f"<p>Before: {_e(w['before'][0])} .. {_e(w['before'][1])}; after: {_e(w['after'][0])} .. "
                        f"{_e(w['after'][1])} (deployed {_e(p.deployed_at)}).</p>")
        if p.change_point:
            cp = p.change_point
            body.append(f"<p>The jump began at {_e(cp.get('at'))}, {_num(cp.get('lag_s'), '+.0f')} s from the deploy "
                        f"({_num(cp.get('step_pct'), '+.0f', '%')}).</p>")
    figure = _figure(plots.timelines, report, "Each signal against time (UTC); dashed: the deploy; dotted red: where "
                                              "the latency jumped (the change point); dash-dot red: the limit.")
    if figure:
        body.append(figure)
    else:
        source = report.timelines.source if report.timelines else "prometheus"
        body.append(_unavailable(report, source, "the signals hold no series over time"))
    return _section("signals", title, "".join(body))


# ---- drift -----------------------------------------------------------------------------------------------------------
def _drift(report: Report) -> str:
    title = "Did the requests change?"
    d = report.drift
    if d is None:
        return _section("drift", title, _unavailable(report, "drift", "the drift stage did not run"))
    if d.identical:
        return _section("drift", title, "<p>Both versions replayed the same request log.</p>")
    body = []
    tie = d.latency_tie or {}
    if tie.get("status") == "ok":
        body.append(f"<p><strong>Tied to latency:</strong> {_e(tie.get('text'))}.</p>")
    else:
        body.append(f'<p class="na">Latency tie: not available: {_e(tie.get("reason"))}</p>')
    changes = list(d.schema_changes) + [dict(c, text="model expects: " + str(c.get("text"))) for c in d.expected_schema]
    if changes:
        body.append(f"<h3>Schema: {len(changes)} change(s)</h3><ul>"
                    + "".join(f"<li>{_e(c.get('text'))}</li>" for c in changes) + "</ul>")
    else:
        body.append("<p>Schema: unchanged.</p>")
    body.append(f"<p>Drift: {len(d.drifted)} of {d.features_tested} features drifted.</p>")
    if d.drifted:
        rows = [[f.get("feature"), f.get("method"), _num(f.get("statistic")), _num(f.get("p_adjusted"), ".2g"),
                 _num(f.get("old_mean"), ".4g"), _num(f.get("new_mean"), ".4g")] for f in d.drifted[:15]]
        body.append(_table(["feature", "test", "statistic", "p (Holm)", "old mean", "new mean"], rows, num={2, 3, 4, 5}))
    figure = _figure(plots.drift, report, f"Per feature: {report.old} (solid) against {report.new} (dashed), ECDFs "
                                          "through the evidence's quantiles, or the top categories' shares; drifted "
                                          "features first.")
    if figure:
        body.append(figure)
    else:
        body.append('<p class="na">No distribution plot: this run\'s drift evidence keeps no quantiles or category '
                    "shares (run folders written before report schema 2.4).</p>")
    return _section("drift", title, "".join(body))


# ---- causes ----------------------------------------------------------------------------------------------------------
def _causes(report: Report) -> str:
    likely, unsupported = split_causes(report.hypotheses)
    body = []
    if not likely:
        body.append("<p>No cause is supported by the evidence collected.</p>")
    items = []
    for h in likely:
        words = [s for s in h.next_steps if not s.startswith(("$ ", "PromQL: "))]
        commands = [s for s in h.next_steps if s.startswith(("$ ", "PromQL: "))]
        width = max(0.0, min(1.0, h.score)) * 100
        parts = [f'<p><code>{_e(h.cause)}</code> <span class="score" title="score"><span style="width:{width:.0f}%">'
                 f"</span></span> score {h.score:.2f}</p><p>{_e(h.summary)}</p>"]
        if h.evidence:
            parts.append("<p><strong>Evidence</strong></p><ul>" + "".join(f"<li>{_e(x)}</li>" for x in h.evidence) + "</ul>")
        if words:
            parts.append("<p><strong>Next</strong></p><ul>" + "".join(f"<li>{_e(x)}</li>" for x in words) + "</ul>")
        for step in commands:
            label, text = ("Run", step.removeprefix("$ ")) if step.startswith("$ ") else ("Query", step[len("PromQL: "):])
            parts.append(f'<p class="meta">{label}:</p><pre><code>{_e(text)}</code></pre>')
        if h.missing:
            parts.append("<p><strong>Missing evidence</strong></p><ul>" + "".join(f"<li>{_e(x)}</li>" for x in h.missing)
                         + "</ul>")
        items.append(f'<li class="cause">{"".join(parts)}</li>')
    if items:
        body.append("<ol>" + "".join(items) + "</ol>")
    if unsupported:
        body.append(f"<h3>Not supported by the evidence (score below {LIKELY_MIN_SCORE:g}; report.json keeps them)</h3>"
                    "<ul>" + "".join(f"<li><code>{_e(h.cause)}</code> (score {h.score:.2f}): {_e(h.summary)}</li>"
                                     for h in unsupported) + "</ul>")
    if report.unjudged:
        body.append("<h3>Not judged, for want of evidence</h3>"
                    + _table(["cause", "needs"], [[u.get("cause"), u.get("missing")] for u in report.unjudged]))
    if report.rule_errors:
        body.append("<h3>Cause rules that failed</h3>"
                    + _table(["rule", "causes", "error"], [[e.rule, ", ".join(e.causes), e.error] for e in report.rule_errors]))
    return _section("causes", "Likely causes", "".join(body))


# ---- the fix ---------------------------------------------------------------------------------------------------------
def _fix(report: Report) -> str:
    title = "Fix (optimized variants of the new version, measured side by side)"
    fix = report.fix
    if fix is None:
        return _section("fix", title, _unavailable(report, "variants", "no variants were verified"))
    table = _markdown_table(render_fix(fix))
    limits = ", ".join(f"{k} {v}" for k, v in (fix.thresholds or {}).items() if v is not None)
    body = [f"<p>{_badge(fix.status)}</p>",
            _figure(plots.pareto, report, "Each variant's p99 against its accuracy drop; the Pareto front (no variant "
                                          "is both faster and closer) in bold."),
            table]
    if limits:
        body.append(f'<p class="meta">Limits: {_e(limits)}.</p>')
    return _section("fix", title, "".join(body))


# ---- the rest --------------------------------------------------------------------------------------------------------
def _warnings(report: Report) -> str:
    if not report.warnings:
        return _section("warnings", "Warnings", "<p>None.</p>")
    return _section("warnings", "Warnings", "<ul>" + "".join(f"<li>{_e(w)}</li>" for w in report.warnings) + "</ul>")


def _sources(report: Report) -> str:
    rows = [[name, _badge(s.status), s.reason or "", s.source or ""] for name, s in sorted(report.evidence_sources.items())]
    rows += [[f"cause rule {e.rule}", _badge("error"), e.error, ""] for e in report.rule_errors]
    return _section("sources", "Evidence sources", _table(["source", "status", "reason", "from"], rows))


def _flat(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value) or "-"
    return str(value)


def _environment(report: Report) -> str:
    env = report.environment or {}
    sides = [s for s in ("old", "new") if isinstance(env.get(s), dict)]
    if not sides:
        return _section("environment", "Environment", _unavailable(report, "environment", "not recorded"))
    keys: list[str] = []
    for side in sides:
        keys += [k for k in env[side] if k not in keys]
    rows = []
    for key in keys:
        if all(isinstance(env[s].get(key), dict) for s in sides if key in env[s]) and key == "libraries":
            names: list[str] = []
            for side in sides:
                names += [n for n in (env[side].get(key) or {}) if n not in names]
            rows += [[f"{key}: {n}"] + [_flat((env[s].get(key) or {}).get(n)) for s in sides] for n in names]
        else:
            rows.append([key] + [_flat(env[s].get(key)) for s in sides])
    labels = {"old": f"old ({report.old})", "new": f"new ({report.new})"}
    table = _table([""] + [labels[s] for s in sides], rows,
                   row_class=lambda i: "diff" if len(sides) == 2 and rows[i][1] != rows[i][2] else "")
    return _section("environment", "Environment", table + '<p class="meta">Rows that differ between the sides are '
                                                          "shaded.</p>")


def _reproduce(report: Report) -> str:
    body = []
    if report.reproduce:
        body.append("<p>Remake this report, and rerun the comparison:</p>"
                    + "".join(f"<pre><code>{_e(c)}</code></pre>" for c in report.reproduce))
    run = report.run
    rows = [["run folder", run.dir], ["started", run.started_at], ["budget (s)", run.budget_s], ["rounds", run.rounds],
            ["elapsed (s)", run.elapsed_s], ["stopped", run.stopped], ["registry", run.registry]]
    body.append(_table(["run", ""], [[k, "-" if v is None else v] for k, v in rows]))
    if report.baseline:
        body.append("<p>The old side's samples came from a saved baseline run:</p>"
                    + _table(["baseline", ""], [[k, _flat(v)] for k, v in report.baseline.items()]))
    return _section("reproduce", "How to reproduce", "".join(body))


def render(report: Report) -> str:
    title = f"{report.model}: {report.old} -> {report.new}: {_words(report.verdict)}"
    body = "".join([
        _header(report), _glance(report), _latency(report), _cells(report), _profile(report), _signals(report),
        _drift(report), _causes(report), _fix(report), _warnings(report), _sources(report), _environment(report),
        _reproduce(report),
    ])
    footer = (f"<footer>Made by {_e(report.tool.get('name', 'diagnose'))} {_e(report.tool.get('version', ''))} from "
              f"<code>{_e(report.run.dir)}</code>. Self-contained: this file loads nothing.</footer>")
    return ("<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{_e(report.tool.get("name", "diagnose"))}">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n"
            f"<body>{body}{footer}</body></html>\n")
