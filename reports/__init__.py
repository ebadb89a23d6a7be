"""Renderers: a Report in, text out. No renderer computes anything; each only lays out the Report.

`FORMATS` is the one registry of output formats: it drives the CLI's `--format` choices and the files that
`compare` and `analyze` keep in the run folder (a format with a `filename` that is `saved`), and what `diagnose report`
writes. A new format is one module with a `render(report) -> str` (bytes for a binary one) plus one line here.
Renderers that need a heavy library (matplotlib, a browser) import it when they render, so `diagnose --help` stays
instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from reports import html, jsonfmt, junit, markdown, pdf, terminal


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable  # (Report) -> str; bytes when `binary`
    filename: str | None  # its file's name in a run folder; None: printed only
    help: str
    saved: bool = True  # written into every run folder by compare and analyze (else only on request)
    binary: bool = False
    aliases: tuple[str, ...] = ()


FORMATS: tuple[Format, ...] = (
    Format("summary", terminal.render, None, "the short summary the terminal shows"),
    Format("json", jsonfmt.render, "report.json", "report.json, the versioned machine-readable contract"),
    Format("markdown", markdown.render, "report.md", "report.md, the incident report for a ticket or chat",
           aliases=("md",)),
    Format("html", html.render, "report.html", "report.html, the self-contained incident report with plots"),
    Format("junit", junit.render, "junit.xml", "JUnit XML of the CI gate, for GitHub Actions, GitLab CI, Jenkins",
           saved=False),
    Format("pdf", pdf.render, "report.pdf", "report.pdf, the incident report on A4 (needs a headless Chromium)",
           saved=False, binary=True),
)


def names() -> list[str]:
    return [name for f in FORMATS for name in (f.name, *f.aliases)]


def get(name: str) -> Format:
    for fmt in FORMATS:
        if name == fmt.name or name in fmt.aliases:
            return fmt
    raise KeyError(f"unknown format {name!r}; choose from {', '.join(names())}")


def saved_formats(only: str | None = None) -> list[Format]:
    """The formats written into every run folder; `only` ($DIAGNOSE_RUN_REPORTS, e.g. "json,md") keeps fewer or
    others (report.json is always kept: it is the contract every reader of a run folder may look for)."""
    if only is None:
        return [f for f in FORMATS if f.filename and f.saved]
    wanted = [get(name.strip()) for name in only.split(",") if name.strip()]
    return [f for f in FORMATS if f.filename and (f.name == "json" or f in wanted)]
