"""What every page is given (kept apart from app/views/__init__.py, which imports the pages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.data import RunRow


@dataclass(frozen=True)
class Context:
    """The runs folder, its runs (newest first) and the one picked in the sidebar."""

    root: Path
    runs: tuple[RunRow, ...]
    run: RunRow | None
