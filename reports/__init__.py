"""Renderers: a report dict in, text out. No renderer computes anything; they only lay out the report.

FORMATS is the registry of output formats: name -> (file name in the run folder, render function).
"""

from __future__ import annotations

from reports.jsonfmt import render as render_json
from reports.markdown import render as render_markdown

FORMATS = {
    "json": ("report.json", render_json),
    "markdown": ("report.md", render_markdown),
}
