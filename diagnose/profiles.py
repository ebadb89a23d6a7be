"""`diagnose profile` and `diagnose diff-traces`: the profiler on one version, the diff on any two traces."""

from __future__ import annotations

import json
import re
from pathlib import Path

from diagnose.core.errors import UserError

_STEP_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
_MAX_STEPS = 1_000_000  # more step numbers than any profile holds: a typo (1-10000000000), not a request


def parse_iterations(text: str, flag: str = "--iterations") -> list[int]:
    """"1009-1011" or "1009,1010" (or both: "1009-1010,1012"): the ProfilerStep#N numbers to diff, as HTA's
    iterations; UserError naming the option for anything else."""
    steps: set[int] = set()
    for part in text.split(","):
        match = _STEP_RANGE.match(part.strip())
        if not match:
            raise UserError(f"expected step numbers such as 1009-1011 or 1009,1010, got {text!r}", key=flag)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise UserError(f"the range {part.strip()} ends before it starts", key=flag)
        if last - first >= _MAX_STEPS or len(steps) + last - first >= _MAX_STEPS:
            raise UserError(f"more than {_MAX_STEPS:,} steps in {text!r}", key=flag)
        steps.update(range(first, last + 1))
    return sorted(steps)


def _trace_files(path: Path) -> list[Path]:
    from profilers.traces import find_trace_files

    if not path.exists():
        raise UserError("trace file or folder not found", path)
    files = find_trace_files(path)
    if not files:
        raise UserError("no trace files (*.json, *.json.gz) in this folder", path)
    return files


def _single_trace(path: Path) -> Path:
    files = _trace_files(path)
    if len(files) > 1:
        names = ", ".join(f.name for f in files[:5])
        raise UserError(f"holds {len(files)} traces ({names}{', ...' if len(files) > 5 else ''}); pass one file, "
                        "or pick one with --rank", path)
    return files[0]


def _rank_of(path: Path):
    """The rank a trace records in its header, else the one its file name gives; None when neither does."""
    from profilers.trace_files import header_rank, rank_in_name

    rank = header_rank(path)
    return rank if rank is not None else rank_in_name(path)


def _read_rank(path: Path, rank: int | None, flag: str):
    """The trace of `rank` at `path`: the file itself, or, in a folder of per-rank traces, the one whose
    distributedInfo.rank (or file name, "rank-3...") is `rank`; checked again once parsed."""
    from profilers.trace_files import rank_in_name
    from profilers.traces import TraceError, read_trace

    if rank is None:
        return read_trace(_single_trace(path))
    files = _trace_files(path)
    trace = None
    if len(files) == 1:
        chosen = files[0]
    else:
        ranks = {f: _rank_of(f) for f in files}
        matches = [f for f, r in ranks.items() if r == rank]
        if len(matches) > 1:
            raise UserError(f"holds {len(matches)} traces of rank {rank} ({', '.join(f.name for f in matches[:5])}); "
                            "pass one file", path, key=flag)
        unknown = [f for f, r in ranks.items() if r is None] if not matches else []
        for candidate in unknown:  # a rank written after the events: only a parse finds it
            try:
                parsed = read_trace(candidate)
            except TraceError:
                continue
            ranks[candidate] = parsed.metadata.get("rank")
            if ranks[candidate] == rank:
                matches, trace = [candidate], parsed
                break
        if not matches:
            known = sorted({r for r in ranks.values() if r is not None})
            listed = f"ranks {', '.join(map(str, known))}" if known else "none records a rank"
            raise UserError(f"no trace of rank {rank} among its {len(files)} ({listed})", path, key=flag)
        chosen = matches[0]
    trace = trace or read_trace(chosen)
    recorded = trace.metadata.get("rank")
    if recorded is None:
        recorded = rank_in_name(chosen)
    if recorded is None:
        raise UserError(f"records no rank (no distributedInfo.rank, none in its name) to match rank {rank}", chosen, key=flag)
    if recorded != rank:
        raise UserError(f"holds rank {recorded}, not rank {rank}", chosen, key=flag)
    return trace


def diff_command(old: Path, new: Path, top: int, as_json: bool, iterations: str | None = None,
                 rank: int | None = None, new_iterations: str | None = None, new_rank: int | None = None) -> str:
    """`diagnose diff-traces`: the two traces (of the ranks asked, cut to the steps asked), diffed and rendered."""
    from profilers.tracediff import diff_traces
    from reports.sections import render_regions
    from reports.tables import render_diff

    old_steps = parse_iterations(iterations) if iterations is not None else None
    new_steps = parse_iterations(new_iterations, "--new-iterations") if new_iterations is not None else old_steps
    new_flag = "--new-iterations" if new_iterations is not None else "--iterations"
    sides = []
    for path, side_rank, rank_flag, steps, steps_flag in (
            (old, rank, "--rank", old_steps, "--iterations"),
            (new, rank if new_rank is None else new_rank, "--rank" if new_rank is None else "--new-rank", new_steps,
             new_flag)):
        trace = _read_rank(path, side_rank, rank_flag)
        sides.append(trace.select_steps(steps, key=steps_flag) if steps is not None else trace)
    diff = diff_traces(*sides, top=top)
    if as_json:
        return json.dumps(diff, indent=2) + "\n"
    regions = diff["tables"].get("regions")
    return render_diff(diff, top) + (f"\nBy region (per step; inclusive ms):\n{render_regions(regions, top)}" if regions else "")


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
