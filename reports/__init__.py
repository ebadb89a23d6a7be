"""Renderers: a Report in, text out. No renderer computes anything; each only lays out the Report.

`FORMATS` is the one registry of output formats: it drives the CLI's `--format` choices and the files that
`compare` and `analyze` keep in the run folder (a format with a `filename`). A new format is one module with a
`render(report) -> str` plus one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reports import jsonfmt, markdown, terminal


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable  # (Report) -> str
    filename: str | None  # kept in the run folder under this name; None: printed only
    help: str


FORMATS: tuple[Format, ...] = (
    Format("summary", terminal.render, None, "the short summary the terminal shows"),
    Format("json", jsonfmt.render, "report.json", "report.json, the versioned machine-readable contract"),
    Format("markdown", markdown.render, "report.md", "report.md, the incident report for a ticket or chat"),
)


def names() -> list[str]:
    return [f.name for f in FORMATS]


def get(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown format {name!r}; choose from {', '.join(names())}")


def saved_formats() -> list[Format]:
    """The formats written into every run folder."""
    return [f for f in FORMATS if f.filename]
