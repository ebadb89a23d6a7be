"""Latency: both versions' distributions (CDF and histogram) from the raw samples, the factorial's cells, and
latency against request size, filtered by cell and latency range. The figures are the Report's; the plots draw the
samples.parquet rows those figures were derived from."""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app import data
from app.context import Context
from app.widgets import heading, report_or_stop
from diagnose.core.report import Report

CELL_NAMES = {"old_model/old_requests": "old", "new_model/new_requests": "new",
              "new_model/old_requests": "new model, old requests", "old_model/new_requests": "old model, new requests"}
MAX_POINTS = 4000  # a plot draws at most this many points a cell: more shows nothing more and slows the browser


def render(ctx: Context) -> None:
    report = report_or_stop(ctx)
    heading(report, "Latency")
    _table(report)
    frame = data.samples(ctx.root / ctx.run.name)
    if frame is None or frame.empty:
        st.info("This run replayed nothing here (--no-benchmark): there are no lab samples to plot.")
        return
    frame = frame.assign(version=frame["cell"].map(CELL_NAMES).fillna(frame["cell"]))
    versions = list(dict.fromkeys(frame["version"]))
    picked = st.multiselect("Cells", versions, default=[v for v in versions if v in ("old", "new")] or versions,
                            key="latency-cells")
    shown = frame[frame["version"].isin(picked)]
    if shown.empty:
        st.info("Pick at least one cell.")
        return
    low = math.floor(float(shown["latency_ms"].min()) * 1000) / 1000  # to the µs, outwards: every sample inside
    top = math.ceil(float(shown["latency_ms"].max()) * 1000) / 1000
    lo, hi = st.slider("Latency range (ms)", min_value=low, max_value=max(top, low + 0.001), value=(low, top),
                       step=0.001, format="%.3f", key="latency-range")
    shown = shown[shown["latency_ms"].between(lo, hi)]
    st.caption(f"{len(shown):,} timed batches shown")
    left, right = st.columns(2)
    left.altair_chart(_cdf(shown), width="stretch")
    right.altair_chart(_histogram(shown), width="stretch")
    st.subheader("Latency against request size")
    st.altair_chart(_by_size(shown), width="stretch")


def _table(report: Report) -> None:
    if report.latency is not None:
        rows = []
        for side, m in (("old", report.latency.old), ("new", report.latency.new)):
            s = m.stats
            rows.append({"version": f"{side} ({getattr(report, side)})", "samples": s.n, "mean_ms": s.mean_ms,
                         "p50_ms": s.p50_ms, "p90_ms": s.p90_ms, "p99_ms": s.p99_ms,
                         "p99_ci_ms": f"{s.p99_ci[0]:.3f} .. {s.p99_ci[1]:.3f}", "iqr/median": s.iqr_ratio})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if report.cells:
        st.subheader("Factorial cells")
        cells = pd.DataFrame([{"cell": CELL_NAMES.get(key, key), **cell.to_dict()} for key, cell in report.cells.items()])
        st.dataframe(cells, hide_index=True, width="stretch")
        if report.attribution is not None and report.attribution.note:
            st.caption(report.attribution.note)


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([g.sample(MAX_POINTS, random_state=0) if len(g) > MAX_POINTS else g
                      for _, g in frame.groupby("version", sort=False)])


def _cdf(frame: pd.DataFrame) -> alt.Chart:
    parts = []
    for version, group in frame.groupby("version", sort=False):
        values = np.sort(group["latency_ms"].to_numpy())
        step = max(1, len(values) // MAX_POINTS)
        idx = np.r_[np.arange(0, len(values), step), len(values) - 1]
        parts.append(pd.DataFrame({"version": version, "latency_ms": values[idx], "fraction": (idx + 1) / len(values)}))
    cdf = pd.concat(parts, ignore_index=True)
    return alt.Chart(cdf, title="CDF").mark_line(interpolate="step-after").encode(
        x=alt.X("latency_ms:Q", title="latency (ms)"), y=alt.Y("fraction:Q", title="fraction of batches"),
        color="version:N", tooltip=["version", "latency_ms", "fraction"])


def _histogram(frame: pd.DataFrame) -> alt.Chart:
    return alt.Chart(_thin(frame)[["version", "latency_ms"]], title="Histogram").mark_bar(opacity=0.5).encode(
        x=alt.X("latency_ms:Q", bin=alt.Bin(maxbins=60), title="latency (ms)"),
        y=alt.Y("count():Q", stack=None, title="batches"), color="version:N")


def _by_size(frame: pd.DataFrame) -> alt.Chart:
    points = _thin(frame)[["version", "input_elements", "latency_ms", "request_index"]]
    return alt.Chart(points).mark_circle(size=18, opacity=0.5).encode(
        x=alt.X("input_elements:Q", title="input elements per batch"), y=alt.Y("latency_ms:Q", title="latency (ms)"),
        color="version:N", tooltip=["version", "request_index", "input_elements", "latency_ms"]).interactive()
