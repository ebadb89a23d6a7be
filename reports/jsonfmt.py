"""report.json: the versioned machine-readable contract (schema: diagnose/schemas/report.schema.json)."""

from __future__ import annotations

import json


def render(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"
