"""Ops: the trace diff as sortable, filterable, paged tables and a bar chart of the top contributors, a drill-down
by module path and input shape, the Chrome traces to download and the TensorBoard command.

The tables are evidence/op_diff.parquet (every row; profile.json keeps the top 25): a run with 100,000 rows is
filtered and sorted in pandas on the server, and only one page of rows goes to the browser."""

from __future__ import annotations

import shlex

import altair as alt
import pandas as pd
import streamlit as st

from app import data
from app.context import Context
from app.widgets import heading, md, missing, paged, report_or_stop

TABLE_TITLES = {"ops": "operators", "shapes": "operator x input shape", "modules": "module paths",
                "module_shapes": "module path x operator x input shape", "tree": "call paths", "kernels": "GPU kernels",
                "regions": "regions (annotations, inclusive time)"}
SORTABLE = ("|delta_self_us|", "delta_self_us", "delta_total_us", "share", "new_self_us", "old_self_us", "delta_calls",
            "key")
COLUMNS = ("key", "status", "old_calls", "new_calls", "old_self_us", "new_self_us", "delta_self_us", "old_total_us",
           "new_total_us", "delta_total_us", "share", "old_flops", "new_flops")
BARS = 15


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Ops")
    run_dir = ctx.root / ctx.run.name
    diff = data.op_diff(run_dir)
    if report.profile is None or diff is None or diff.empty:
        missing(report, "profile", "op-level diff")
        return
    for finding in report.profile.findings:
        st.markdown(f"- {md(finding)}")
    _totals(report.profile.totals)
    present = [name for name in TABLE_TITLES if (diff["table"] == name).any()]
    name = st.selectbox("Table", present, format_func=lambda n: f"{n}: {TABLE_TITLES[n]}", key="ops-table")
    table = _filtered(diff[diff["table"] == name], name)
    st.altair_chart(_bars(table), width="stretch")
    columns = [c for c in COLUMNS if c in table.columns] + (["kind"] if "kind" in table.columns else [])
    st.dataframe(paged(table, f"ops-{name}")[columns], hide_index=True, width="stretch")
    if (diff["table"] == "module_shapes").any():
        _drill_down(diff[diff["table"] == "module_shapes"])
    _traces(ctx, report.profile)


def _totals(totals: dict) -> None:
    columns = st.columns(3)
    columns[0].metric("CPU op self time per step", f"{totals.get('new_self_ms_per_step', 0):.3f} ms",
                      delta=f"{totals.get('delta_self_ms_per_step', 0):+.3f} ms", delta_color="inverse")
    columns[1].metric("step time", f"{totals.get('new_step_ms', 0):.3f} ms",
                      delta=f"{totals.get('new_step_ms', 0) - totals.get('old_step_ms', 0):+.3f} ms", delta_color="inverse")
    columns[2].metric("calls per step", f"{totals.get('new_calls_per_step', 0):g}",
                      delta=f"{totals.get('new_calls_per_step', 0) - totals.get('old_calls_per_step', 0):+g}",
                      delta_color="off")
    added, removed = totals.get("ops_added") or [], totals.get("ops_removed") or []
    if added or removed:
        st.caption(f"ops added: {md(', '.join(added) or 'none')}; removed: {md(', '.join(removed) or 'none')}")


def _filtered(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The table filtered by a substring of its key and by status, sorted as picked."""
    left, middle, right = st.columns([3, 2, 2])
    needle = left.text_input("Filter (substring of the key)", key=f"ops-filter-{name}")
    statuses = sorted(table["status"].dropna().unique())
    picked = middle.multiselect("Status", statuses, default=statuses, key=f"ops-status-{name}")
    order = right.selectbox("Sort by", SORTABLE, key=f"ops-sort-{name}")
    if needle:
        table = table[table["key"].str.contains(needle, case=False, regex=False, na=False)]
    table = table[table["status"].isin(picked)]
    measure = "delta_total_us" if name == "regions" else "delta_self_us"
    if order == "|delta_self_us|":
        return table.iloc[table[measure].abs().argsort(kind="stable")[::-1]]
    if order not in table.columns:
        return table
    return table.sort_values(order, ascending=order == "key", kind="stable")


def _bars(table: pd.DataFrame) -> alt.Chart:
    measure = "delta_self_us" if "delta_self_us" in table.columns and table["delta_self_us"].notna().any() \
        else "delta_total_us"
    top = table.iloc[table[measure].abs().argsort(kind="stable")[::-1][:BARS]][["key", measure, "status"]]
    return alt.Chart(top, title=f"top {len(top)} by |{measure}| (µs per step)").mark_bar().encode(
        x=alt.X(f"{measure}:Q", title=f"{measure} (µs/step)"),
        y=alt.Y("key:N", sort=None, title=None, axis=alt.Axis(labelLimit=420)),
        color=alt.Color("status:N"), tooltip=["key", measure, "status"])


def _drill_down(rows: pd.DataFrame) -> None:
    """One module path's operators and their input shapes (largest change first)."""
    st.subheader("Drill down by module path")
    modules = rows.assign(size=rows["delta_self_us"].abs()).groupby("module", sort=False)["size"].sum()
    modules = modules.sort_values(ascending=False, kind="stable")
    needle = st.text_input("Module path contains", key="ops-module-filter")
    options = [m for m in modules.index if needle.lower() in m.lower()][:500]
    if not options:
        st.info("No module path matches.")
        return
    module = st.selectbox("Module path", options, format_func=lambda m: m or "(no module)", key="ops-module")
    inside = rows[rows["module"] == module]
    ops = inside.groupby("op", sort=False)[["old_self_us", "new_self_us", "delta_self_us"]].sum()
    ops = ops.iloc[ops["delta_self_us"].abs().argsort(kind="stable")[::-1]].reset_index()
    st.dataframe(ops, hide_index=True, width="stretch")
    op = st.selectbox("Operator", list(ops["op"]), key="ops-module-op")
    shapes = inside[inside["op"] == op][["shape", "status", "old_calls", "new_calls", "old_self_us", "new_self_us",
                                        "delta_self_us", "share"]]
    st.dataframe(paged(shapes, "ops-shapes"), hide_index=True, width="stretch")


def _traces(ctx: Context, profile) -> None:
    st.subheader("Traces")
    run_dir = ctx.root / ctx.run.name
    columns = st.columns(len(profile.traces) or 1)
    for column, (side, relative) in zip(columns, profile.traces.items(), strict=False):
        path = run_dir / relative
        if path.is_file():
            # the bytes are read when the button is clicked (a trace can be hundreds of MB), and the click reruns nothing
            column.download_button(f"Chrome trace, {side} ({md(path.name)})", data=path.read_bytes, file_name=path.name,
                                   mime="application/gzip", key=f"trace-{side}", on_click="ignore")
        else:
            column.caption(f"{side}: {md(relative)} is not in the run folder")
    st.caption("Open a trace in Perfetto (ui.perfetto.dev) or chrome://tracing; or the TensorBoard log dir:")
    st.code(f"tensorboard --logdir {shlex.quote(str(run_dir / profile.logdir))}", language="bash")
