"""Fix: the variants the verify stage built and timed (ONNX Runtime, int8, config fixes...), as a table and as the
Pareto plot of p99 against accuracy drop, with the SLO and the old version's p99 as lines, and the verdict."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.context import Context
from app.widgets import heading, md, missing, report_or_stop

COLUMNS = ("name", "family", "p50_ms", "p99_ms", "speedup_p50", "speedup_p99", "p50_pct_vs_new", "p50_pct_vs_old",
           "accuracy_drop", "accuracy_ok", "meets_slo", "restores_old", "pareto", "cached", "build_s", "accuracy_note")


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Fix")
    fix = report.fix
    if fix is None:
        # the verify stage's evidence source is `variants` (diagnose/sources.py)
        missing(report, "variants", "variants were verified",
                "`diagnose optimize VERSION` or `diagnose compare --verify` builds and times them.")
        return
    st.markdown(f"**{fix.status.upper()}**: {md(fix.verdict)}")
    variants = pd.DataFrame(list(fix.variants))
    if not variants.empty:
        shown = variants[[c for c in COLUMNS if c in variants.columns]]
        st.dataframe(shown, hide_index=True, width="stretch")
        chart = _pareto(variants, fix.thresholds or {}, report)
        if chart is not None:
            st.altair_chart(chart, width="stretch")
    if fix.not_measured:
        st.subheader("Not measured")
        st.dataframe(pd.DataFrame(list(fix.not_measured)).astype(str), hide_index=True, width="stretch")


def _pareto(variants: pd.DataFrame, thresholds: dict, report) -> alt.Chart | None:
    if not {"p99_ms", "accuracy_drop"} <= set(variants.columns):
        return None
    points = variants.dropna(subset=["p99_ms", "accuracy_drop"]).assign(
        accuracy_drop_pct=lambda f: 100 * f["accuracy_drop"],
        front=lambda f: f["pareto"].fillna(False).astype(bool) if "pareto" in f.columns else False)
    if points.empty:
        return None
    base = alt.Chart(points[["name", "p99_ms", "accuracy_drop_pct", "front"]])
    layers = [base.mark_point(filled=True, size=80).encode(
                  x=alt.X("accuracy_drop_pct:Q", title="accuracy drop (%)"), y=alt.Y("p99_ms:Q", title="p99 (ms)"),
                  color=alt.Color("front:N", title="Pareto front"), tooltip=["name", "p99_ms", "accuracy_drop_pct"]),
              base.mark_text(align="left", dx=7, dy=-6).encode(x="accuracy_drop_pct:Q", y="p99_ms:Q", text="name:N")]
    lines = []
    if thresholds.get("p99_ms"):
        lines.append({"line": f"SLO p99 {thresholds['p99_ms']:g} ms", "p99_ms": float(thresholds["p99_ms"])})
    if report.latency is not None:
        lines.append({"line": f"old ({report.old}) p99", "p99_ms": report.latency.old.stats.p99_ms})
    if lines:
        layers.append(alt.Chart(pd.DataFrame(lines)).mark_rule(strokeDash=[6, 3]).encode(
            y="p99_ms:Q", color=alt.Color("line:N", title=None), tooltip=["line", "p99_ms"]))
    return alt.layer(*layers, title="p99 against accuracy drop").resolve_scale(color="independent")
