"""report.json: the versioned machine-readable contract (schema: diagnose/schemas/report.schema.json)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diagnose.core.report import Report


def render(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"
