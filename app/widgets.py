"""Small pieces the pages share: showing untrusted text as text, the selected run's Report, paged tables."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from app import data
from app.context import Context
from diagnose.core.errors import UserError
from diagnose.core.report import Report

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md(text: object) -> str:
    """A string from a model, trace, manifest, request log or label, escaped for st.markdown: its Markdown and HTML
    characters shown as they are, never interpreted."""
    return _MARKDOWN.sub(r"\\\1", str(text))


VERDICT_LABELS = {"regression": "REGRESSION", "improvement": "IMPROVEMENT", "no_regression": "NO REGRESSION",
                  "inconclusive": "INCONCLUSIVE", "not_measured": "NOT MEASURED"}


def report_or_stop(ctx: Context) -> Report:
    """The selected run's Report; without a run, or when it cannot be read, says why and stops the page."""
    if ctx.run is None:
        st.info(f"No run folder in {md(ctx.root)} yet: start one on the New investigation page, or run "
                "`diagnose compare --old v1 --new v2`.")
        st.stop()
    try:
        return data.load_report(ctx.root / ctx.run.name)
    except UserError as exc:
        st.error(md(f"{ctx.run.name}: {exc}"))
        st.stop()


def missing(report: Report, source: str, what: str, hint: str = "") -> None:
    """A page whose evidence this run lacks: one line saying what is missing and the source's own reason."""
    status = report.evidence_sources.get(source)
    reason = f": {md(status.reason)}." if status is not None and status.reason else "."
    st.info(f"No {what} in this run{reason}" + (f" {hint}" if hint else ""))


def heading(report: Report, page: str) -> None:
    st.header(page)
    st.caption(f"{md(report.model)} {md(report.old)} -> {md(report.new)} · "
               f"{VERDICT_LABELS.get(report.verdict, report.verdict)} · {md(report.run.dir)}")


def paged(frame: pd.DataFrame, key: str, page_size: int = 50) -> pd.DataFrame:
    """One page of `frame`, with a page picker under it when it has more rows than fit: a table of 100,000 rows
    sends 50 to the browser, not all of them."""
    pages = max(1, -(-len(frame) // page_size))
    number = 1
    if pages > 1:
        number = int(st.number_input(f"Page (of {pages:,}, {len(frame):,} rows)", min_value=1, max_value=pages, value=1,
                                     step=1, key=f"{key}-page"))
    return frame.iloc[(number - 1) * page_size: number * page_size]
