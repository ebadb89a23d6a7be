"""Signals: production's series across the deploy (latency, CFS throttling, memory against its limit, restarts, GPU
clocks) with the deploy time and the detected change point marked, a time window to move over all of them, and
what each evidence source held or why it is missing."""

from __future__ import annotations

from datetime import datetime, timezone

import altair as alt
import pandas as pd
import streamlit as st

from app.context import Context
from app.widgets import heading, md, report_or_stop
from diagnose.core.report import Report, Timeline

SCALES = {"bytes": (2**20, "MiB"), "ratio": (0.01, "%")}


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Signals")
    if report.production is not None:
        st.text(report.production.describe())
    timelines = report.timelines
    series = [s for s in (timelines.series if timelines else ()) if s.t and any(v is not None for v in s.values)]
    if not series:
        st.info("No production signals over time in this run (no --signals folder with Prometheus series, and no "
                "--prometheus).")
    else:
        _charts(report, series)
    _sources(report)


def _charts(report: Report, series: list[Timeline]) -> None:
    tl = report.timelines
    start = min(min(s.t) for s in series)
    end = max(max(s.t) for s in series)
    lo, hi = st.slider("Window (UTC)", min_value=_utc(start), max_value=_utc(end), value=(_utc(start), _utc(end)),
                       format="HH:mm", key="signals-window")
    marks = [{"what": "deploy", "t": _utc(tl.deployed_at_s)}] if tl.deployed_at_s is not None else []
    if tl.change_point_s is not None:
        marks.append({"what": "change point", "t": _utc(tl.change_point_s)})
    captions = [f"{m['what']} {m['t']:%Y-%m-%d %H:%M:%S} UTC" for m in marks]
    if captions:
        st.caption("; ".join(captions))
    rules = pd.DataFrame([m for m in marks if lo <= m["t"] <= hi])
    for s in series:
        div, unit = SCALES.get(s.unit, (1.0, s.unit))
        frame = pd.DataFrame({"time": [_utc(t) for t in s.t],
                              "value": [None if v is None else v / div for v in s.values]})
        frame = frame[(frame["time"] >= lo) & (frame["time"] <= hi)]
        line = alt.Chart(frame, title=f"{s.label} ({unit})", height=160).mark_line(point=len(frame) < 60).encode(
            x=alt.X("time:T", title=None), y=alt.Y("value:Q", title=unit), tooltip=["time:T", "value:Q"])
        layers = [line]
        if s.limit is not None:
            layers.append(alt.Chart(pd.DataFrame({"limit": [s.limit / div]})).mark_rule(color="red", strokeDash=[6, 3])
                          .encode(y="limit:Q"))
        if not rules.empty:
            layers.append(alt.Chart(rules).mark_rule(strokeDash=[4, 4]).encode(
                x="t:T", color=alt.Color("what:N", title=None), tooltip=["what", "t:T"]))
        st.altair_chart(alt.layer(*layers), width="stretch")


def _sources(report: Report) -> None:
    st.subheader("Evidence sources")
    rows = [{"source": name, "status": s.status, "reason": s.reason or "", "from": s.source or ""}
            for name, s in report.evidence_sources.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    missing = [u for u in report.unjudged]
    if missing:
        st.caption("causes no rule could judge: " + "; ".join(md(f"{u.get('cause')} (needs {u.get('missing')})")
                                                            for u in missing))
