"""What the app reads, cached: the run folders under a root, each one's typed Report, samples and op diff.

There is no second data model: a run is opened with `RunFolder` and its Report built by `diagnose.analysis.analyze`,
the same as `diagnose analyze RUN_DIR` (docs/architecture.md, "Add an app page"). The listing reads each run's
report.json summary fields only, so a folder of a hundred runs lists fast. Every cache is keyed by the folder's
path and the modification times of its files, so a run that a compare is still writing, or that `diagnose analyze`
rewrote, is read again, and an unchanged one is never read twice (a rerun of a page costs nothing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from diagnose.core.errors import UserError, first_line
from diagnose.core.report import Report
from diagnose.core.runfolder import RunFolder
from reports import get as report_format

RUNS_ENV = "DIAGNOSE_APP_RUNS"  # set by `diagnose app RUNS_DIR`
REPORT_JSON = report_format("json").filename


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def stamp(path: Path) -> tuple:
    """The modification times that change when a run folder's content does (its top files and evidence/)."""
    marks = []
    for folder in (path, path / RunFolder.EVIDENCE):
        try:
            with os.scandir(folder) as entries:
                marks += sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.is_file())
        except OSError:
            continue
    return tuple(marks)


@dataclass(frozen=True)
class RunRow:
    """One run folder in the listing."""

    name: str
    path: str
    model: str
    old: str
    new: str
    started_at: str
    verdict: str
    top_cause: str
    state: str  # "ok" | "incomplete" | "not analyzed" | "unreadable"
    note: str = ""


def _row(path: Path) -> RunRow | None:
    try:
        run = json.loads((path / RunFolder.RUN).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict) or "model" not in run:
        return None
    base = dict(name=path.name, path=str(path), model=str(run.get("model")), old=str(run.get("old")),
                new=str(run.get("new")), started_at=str(run.get("started_at") or ""))
    marker = path / RunFolder.INCOMPLETE
    try:
        report = json.loads((path / REPORT_JSON).read_text())
    except OSError:
        state = "incomplete" if marker.exists() else "not analyzed"
        note = marker.read_text().strip() if marker.exists() else f"no {REPORT_JSON} yet"
        return RunRow(**base, verdict="", top_cause="", state=state, note=note)
    except ValueError as exc:
        return RunRow(**base, verdict="", top_cause="", state="unreadable", note=f"{REPORT_JSON}: {first_line(exc)}")
    hypotheses = report.get("hypotheses") or []
    top = hypotheses[0]["cause"] if hypotheses and hypotheses[0].get("score", 0) >= 0.05 else ""
    return RunRow(**base, verdict=str(report.get("verdict", "")), top_cause=top,
                  state="incomplete" if marker.exists() else "ok",
                  note=marker.read_text().strip() if marker.exists() else "")


@st.cache_data(show_spinner=False, max_entries=64)
def _rows(root: str, stamps: tuple) -> list[RunRow]:
    rows = [_row(Path(root) / name) for name, _ in stamps]
    return sorted((r for r in rows if r is not None), key=lambda r: (r.started_at, r.name), reverse=True)


def list_runs(root: Path) -> list[RunRow]:
    """The run folders directly under `root` (those holding run.json), newest first."""
    try:
        folders = [e for e in os.scandir(root) if e.is_dir() and os.path.exists(os.path.join(e.path, RunFolder.RUN))]
    except OSError:
        return []
    stamps = tuple(sorted((e.name, _mtime(Path(e.path) / REPORT_JSON) + _mtime(Path(e.path) / RunFolder.INCOMPLETE))
                          for e in folders))
    return _rows(str(root), stamps)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(show_spinner=False, max_entries=16)
def _report(path: str, marks: tuple) -> Report | str:
    """The Report, or the one line saying why the folder cannot be read (cached too: a broken folder is not retried
    until it changes). Cached as a resource: the Report is immutable, and holds numpy arrays not worth pickling."""
    try:
        folder = RunFolder(path)
        folder.check_complete()
        return analyze_folder(folder)
    except UserError as exc:
        return str(exc)


def analyze_folder(folder: RunFolder) -> Report:
    """analyze, allowing what the folder itself records (an interrupted run with samples is shown, marked)."""
    from diagnose.analysis import analyze

    return analyze(folder, allow_env_mismatch=bool(folder.run().get("allow_env_mismatch")))


def load_report(path: Path) -> Report:
    """The run's Report; a folder that cannot be read raises UserError with its one line."""
    result = _report(str(path), stamp(path))
    if isinstance(result, str):
        raise UserError(result)
    return result


@st.cache_data(show_spinner=False, max_entries=8)
def _samples(path: str, marks: tuple) -> pd.DataFrame | None:
    try:
        return RunFolder(path).samples()
    except UserError:
        return None


def samples(path: Path) -> pd.DataFrame | None:
    """samples.parquet (every timed batch), or None when the run has none readable."""
    return _samples(str(path), stamp(path))


def warm(root: Path) -> None:
    """Build the newest run's Report into the cache before anyone asks (started in a thread by `diagnose app`): the
    first page a user opens is usually that run's overview, and its analysis is most of a cold render's server time."""
    runs = list_runs(root)
    if runs:
        try:
            load_report(root / runs[0].name)
        except UserError:
            pass  # the page will say why, in its own words


OP_TABLES = ("ops", "shapes", "modules", "module_shapes", "tree", "kernels", "regions")


@st.cache_resource(show_spinner=False, max_entries=4)
def _op_diff(path: str, marks: tuple) -> pd.DataFrame | None:
    """Cached as a resource, not pickled per rerun (100,000 rows are 28 MB): the pages filter it, never change it."""
    folder = RunFolder(path)
    full = folder.op_diff()
    profile = folder.evidence("profile")
    if profile.get("status") != "ok":
        return full
    # the regions table (inclusive time of annotations) is profile.json's; a folder written before op_diff.parquet
    # was kept has only profile.json's top rows of every table
    kept = {"regions"} if full is not None else set(profile["tables"])
    parts = [full] if full is not None else []
    for name in kept:
        rows = pd.DataFrame(profile["tables"].get(name) or [])
        if rows.empty:
            continue
        rows.insert(0, "table", name)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else None


def op_diff(path: Path) -> pd.DataFrame | None:
    """Every row of the trace diff's tables (column `table` says which), or None without a profile."""
    return _op_diff(str(path), stamp(path))
