"""The app's entry script (`streamlit run app/main.py`, started by `diagnose app`): the sidebar picks a page and a run,
and the page renders it. The page and the run are in the URL (`?page=ops&run=NAME`), so a link opens the same view."""

from __future__ import annotations

import streamlit as st

from app import data
from app.context import Context
from app.views import PAGES

st.set_page_config(page_title="diagnose", page_icon=None, layout="wide")


def _pick(options: list[str], wanted: str | None, default: int = 0) -> int:
    return options.index(wanted) if wanted in options else default


def main() -> None:
    root = data.runs_root()
    titles = [page.title for page in PAGES]
    slugs = [page.slug for page in PAGES]
    params = st.query_params
    with st.sidebar:
        st.title("diagnose")
        st.caption(f"runs in {root}")
        title = st.radio("Page", titles, index=_pick(slugs, params.get("page")), key="page")
        runs = data.list_runs(root)
        names = [r.name for r in runs]
        run_name = st.selectbox("Run", names, index=_pick(names, params.get("run")), key="run",
                                placeholder="no run folder yet") if names else None
    page = PAGES[titles.index(title)]
    params["page"] = page.slug
    if run_name:
        params["run"] = run_name
    run = next((r for r in runs if r.name == run_name), None)
    page.render(Context(root=root, runs=tuple(runs), run=run))


main()
