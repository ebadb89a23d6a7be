"""Drift: the request logs' schema diff against what the model expects, per-feature drift with the two sides'
distributions overlaid, and how much of the latency change the input shift explains."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.context import Context
from app.widgets import heading, md, missing, report_or_stop


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Drift")
    drift = report.drift
    if drift is None:
        missing(report, "drift", "drift evidence")
        return
    if drift.identical:
        st.info("Both versions replayed the same request log: nothing drifted between them.")
    st.subheader("Schema")
    if drift.schema_changes:
        st.dataframe(pd.DataFrame(list(drift.schema_changes)).astype(str), hide_index=True, width="stretch")
    else:
        st.write("No schema change between the two request logs.")
    if drift.expected_schema:
        with st.expander(f"Checked against the model's expected schema ({len(drift.expected_schema)} findings)"):
            st.dataframe(pd.DataFrame(list(drift.expected_schema)).astype(str), hide_index=True, width="stretch")
    st.subheader(f"Features ({drift.features_tested} tested, {len(drift.drifted)} drifted)")
    if drift.drifted:
        st.dataframe(pd.DataFrame(list(drift.drifted)).astype(str), hide_index=True, width="stretch")
    tie = drift.latency_tie or {}
    if tie.get("status") == "ok":
        st.markdown(f"**Latency tie:** {md(tie.get('text', ''))}")
    elif tie:
        st.caption(f"latency tie: {md(tie.get('reason', tie.get('status')))}")
    _distributions(drift.distributions, report.old, report.new)


def _distributions(rows, old: str, new: str) -> None:
    rows = [d for d in rows if d.get("quantiles") or d.get("categories")]
    if not rows:
        return
    st.subheader("Distributions, old against new")
    names = [d["feature"] for d in rows]
    picked = st.multiselect("Features", names, default=names[:6], key="drift-features")
    columns = st.columns(2)
    for i, d in enumerate(d for d in rows if d["feature"] in picked):
        title = f"{d['feature']} ({d.get('method', '')}, {'DRIFT' if d.get('drift') else 'no drift'})"
        columns[i % 2].altair_chart(_chart(d, title, old, new), width="stretch")


def _chart(d: dict, title: str, old: str, new: str) -> alt.Chart:
    if d.get("quantiles"):
        q = d["quantiles"]
        frame = pd.concat([pd.DataFrame({"version": f"old ({old})", "value": q["old"], "fraction": q["p"]}),
                           pd.DataFrame({"version": f"new ({new})", "value": q["new"], "fraction": q["p"]})])
        return alt.Chart(frame, title=title, height=220).mark_line(interpolate="step-after").encode(
            x=alt.X("value:Q"), y=alt.Y("fraction:Q", title="ECDF"), color="version:N", tooltip=["version", "value", "fraction"])
    c = d["categories"]
    frame = pd.concat([pd.DataFrame({"version": f"old ({old})", "value": c["values"], "share": c["old"]}),
                       pd.DataFrame({"version": f"new ({new})", "value": c["values"], "share": c["new"]})])
    return alt.Chart(frame, title=title, height=220).mark_bar().encode(
        x=alt.X("value:N", title=None), xOffset="version:N", y=alt.Y("share:Q"), color="version:N",
        tooltip=["version", "value", "share"])
