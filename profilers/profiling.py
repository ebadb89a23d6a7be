"""Profile a pair of versions on the same requests and diff the traces: the profile stage's measurement.

A failure here (an exotic model the profiler cannot trace, a corrupt trace) comes back as an `error` evidence
with its reason, and the compare goes on: the diagnosis is degraded, not stopped. The stage
(`diagnose.stages.profile`) saves what this returns as the run folder's `profile` evidence.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diagnose.core.errors import first_line
from profilers.runners import LoadedVersion


def profile_pair(logdir: Path, versions: dict[str, LoadedVersion], requests: pd.DataFrame, relative_to: Path,
                 steps: int = 5) -> dict:
    """Profile old and new on `requests` into `logdir/<side>-<version>/` (a TensorBoard logdir), diff the traces;
    the evidence names its files relative to `relative_to` (the run folder). When ok, its `full` holds every row of
    the op tables (a frame, for evidence/op_diff.parquet; the caller takes it out)."""
    from profilers.torchprof import profile_version
    from profilers.tracediff import diff_traces
    from profilers.traces import read_trace

    try:
        paths = {side: profile_version(v, requests, logdir, f"{side}-{v.manifest.version}", steps=steps)
                 for side, v in versions.items()}
        diff = diff_traces(read_trace(paths["old"]), read_trace(paths["new"]), full=True)
        return {"status": "ok", "source": "torch.profiler", "steps": steps,
                "traces": {side: str(p.relative_to(relative_to)) for side, p in paths.items()},
                "logdir": str(Path(logdir).relative_to(relative_to)), **diff}
    except Exception as exc:  # the profiler is an optional evidence source: record, never crash
        return {"status": "error", "source": "torch.profiler", "reason": f"{type(exc).__name__}: {first_line(exc)}"[:400]}
