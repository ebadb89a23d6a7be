"""The run folder: the single source of truth for one compare.

Everything that ranks or renders reads this folder, so `diagnose analyze RUN_DIR` sees exactly what the
compare saw. Every file is written atomically (temp file, fsync, rename). A marker file `INCOMPLETE` exists
from the first write until the report is in place; an interrupted run keeps it, with the reason inside.

Layout (docs/run-folder.md):
    run.json                  what was asked: command, registry, model, versions, budget, seed, times
    manifests/{old,new}.yaml  the manifests as read
    evidence/<source>.json    one file per evidence source: {"status": "ok"|"unavailable"|"error", ...}
    samples.parquet           raw per-batch latency samples of every benchmark cell
    report.json, report.md    derived; rewritten by `diagnose analyze`
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diagnose.core.errors import UserError

INCOMPLETE = "INCOMPLETE"
SAMPLES = "samples.parquet"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_parquet(path: Path, frame) -> None:
    _atomic(path, lambda fh: frame.to_parquet(fh, index=False))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("missing from the run folder", path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON (line {exc.lineno}): {exc.msg}", path) from None


def new_run_dir(base: Path, model: str, old: str, new: str) -> Path:
    return new_dir(base, f"{model}-{old}-vs-{new}")


def new_dir(base: Path, label: str) -> Path:
    """`base/<UTC timestamp>-<label>`, made unique; the label is reduced to safe file-name characters."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label)
    path = base / f"{stamp}-{slug}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{stamp}-{slug}-{suffix}"
    return path


def start(run_dir: Path) -> None:
    """Create the folder and mark it incomplete before anything else is written."""
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError("--out folder exists and is not empty; choose a new folder", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / INCOMPLETE, "running\n")


def mark_incomplete(run_dir: Path, reason: str) -> None:
    write_text(run_dir / INCOMPLETE, reason.rstrip() + "\n")


def finish(run_dir: Path) -> None:
    (run_dir / INCOMPLETE).unlink(missing_ok=True)


def check_complete(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UserError("run folder not found", run_dir)
    marker = run_dir / INCOMPLETE
    if marker.exists() and not (run_dir / SAMPLES).exists():
        reason = marker.read_text().strip() or "unknown"
        raise UserError(f"run folder is incomplete ({reason}); no samples were saved, rerun the compare", run_dir)
    if not (run_dir / "run.json").exists():
        raise UserError("not a diagnose run folder (no run.json)", run_dir)
