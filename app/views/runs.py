"""Runs: every run folder with its verdict, model, versions, date and top cause; pick one to open, or two to compare
(the same pair on different days: did the fix hold?)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data
from app.context import Context
from app.widgets import VERDICT_LABELS, md
from diagnose.core.errors import UserError


def render(ctx: Context) -> None:
    st.header("Runs")
    if not ctx.runs:
        st.info(f"No run folder in {md(ctx.root)} yet: start one on the New investigation page, or run "
                "`diagnose compare --old v1 --new v2`.")
        return
    table = pd.DataFrame([{"run": r.name, "verdict": VERDICT_LABELS.get(r.verdict, r.verdict), "model": r.model,
                           "old": r.old, "new": r.new, "started": r.started_at, "top cause": r.top_cause,
                           "state": r.state, "note": r.note} for r in ctx.runs])
    st.dataframe(table, hide_index=True, width="stretch")
    names = [r.name for r in ctx.runs]
    left, right = st.columns(2)
    opened = left.selectbox("Open a run", names, index=None, placeholder="pick a run", key="runs-open")
    if opened:
        st.query_params["run"] = opened
        st.query_params["page"] = "overview"
        st.session_state.pop("run", None)
        st.session_state.pop("page", None)
        st.rerun()
    pair = right.multiselect("Compare two runs", names, max_selections=2, key="runs-pair")
    if len(pair) == 2:
        _compare(ctx, *pair)


def _figures(ctx: Context, name: str) -> dict:
    """One run's headline figures for the side-by-side table."""
    report = data.load_report(ctx.root / name)
    row = {"run": name, "model": report.model, "versions": f"{report.old} -> {report.new}",
           "verdict": VERDICT_LABELS.get(report.verdict, report.verdict),
           "top cause": next((h.cause for h in report.hypotheses if h.score >= 0.05), "")}
    if report.latency is not None:
        delta, new = report.latency.delta, report.latency.new.stats
        row.update({"p50 change": f"{delta.p50_pct:+.1f}% [{delta.p50_pct_ci[0]:+.1f}, {delta.p50_pct_ci[1]:+.1f}]",
                    "p99 change": f"{delta.p99_pct:+.1f}% [{delta.p99_pct_ci[0]:+.1f}, {delta.p99_pct_ci[1]:+.1f}]",
                    "new p50 ms": round(new.p50_ms, 3), "new p99 ms": round(new.p99_ms, 3)})
    if report.production is not None:
        row["production"] = f"{report.production.statistic} {report.production.change_pct:+.0f}% ({report.production.verdict})"
    return row


def _compare(ctx: Context, first: str, second: str) -> None:
    try:
        rows = [_figures(ctx, first), _figures(ctx, second)]
    except UserError as exc:
        st.error(md(exc))
        return
    rows.sort(key=lambda r: next(x.started_at for x in ctx.runs if x.name == r["run"]))
    st.dataframe(pd.DataFrame(rows).astype(str), hide_index=True, width="stretch")
    earlier, later = rows
    if "new p99 ms" in earlier and "new p99 ms" in later:
        change = 100 * (later["new p99 ms"] / earlier["new p99 ms"] - 1) if earlier["new p99 ms"] else float("nan")
        held = "held" if later["verdict"] in ("NO REGRESSION", "IMPROVEMENT") else "did not hold"
        st.markdown(f"From {md(earlier['run'])} to {md(later['run'])}: the new side's p99 moved {change:+.1f}%, and the "
                    f"later run's verdict is **{later['verdict']}**: the fix {held}. Compare these across runs with care: "
                    "they were measured at different times, not interleaved.")
