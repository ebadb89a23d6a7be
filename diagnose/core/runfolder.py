"""The run folder: the single source of truth for one compare, and the one place that names its files.

Everything that ranks or renders reads a run folder through `RunFolder`, so `diagnose analyze RUN_DIR`, the app
and CI see exactly what the compare saw; no other module spells a path inside it. Every file is written
atomically (temp file, fsync, rename). A marker file `INCOMPLETE` exists from the first write until the report
is in place; an interrupted run keeps it, with the reason inside.

Layout (docs/run-folder.md lists every file):
    INCOMPLETE                while running, and after an interrupt or failure (holds the reason)
    run.json                  what was asked: command, registry, model, versions, budget, seed, format_version
    manifests/{old,new}.yaml  the manifests as read
    evidence/<source>.json    one file per evidence source: {"status": "ok"|"unavailable"|"error", ...}
    evidence/request_sizes.parquet, samples.parquet, variant_samples.parquet   raw per-request and per-batch rows
    profile/<side>-<version>/ torch.profiler traces (a TensorBoard logdir)
    signals/                  recorded or live signals in the --signals formats
    report.json, report.md    derived; rewritten by `diagnose analyze` (names come from the format registry)

`run.json` carries `format_version`; a folder written before it existed is format 1, and the reader brings its
files up to the current shape (`_upgrade`), so old run folders keep being read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diagnose.core.errors import UserError, first_line
from diagnose.core.times import utc_now

FORMAT_VERSION = 2  # 2: the trace diff's `signals` became `totals` in evidence/profile.json
SIDES = ("old", "new")
# samples.parquet columns the analysis reads; a file without them is not a benchmark's samples
SAMPLE_COLUMNS = ("cell", "latency_ms", "preprocess_ms", "infer_ms", "input_elements", "input_signature")


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


def write_text(path: Path, text: str | bytes) -> None:
    """`text` (or bytes, for a binary report such as report.pdf) written atomically."""
    _atomic(Path(path), lambda fh: fh.write(text if isinstance(text, bytes) else text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_parquet(path: Path, frame) -> None:
    _atomic(Path(path), lambda fh: frame.to_parquet(fh, index=False))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError("missing from the run folder", path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON (line {exc.lineno}): {exc.msg}", path) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", path) from None
    except OSError as exc:
        raise UserError(f"cannot read: {first_line(exc)}", path) from None


def new_dir(base: Path, label: str) -> Path:
    """`base/<UTC timestamp>-<label>`, made unique; the label is reduced to safe file-name characters."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label)
    path = Path(base) / f"{stamp}-{slug}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(base) / f"{stamp}-{slug}-{suffix}"
    return path


def _upgrade(name: str, data: dict, version: int) -> dict:
    """An evidence file of an older format in today's shape."""
    if version < 2 and name == "profile" and "signals" in data and "totals" not in data:
        data = {("totals" if key == "signals" else key): value for key, value in data.items()}
    return data


def make_dir(path: str | Path, option: str = "--out") -> Path:
    """A folder to write into (it may exist already): one clear line when it cannot be, never a traceback."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} names a file, not a folder; choose a folder", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:  # a parent that is a file, no permission, a NUL byte in the name
        raise UserError(f"{option}: cannot create the folder: {first_line(exc)}", path) from None
    return path


class RunFolder:
    """One run folder: every file it holds is named here, and each is read at most once."""

    INCOMPLETE = "INCOMPLETE"
    RUN = "run.json"
    MANIFESTS = "manifests"
    EVIDENCE = "evidence"
    SAMPLES = "samples.parquet"
    VARIANT_SAMPLES = "variant_samples.parquet"
    REQUEST_SIZES = "evidence/request_sizes.parquet"
    OP_DIFF = "evidence/op_diff.parquet"  # every row of the trace diff's op tables (profile.json keeps the top 25)
    PROFILE = "profile"  # <run>/profile/<side>-<version>/<worker>.<ts>.pt.trace.json.gz
    SIGNALS = "signals"
    FIX_JSON, FIX_MD = "fix.json", "fix.md"  # `diagnose optimize` folders
    DRIFT_MD = "drift.md"  # `diagnose drift --out` folders
    LOAD_SAMPLES = "load_samples.parquet"  # `diagnose loadtest` folders: one row per arrival
    LOADTEST_MD = "loadtest.md"
    GRAFANA = "grafana.json"  # `diagnose grafana RUN_DIR`: the dashboard of the run's series (docs/grafana.md)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cache: dict[str, Any] = {}
        self._writing = False  # set by `create`: this process's own INCOMPLETE marker means "still running", not "interrupted"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- names -------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def evidence_path(self, source: str) -> Path:
        return self.path / self.EVIDENCE / f"{source}.json"

    def manifest_path(self, side: str) -> Path:
        return self.path / self.MANIFESTS / f"{side}.yaml"

    @property
    def profile_dir(self) -> Path:
        return self.path / self.PROFILE

    @property
    def signals_dir(self) -> Path:
        return self.path / self.SIGNALS

    # --- writing ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> RunFolder:
        """Make the folder and mark it incomplete before anything else is written."""
        folder = cls(make_dir(path))
        try:
            if any(folder.path.iterdir()):
                raise UserError("--out folder exists and is not empty; choose a new folder", folder.path)
            write_text(folder.file(cls.INCOMPLETE), "running\n")
        except OSError as exc:  # a folder it may not list or write into
            raise UserError(f"cannot create the run folder: {first_line(exc)}", folder.path) from None
        folder._writing = True
        return folder

    def write_run(self, info: dict) -> None:
        data = {**info, "format_version": FORMAT_VERSION, "started_at": info.get("started_at") or utc_now()}
        self._cache.pop(self.RUN, None)
        write_json(self.file(self.RUN), data)

    def write_manifest(self, side: str, text: str) -> None:
        write_text(self.manifest_path(side), text)

    def write_evidence(self, source: str, evidence) -> dict:
        """An evidence file; `evidence` is a dict or anything with `to_dict()` (an Evidence)."""
        data = evidence.to_dict() if hasattr(evidence, "to_dict") else evidence
        self._cache.pop(f"evidence:{source}", None)
        write_json(self.evidence_path(source), data)
        return data

    def write_samples(self, frame) -> None:
        self._cache.pop(self.SAMPLES, None)
        write_parquet(self.file(self.SAMPLES), frame)

    def write_variant_samples(self, frame) -> None:
        self._cache.pop(self.VARIANT_SAMPLES, None)
        write_parquet(self.file(self.VARIANT_SAMPLES), frame)

    def write_request_sizes(self, frame) -> None:
        self._cache.pop(self.REQUEST_SIZES, None)
        write_parquet(self.file(self.REQUEST_SIZES), frame)

    def write_op_diff(self, frame) -> None:
        self._cache.pop(self.OP_DIFF, None)
        write_parquet(self.file(self.OP_DIFF), frame)

    def write_load_samples(self, frame) -> None:
        write_parquet(self.file(self.LOAD_SAMPLES), frame)

    def load_samples(self):
        """load_samples.parquet of a `diagnose loadtest` folder, or None."""
        return self._parquet(self.LOAD_SAMPLES, required=False)

    def write(self, name: str, text: str | bytes) -> None:
        """A derived file at the folder's top (report.json, report.md, fix.md, ...)."""
        write_text(self.file(name), text)

    def mark_incomplete(self, reason: str) -> None:
        write_text(self.file(self.INCOMPLETE), reason.rstrip() + "\n")

    def finish(self) -> None:
        self.file(self.INCOMPLETE).unlink(missing_ok=True)

    # --- reading -------------------------------------------------------------------------------------------
    def check_complete(self) -> None:
        """A folder `analyze` can read: it exists, is a run folder, and holds samples (even if interrupted later)."""
        if not self.path.is_dir():
            raise UserError("run folder not found", self.path)
        marker = self.file(self.INCOMPLETE)
        if marker.exists() and not self.file(self.SAMPLES).exists():
            reason = self._marker_reason()
            raise UserError(f"run folder is incomplete ({reason}); no samples were saved, rerun the compare", self.path)
        if not self.file(self.RUN).exists():
            if self.file(self.FIX_MD).exists():
                raise UserError(f"a `diagnose optimize` folder, not a compare's (no {self.RUN}): its report is "
                                f"{self.FIX_MD} and {self.FIX_JSON}", self.path)
            raise UserError(f"not a diagnose run folder (no {self.RUN})", self.path)
        if self.file(self.LOAD_SAMPLES).exists():
            raise UserError(f"a `diagnose loadtest` folder, not a compare's: its report is {self.LOADTEST_MD} and "
                            "evidence/loadtest.json", self.path)

    def _marker_reason(self) -> str:
        try:
            return self.file(self.INCOMPLETE).read_text(errors="replace").strip() or "unknown"
        except OSError:  # a marker that is not a readable file still marks the folder
            return "unknown"

    def incomplete(self) -> str | None:
        """The reason in INCOMPLETE when the run that wrote this folder was interrupted or failed; None when it
        completed, and for the folder this process is writing (compare analyzes it before it finishes it)."""
        if self._writing or not self.file(self.INCOMPLETE).exists():
            return None
        return self._marker_reason()

    def _once(self, key: str, read):
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def run(self) -> dict:
        def read() -> dict:
            data = read_json(self.file(self.RUN))
            if not isinstance(data, dict) or not all(isinstance(data.get(key), str) for key in ("model", "old", "new")):
                raise UserError("not a run record (expected a JSON object with model, old and new)", self.file(self.RUN))
            return data

        return self._once(self.RUN, read)

    @property
    def format_version(self) -> int:
        """run.json's format_version; 1 for a run folder written before it existed. A folder without run.json
        (`diagnose optimize`, `diagnose drift --out`) is written by today's code."""
        if not self.file(self.RUN).exists():
            return FORMAT_VERSION
        value = self.run().get("format_version", 1)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"must be an integer, got {value!r}", self.file(self.RUN), "format_version")
        return value

    def has_evidence(self, source: str) -> bool:
        return self.evidence_path(source).is_file()

    def evidence(self, source: str, required: bool = False) -> dict:
        """evidence/<source>.json; a missing optional file reads as unavailable (the stage was skipped, or the
        folder predates the source); a missing required one is a user error naming the file."""
        def read() -> dict:
            path = self.evidence_path(source)
            if not path.exists() and not required:
                return {"status": "unavailable", "reason": "stage skipped"}
            data = read_json(path)
            if not isinstance(data, dict):
                raise UserError("not an evidence object (expected a JSON object)", path)
            return _upgrade(source, data, self.format_version)

        return self._once(f"evidence:{source}", read)

    def _parquet(self, name: str, required: bool):
        import pandas as pd

        def read():
            path = self.file(name)
            if not path.exists() and not required:
                return None
            try:
                return pd.read_parquet(path)
            except Exception as exc:
                raise UserError(f"cannot read samples: {first_line(exc)}", path) from None

        return self._once(name, read)

    def samples(self):
        """samples.parquet: one row per timed batch of every benchmark cell (required), with the SAMPLE_COLUMNS."""
        frame = self._parquet(self.SAMPLES, required=True)
        missing = [column for column in SAMPLE_COLUMNS if column not in frame.columns]
        if missing:
            raise UserError(f"not benchmark samples: no column {', '.join(missing)}", self.file(self.SAMPLES))
        return frame

    def variant_samples(self):
        """variant_samples.parquet, or None when the verify stage did not run."""
        return self._parquet(self.VARIANT_SAMPLES, required=False)

    def request_sizes(self):
        """evidence/request_sizes.parquet, or None when the drift stage did not save it."""
        return self._parquet(self.REQUEST_SIZES, required=False)

    def op_diff(self):
        """evidence/op_diff.parquet (profilers.tracediff.full_table), or None: no profile, or a folder written before
        it was kept (its profile.json's top rows are all there is)."""
        return self._parquet(self.OP_DIFF, required=False)
