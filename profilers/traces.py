"""Kineto (PyTorch Profiler) Chrome-trace JSON files, parsed once into a normalized table.

`read_trace(path)` parses a trace once into a normalized, columnar table (`Trace`, in the spirit of HTA's
"parse once into a normalized table") that the diff engine and the CLI work from. This module is the small
facade over the pieces that do it, each in its own module:

- `trace_files`: finding trace files (`find_trace_files`), checking and opening one (gzip or plain), `TraceError`;
- `trace_fast_reader`: the default path, orjson over chunks of the stream (its scanner: `json_scan`);
- `trace_ijson_reader`: the streaming ijson path, which reads whatever the fast path declines and words every
  error;
- `trace_columns`: the typed column builder both paths feed, so that both give the same rows, codes and counts
  (its conversions of raw values: `trace_values`);
- `trace_table`: the `Trace` type and its construction (the `cat` values: `trace_categories`; the parent of
  each event: `trace_nesting`).

Streaming: the JSON document is never held in memory, and neither is a list of all its event dicts (at most
a batch of them, a bounded number of bytes' worth), so memory is bounded by the number of kept events times a
few dozen bytes, not by the file size.
"""

from __future__ import annotations

from pathlib import Path

from profilers.trace_categories import CATEGORIES
from profilers.trace_fast_reader import read_fast
from profilers.trace_files import TraceError, check_trace_file, find_trace_files
from profilers.trace_ijson_reader import read_ijson
from profilers.trace_table import Trace, build_trace

__all__ = ["CATEGORIES", "Trace", "TraceError", "find_trace_files", "read_trace"]


def read_trace(path: str | Path, keep_python: bool = False, *, parser: str = "auto") -> Trace:
    """Parse one Kineto trace (.json or .json.gz) into a `Trace`; TraceError for any bad input.

    parser: "auto" (the fast path, and the ijson path for whatever it does not read: the same result, and
    the ijson path's messages for bad input), "ijson" (only the streaming ijson path), or "fast" (only the
    fast path: raises whatever made it give up; for tests and benchmarks).
    """
    if parser not in ("auto", "fast", "ijson"):
        raise ValueError(f"parser must be 'auto', 'fast' or 'ijson', not {parser!r}")
    path = Path(path)
    check_trace_file(path)
    if parser != "ijson":
        try:
            cols, info, header = read_fast(path, keep_python)
        except Exception:
            if parser == "fast":
                raise
        else:
            return build_trace(path, cols, info, header)
    return build_trace(path, *read_ijson(path, keep_python))
