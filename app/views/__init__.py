"""The app's pages, in the sidebar's order: each is a `render(ctx)` over the selected run's Report (app/data.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from app.context import Context


@dataclass(frozen=True)
class Page:
    slug: str  # the URL's ?page=
    title: str
    render: Callable[[Context], None]


def _pages() -> tuple[Page, ...]:
    from app.views import drift, fix, latency, new, ops, overview, runs, signals

    return (
        Page("runs", "Runs", runs.render),
        Page("overview", "Overview", overview.render),
        Page("latency", "Latency", latency.render),
        Page("ops", "Ops", ops.render),
        Page("signals", "Signals", signals.render),
        Page("drift", "Drift", drift.render),
        Page("fix", "Fix", fix.render),
        Page("new", "New investigation", new.render),
    )


PAGES = _pages()
