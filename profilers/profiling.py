"""The profiling stage of a compare: trace both versions on the same requests, diff, save as evidence.

A failure here (an exotic model the profiler cannot trace, a corrupt trace) is recorded in
`evidence/profile.json` with its reason and the compare goes on: the diagnosis is degraded, not stopped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diagnose.core import runfolder
from profilers.runners import LoadedVersion

PROFILE_DIR = "profile"  # <run>/profile/<side>-<version>/<worker>.<ts>.pt.trace.json.gz: a TensorBoard logdir


def profile_pair(run_dir: Path, versions: dict[str, LoadedVersion], requests: pd.DataFrame, steps: int = 5) -> dict:
    """Profile old and new on `requests`, diff the traces, write evidence/profile.json; return that evidence."""
    from profilers.torchprof import profile_version
    from profilers.tracediff import diff_traces
    from profilers.traces import read_trace

    logdir = run_dir / PROFILE_DIR
    try:
        paths = {side: profile_version(v, requests, logdir, f"{side}-{v.manifest.version}", steps=steps)
                 for side, v in versions.items()}
        diff = diff_traces(read_trace(paths["old"]), read_trace(paths["new"]))
        evidence = {"status": "ok", "source": "torch.profiler", "steps": steps,
                    "traces": {side: str(p.relative_to(run_dir)) for side, p in paths.items()},
                    "logdir": PROFILE_DIR, **diff}
    except Exception as exc:  # the profiler is an optional evidence source: record, never crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        evidence = {"status": "error", "source": "torch.profiler", "reason": f"{type(exc).__name__}: {first}"[:400]}
    runfolder.write_json(run_dir / "evidence" / "profile.json", evidence)
    return evidence
