"""Overview: what happened and how sure (lab and production), the CI gate, and the ranked causes with their
evidence and next steps: the first screen someone on call reads."""

from __future__ import annotations

import streamlit as st

from app.context import Context
from app.widgets import VERDICT_LABELS, heading, md, report_or_stop
from diagnose.core.report import Report

COLOURS = {"regression": "red", "improvement": "green", "no_regression": "green", "inconclusive": "orange",
           "not_measured": "gray"}


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Overview")
    if report.incomplete:
        st.warning(f"This run was interrupted ({report.incomplete}): evidence may be missing.")
    colour = COLOURS.get(report.verdict, "gray")
    st.markdown(f"## :{colour}[{VERDICT_LABELS.get(report.verdict, report.verdict)}]")
    st.text(report.summary)
    _deltas(report)
    _gate(report)
    _hypotheses(report)
    if report.warnings:
        with st.expander(f"Warnings ({len(report.warnings)})"):
            for warning in report.warnings:
                st.text(warning)


def _pct(value: float) -> str:
    return f"{value:+.1f}%"


def _deltas(report: Report) -> None:
    """The latency changes with their CIs: the lab's p50/p90/p99, and production's headline statistic."""
    columns = st.columns(4)
    if report.latency is not None:
        delta, old, new = report.latency.delta, report.latency.old.stats, report.latency.new.stats
        for column, name in zip(columns, ("p50", "p90", "p99"), strict=False):
            lo, hi = getattr(delta, f"{name}_pct_ci")
            column.metric(f"lab {name} ({old.n}/{new.n} samples)", f"{getattr(new, f'{name}_ms'):.2f} ms",
                          delta=_pct(getattr(delta, f"{name}_pct")), delta_color="inverse",
                          help=f"old {getattr(old, f'{name}_ms'):.2f} ms; 95% CI of the change {_pct(lo)} .. {_pct(hi)}")
        columns[0].caption(f"p50 change 95% CI {_pct(delta.p50_pct_ci[0])} .. {_pct(delta.p50_pct_ci[1])}, "
                           f"Mann-Whitney p = {delta.p_value:.2g}")
        columns[2].caption(f"p99 change 95% CI {_pct(delta.p99_pct_ci[0])} .. {_pct(delta.p99_pct_ci[1])}")
    else:
        columns[0].metric("lab", "not measured")
    production = report.production
    if production is not None:
        columns[3].metric(f"production {production.statistic}", f"{production.after_ms:.2f} ms",
                          delta=_pct(production.change_pct), delta_color="inverse",
                          help=f"before the deploy {production.before_ms:.2f} ms; {production.metric}")
        columns[3].caption(f"95% CI {_pct(production.ci_pct[0])} .. {_pct(production.ci_pct[1])}: {production.verdict}")
        st.text(production.describe())
    else:
        columns[3].metric("production", "no signals")
    if report.attribution is not None and report.attribution.model is not None:
        parts = [f"{side} {effect.effect_ms:+.2f} ms" + (f" ({effect.share:.0%})" if effect.share is not None else "")
                 for side, effect in (("model", report.attribution.model), ("input", report.attribution.input))
                 if effect is not None]
        st.caption("attribution: " + ", ".join(parts))


def _gate(report: Report) -> None:
    gate = report.gate
    if gate is None:
        return
    label = "CI gate" if gate.source == "ci" else "CI gate (default budgets)"
    with st.expander(f"{label}: {gate.status.upper()}", expanded=gate.status == "fail"):
        for check in gate.checks:
            st.text(f"{check.status.upper():<13} {check.message}")


def _hypotheses(report: Report) -> None:
    st.subheader("Likely causes")
    likely = [h for h in report.hypotheses if h.score >= 0.05]
    if not likely:
        st.write("No cause is supported by the evidence collected.")
    for rank, h in enumerate(likely[:5], 1):
        with st.expander(f"{rank}. {h.cause} — {h.score:.2f}", expanded=rank == 1):
            st.markdown(f"**{md(h.summary)}**")
            for line in h.evidence:
                st.markdown(f"- {md(line)}")
            if h.next_steps:
                st.markdown("**Next steps**")
                for step in h.next_steps:
                    st.markdown(f"- {md(step)}")
            if h.missing:
                st.caption("missing evidence: " + "; ".join(md(m) for m in h.missing))
    rest = [h for h in report.hypotheses if h.score < 0.05]
    if rest:
        st.caption("not supported (score < 0.05): " + ", ".join(f"{h.cause} ({h.score:.2f})" for h in rest))
