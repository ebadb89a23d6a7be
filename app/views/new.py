"""New investigation: start a compare (registry, model, versions, budget, signals) and watch the compares this server
started: each one's progress, a Cancel while it runs (the run folder is then marked INCOMPLETE, as on Ctrl-C), and
an Open once its run folder is written.

The compare runs in a child process (app/jobs.py); the list below the form is a fragment that reruns on its own every
second while a compare runs, so the page never waits on one and the form stays usable meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import jobs
from app.context import Context
from app.widgets import md
from diagnose.core.errors import UserError

POLL_S = 1.0


def render(ctx: Context) -> None:
    st.header("New investigation")
    st.caption(f"Runs `diagnose compare` in the background, its run folder in {md(ctx.root)}.")
    _form(ctx.root)
    running = frozenset(job.name for job in jobs.listed(ctx.root) if job.state() == jobs.RUNNING)
    # polls only while a compare runs; the full rerun that follows a job's end turns the polling off again
    st.fragment(_job_list, run_every=POLL_S if running else None)(ctx.root, running)


def _form(root: Path) -> None:
    with st.form("new-investigation"):
        registry = st.text_input("Registry folder", key="new-registry",
                                 placeholder="empty: $DIAGNOSE_REGISTRY, ./models, else the embedded one")
        model = st.text_input("Model", key="new-model", placeholder="empty: the registry's default model")
        left, right = st.columns(2)
        old = left.text_input("Old version", key="new-old", placeholder="v1")
        new = right.text_input("New version", key="new-new", placeholder="v2")
        budget = st.number_input("Budget (seconds of measurement)", min_value=1.0, value=30.0, step=5.0,
                                 key="new-budget")
        signals = st.text_input("Signals folder (optional)", key="new-signals",
                                placeholder="recorded signals: docs/signals.md")
        started = st.form_submit_button("Start", type="primary", key="new-start")
    if not started:
        return
    try:
        job = jobs.start(root, jobs.JobOptions(old=old, new=new, registry=registry, model=model, budget_s=budget,
                                               signals=signals))
    except UserError as exc:
        st.error(md(exc))
        return
    st.success(f"Started {md(job.name)}")


def _job_list(root: Path, running_at_load: frozenset[str]) -> None:
    listed = jobs.listed(root)
    if any(job.name in running_at_load and job.state() != jobs.RUNNING for job in listed):
        st.rerun()  # the whole page: the sidebar lists the new run folder, and polling stops if none runs
    if not listed:
        st.caption("No compare started from this server yet.")
        return
    st.subheader("Compares started here")
    for job in listed:
        with st.container(border=True):
            _job(job)


def _job(job: jobs.Job) -> None:
    options = job.options
    state = job.state()
    st.markdown(f"**{md(job.name)}** · {md(options.model or 'default model')} {md(options.old)} → {md(options.new)}"
                f" · {'cancelling' if state == jobs.RUNNING and job.cancel_requested else state}")
    elapsed = job.elapsed()
    if state == jobs.RUNNING:
        st.progress(min(elapsed / options.budget_s, 1.0),
                    text=f"{elapsed:.0f} s elapsed of a {options.budget_s:g} s budget (loading and profiling add to it)")
        st.text(job.progress_line() or "starting")
        if not job.cancel_requested:
            st.button("Cancel", key=f"cancel-{job.name}", on_click=job.cancel)  # before the rerun that draws "cancelling"
        return
    if state == jobs.FAILED:
        st.error(md(job.error_line()))
    elif state == jobs.CANCELLED:
        st.warning(md(f"cancelled after {elapsed:.0f} s: " + (job.incomplete() or "stopped before its run folder was written")))
    else:
        st.success(f"finished in {elapsed:.0f} s")
    if job.has_run() and st.button("Open", key=f"open-{job.name}"):
        st.query_params["run"] = job.name
        st.query_params["page"] = "overview"
        st.session_state.pop("run", None)  # the sidebar's widgets then take the run and the page from the URL
        st.session_state.pop("page", None)
        st.rerun()
