"""The bottom layer: what every other package may import, and which imports nothing of theirs.

errors (UserError, the one-line message), the manifest, request logs, the run folder, progress display, and
the result types (Evidence, the Report). Orchestration (`diagnose`), `profilers`, `collectors`, `reports`,
`fixtures` and the app all build on it; `tests/test_layering.py` fails when an import goes the wrong way.
"""
