"""`diagnose profile` and `diagnose diff-traces`: the profiler on one version, the diff on any two traces."""

from __future__ import annotations

import json
from pathlib import Path

from diagnose.core.errors import UserError


def _single_trace(path: Path) -> Path:
    from profilers.traces import find_trace_files

    if not path.exists():
        raise UserError("trace file or folder not found", path)
    files = find_trace_files(path)
    if not files:
        raise UserError("no trace files (*.json, *.json.gz) in this folder", path)
    if len(files) > 1:
        names = ", ".join(f.name for f in files[:5])
        raise UserError(f"holds {len(files)} traces ({names}{', ...' if len(files) > 5 else ''}); pass one file", path)
    return files[0]


def diff_command(old: Path, new: Path, top: int, as_json: bool) -> str:
    from profilers.tracediff import diff_traces
    from profilers.traces import read_trace
    from reports.tables import render_diff

    diff = diff_traces(read_trace(_single_trace(old)), read_trace(_single_trace(new)), top=top)
    return json.dumps(diff, indent=2) + "\n" if as_json else render_diff(diff, top)


def profile_command(version: str, model: str | None, registry: str | None, requests: Path | None, steps: int,
                    top: int, out: Path | None) -> str:
    from diagnose.core.progress import status
    from diagnose.core.runfolder import new_dir
    from diagnose.registry import version_with_requests
    from profilers.runners import load_version
    from profilers.torchprof import profile_version
    from profilers.tracediff import profile_summary
    from profilers.traces import read_trace
    from reports.tables import render_profile

    manifest, frame = version_with_requests(registry, model, version, requests)
    name = manifest.name
    logdir = out or new_dir(Path("runs"), f"{name}-{version}-profile")
    with status(f"Profiling {name} {version}"):
        trace = profile_version(load_version(manifest), frame, logdir, version, steps=steps)
    summary = profile_summary(read_trace(trace), top=top)
    return (render_profile(summary, top) + f"\ntrace: {trace}\n"
            f"open it in https://ui.perfetto.dev or run: tensorboard --logdir {logdir}\n")
