"""Feast feature logs read as a version's requests: the features its feature service served, per request.

A model served behind Feast gets its inputs from a feature service, and Feast's feature logging
(`FeatureService(logging_config=LoggingConfig(destination=FileLoggingDestination(path=...)))`) records what the
service returned for every request: parquet files under one folder (`pyarrow.dataset.write_dataset`, in subfolders
when the destination sets `partition_by`, the partition columns then left out of the files). The columns are those
of `feast.feature_logging.FeatureServiceLoggingSource.get_schema`, in the feature service's order:

    <join key> or <request field>    the entity keys of each feature view (the request fields of an on-demand one)
    <view>__<feature>                the value served, in the feature's own type (float32, int64, list<...>)
    <view>__<feature>__timestamp     its event time
    <view>__<feature>__status        int32 FieldStatus: 0 INVALID, 1 PRESENT, 2 NULL_VALUE, 3 NOT_FOUND,
                                     4 OUTSIDE_MAX_AGE
    __log_timestamp                  when the request was served (timestamp[us, UTC])
    __log_date                       its date (Feast's usual partition column)
    __request_id                     the request's id

The model's inputs are the feature columns, in log order (the service's) or the manifest's `inputs.feast.features`;
companions, keys and log metadata are never fed to it. A value whose status is not PRESENT reached the server as a
null (Feast returns no value for it), so it never reaches the model as logged: the row is dropped (the handler
rejects the request) or the value is the number the handler fills in (`inputs.feast.missing`). Feast does not log
which model version served a request, so the rows of each version are chosen by time: the new version's
`deployment.deployed_at` splits the log, the old version reading the rows before it and the new one those from it
on (`inputs.feast.window` bounds each side, `start`/`end` override it). Rows come out ordered by log time, so a
compare replays and profiles the same rows in the same order (the drift stage's per-row sizes join on that order).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from diagnose.core.errors import UserError, first_line
from diagnose.core.times import parse_time

LOG_TIMESTAMP = "__log_timestamp"
LOG_DATE = "__log_date"
REQUEST_ID = "__request_id"
METADATA = (LOG_TIMESTAMP, LOG_DATE, REQUEST_ID)
TIMESTAMP_SUFFIX = "__timestamp"
STATUS_SUFFIX = "__status"
PRESENT = 1
STATUSES = {0: "INVALID", 1: "PRESENT", 2: "NULL_VALUE", 3: "NOT_FOUND", 4: "OUTSIDE_MAX_AGE"}
KEYS = ("features", "window", "start", "end", "missing")
DROP = "drop"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FeastOptions:
    """A manifest's `inputs.feast`: which columns are the model's inputs and which rows are this version's."""

    features: tuple[str, ...] = ()  # empty: every feature column, in the log's (the feature service's) order
    window: timedelta | None = None  # how far each side reaches from the deploy; None: the whole log that side
    start: datetime | None = None  # absolute bounds of this version's rows, over the window
    end: datetime | None = None
    missing: str | float = DROP  # a value not PRESENT: "drop" the row, or the number the server fills in

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features) or None,
                "window": self.window.total_seconds() if self.window else None,
                "start": _iso(self.start), "end": _iso(self.end), "missing": self.missing}


@dataclass(frozen=True)
class FeastRows:
    """What one side reads of a Feast log folder: the model's columns, the time range [start, end), the missing rule."""

    features: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    missing: str | float = DROP
    configured: bool = False  # `features` came from the manifest: errors name inputs.feast.features


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z") if value else None


def parse_window(value: Any) -> timedelta | None:
    """A duration: seconds as a number, or "<n>s", "<n>m", "<n>h", "<n>d" ("90m", "1.5h"); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
        if not match:
            return None
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return timedelta(seconds=seconds) if math.isfinite(seconds) and seconds > 0 else None


def parse_options(value: Any, path: Path) -> FeastOptions | None:
    """`inputs.feast`, checked where it enters: every problem is one line naming the manifest and the key."""
    key = "inputs.feast"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"must be a mapping with keys {', '.join(KEYS)}, got {type(value).__name__}", path, key)
    unknown = sorted(str(k) for k in value if k not in KEYS)
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r}; use {', '.join(KEYS)}", path, key)
    features = value.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise UserError(f"must be a list of column names such as driver_stats__conv_rate, got {features!r}", path,
                        f"{key}.features")
    if len(set(features)) != len(features):
        raise UserError(f"names a column twice: {features!r}", path, f"{key}.features")
    for name in features:
        if name in METADATA:
            raise UserError(f"{name!r} is Feast's log metadata, not a feature", path, f"{key}.features")
    window = value.get("window")
    if window is not None and parse_window(window) is None:
        raise UserError(f"must be a positive duration such as 30m, 2h, 1d or seconds, got {window!r}", path,
                        f"{key}.window")
    bounds = {}
    for name in ("start", "end"):
        raw = value.get(name)
        bounds[name] = parse_time(raw)
        if raw is not None and bounds[name] is None:
            raise UserError(f"must be an ISO 8601 time such as 2026-11-20T10:00:00Z, got {raw!r}", path, f"{key}.{name}")
    if bounds["start"] and bounds["end"] and bounds["start"] >= bounds["end"]:
        raise UserError(f"start {_iso(bounds['start'])} is not before end {_iso(bounds['end'])}", path, key)
    missing = value.get("missing", DROP)
    if missing != DROP and (isinstance(missing, bool) or not isinstance(missing, (int, float))
                            or not math.isfinite(missing)):
        raise UserError(f"must be 'drop' or the number the server fills in, got {missing!r}", path, f"{key}.missing")
    return FeastOptions(tuple(features), parse_window(window) if window is not None else None, bounds["start"],
                        bounds["end"], missing)


def rows_by_side(manifests: dict) -> dict[str, FeastRows]:
    """Which rows of a Feast log each side of a compare reads (`manifests`: side -> Manifest, "new" alone for one
    version): around the new version's `deployment.deployed_at`, each side by its own manifest's `inputs.feast`.

    Feast logs say when a request was served, not which model served it, so time is what tells the versions'
    requests apart in one service's log: the old side reads the rows before the deploy, the new side the rows from
    it on, each within `window` of it; `start`/`end` replace those bounds. Without a deploy time the whole log
    is read (a `window` then has nothing to reach from, and is refused)."""
    deployed = parse_time(((manifests["new"].deployment or {}) if "new" in manifests else {}).get("deployed_at"))
    rows = {}
    for side, manifest in manifests.items():
        options = manifest.feast or FeastOptions()
        start = end = None
        if deployed is not None and side == "old":
            start, end = (deployed - options.window if options.window else None), deployed
        elif deployed is not None:
            start, end = deployed, (deployed + options.window if options.window else None)
        elif options.window is not None and not (options.start and options.end):
            raise UserError("needs the new version's deployment.deployed_at to reach from (or set start and end)",
                            manifest.path, "inputs.feast.window")
        rows[side] = FeastRows(options.features, options.start or start, options.end or end, options.missing,
                               configured=bool(options.features))
    return rows


def log_files(folder: Path) -> list[Path]:
    """The log's parquet files, partition subfolders included, in path order; hidden and `_`-prefixed files (Spark's
    `_SUCCESS`, checksums) and links out of the folder left out."""
    root = folder.resolve()
    return sorted(p for p in folder.rglob("*.parquet")
                  if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
                  and p.resolve().is_relative_to(root))


def digest(folder: Path) -> str:
    """sha256 over the log's files (their paths inside the folder and their bytes): tells a changed log apart."""
    total = hashlib.sha256()
    for file in log_files(folder):
        total.update(file.relative_to(folder).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(file.read_bytes()).digest())
    return total.hexdigest()


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def _log_times(column, file: Path):
    """`__log_timestamp` as int64 microseconds since the epoch (a naive time is UTC, as Feast writes UTC)."""
    import pyarrow as pa

    if not pa.types.is_timestamp(column.type):
        raise UserError(f"{LOG_TIMESTAMP} is {column.type}, not a timestamp", file)
    return column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64()).to_numpy()


def _feature_columns(names: list[str]) -> list[str]:
    """The feature columns of a log's schema: those with both Feast companions, in schema order."""
    present = set(names)
    return [n for n in names if n + TIMESTAMP_SUFFIX in present and n + STATUS_SUFFIX in present]


def _read_file(file: Path, rows: FeastRows):
    """One log file: its column names (its Feast signature checked), its log times and which fall in [start, end)."""
    import numpy as np
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(file).names
        if LOG_TIMESTAMP not in names or REQUEST_ID not in names:
            raise UserError(f"not a Feast feature log: no {LOG_TIMESTAMP} or {REQUEST_ID} column", file)
        times = _log_times(pq.read_table(file, columns=[LOG_TIMESTAMP]).column(0), file)
    except UserError:
        raise
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise UserError(f"cannot read the Feast log file: {first_line(exc)}", file) from None
    keep = np.ones(len(times), dtype=bool)
    if rows.start is not None:
        keep &= times >= _micros(rows.start)
    if rows.end is not None:
        keep &= times < _micros(rows.end)
    return names, times, keep


def _chosen_columns(names: list[str], rows: FeastRows, file: Path) -> list[str]:
    """The model's columns: the manifest's, each checked against the log, else every feature column in order.
    A companion is told by its feature, not by its suffix: a feature may be named `status` (`orders__status`)."""
    features = _feature_columns(names)
    if not rows.features:
        if not features:
            raise UserError("no feature columns (<view>__<feature> with __timestamp and __status companions)", file)
        return features
    key = "inputs.feast.features" if rows.configured else None
    companions = {f + suffix: f for f in features for suffix in (TIMESTAMP_SUFFIX, STATUS_SUFFIX)}
    for name in rows.features:
        if name not in names:
            raise UserError(f"no column {name!r} in the log; its feature columns: {', '.join(features) or 'none'}",
                            file, key)
        if name in companions:
            raise UserError(f"{name!r} is Feast's record of {companions[name]!r}, not a feature", file, key)
    return list(rows.features)


def _window_text(rows: FeastRows) -> str:
    if rows.start is None and rows.end is None:
        return "the log"
    return f"[{_iso(rows.start) or 'the start'}, {_iso(rows.end) or 'the end'})"


def read_log(folder: Path, rows: FeastRows | None = None):
    """A Feast log folder -> (Arrow table of the model's columns, one row per request in the window, ordered by log
    time; a summary of what was read). A value not PRESENT drops its row, or is `rows.missing`; a row that stays
    is as logged, in its logged type."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = rows or FeastRows()
    files = log_files(folder)
    if not files:
        raise UserError("no Feast log files (*.parquet) in the folder", folder)
    tables, features, columns, covered = [], None, None, []
    for file in files:
        names, times, keep = _read_file(file, rows)
        if len(times):
            covered += [int(times.min()), int(times.max())]
        if not keep.any():
            continue
        if features is None:
            features = _chosen_columns(names, rows, file)
            statuses = {f: f + STATUS_SUFFIX for f in features if f + STATUS_SUFFIX in names}
            columns = features + list(statuses.values())
        lacking = [c for c in columns if c not in names]
        if lacking:
            raise UserError(f"no column {lacking[0]!r}, which the other log files hold", file)
        table = pq.read_table(file, columns=[*columns, LOG_TIMESTAMP, REQUEST_ID])
        tables.append(table.filter(pa.array(keep)).set_column(
            len(columns), LOG_TIMESTAMP, pa.array(times[keep], pa.int64())))
    if not tables:
        span = ", ".join(_iso(_EPOCH + timedelta(microseconds=t)) for t in (min(covered), max(covered))) if covered \
            else "no rows"
        raise UserError(f"no request logged in {_window_text(rows)}; the log covers {span}", folder)
    try:
        table = pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"the log files disagree on column types: {first_line(exc)}", folder) from None
    table = table.sort_by([(LOG_TIMESTAMP, "ascending"), (REQUEST_ID, "ascending")])
    logged = table.num_rows
    keep = np.ones(logged, dtype=bool)
    not_present: dict[str, dict[str, int]] = {}
    for name, status_column in statuses.items():
        status = table.column(status_column)
        present = pc.fill_null(pc.equal(status, PRESENT), False)
        absent = pc.invert(present).to_numpy(zero_copy_only=False)
        if absent.any():
            codes, counts = np.unique(status.to_numpy(zero_copy_only=False)[absent], return_counts=True)
            not_present[name] = {STATUSES.get(int(c), str(c)) if c == c else "null": int(n)
                                 for c, n in zip(codes, counts, strict=True)}
        if rows.missing == DROP:
            keep &= ~absent
            continue
        column = table.column(name)
        try:
            filled = pc.if_else(present, column, pa.scalar(rows.missing).cast(column.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise UserError(f"{rows.missing!r} cannot stand for a missing value of {name!r} ({column.type}); "
                            "use drop", folder, "inputs.feast.missing") from None
        table = table.set_column(table.schema.get_field_index(name), name, filled)
    if not keep.any():
        counts = ", ".join(f"{f}: " + ", ".join(f"{s} {n}" for s, n in c.items()) for f, c in not_present.items())
        raise UserError(f"every one of the {logged} requests in {_window_text(rows)} has a feature that is not "
                        f"PRESENT ({counts}); set inputs.feast.missing to the value the server fills in", folder)
    table = table.filter(pa.array(keep)).select(features)
    summary = {"folder": str(folder), "files": len(files), "window": [_iso(rows.start), _iso(rows.end)],
               "logged": logged, "rows": table.num_rows, "features": features, "not_present": not_present,
               "missing": rows.missing}
    return table, summary
