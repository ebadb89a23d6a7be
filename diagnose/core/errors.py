"""Errors that end a command with one clear line.

A `UserError` is the user's to fix (a bad manifest, a missing file): the CLI prints its message alone and
exits 2. Anything else that escapes is our bug: exit 1. Messages name the file and the key so the user
never needs a traceback to find what is wrong.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""

    def __init__(self, message: str, path: str | Path | None = None, key: str | None = None):
        self.path = str(path) if path is not None else None
        self.key = key
        where = ""
        if self.path:
            where = f"{self.path}: "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception as one line: its first non-blank line, else its type's name (tracebacks stay out of reports)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "") or type(exc).__name__
    return text[:limit] if limit else text


class CellUnavailable(Exception):
    """One cell of the benchmark (a model on a request set) cannot run; the compare goes on without it."""
