"""The normalized trace table (`Trace`), built once from the typed columns either reader fills.

Everything downstream (the diff engine, the CLI) reads these tables, never the JSON: one row per kept event
in time order, the category names of `trace_categories`, times in microseconds from the first event whatever
unit the trace used, the parent of each CPU-side event and its self time, the ProfilerStep#N window it falls
in, and the metadata (rank, devices, vendor) read from the top-level keys. Nesting, steps and the table are
vectorized numpy; each typed column is released as soon as it is converted, so the peak stays near twice the
compact columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from profilers.trace_categories import CATEGORIES, GPU_CATS, NESTING_CATS, RUNTIME, STEP_CATS
from profilers.trace_files import TraceError
from profilers.trace_nesting import nest
from profilers.trace_values import categorical, from_labels

# the top-level keys of a trace document the metadata is read from (both readers keep these, before or after
# the event array)
HEADER_KEYS = ("schemaVersion", "deviceProperties", "distributedInfo", "displayTimeUnit", "traceName",
               "baseTimeNanoseconds")
_NS_MEDIAN_THRESHOLD = 1e17  # a median ts above this is nanoseconds since the epoch, not microseconds
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")


@dataclass
class Trace:
    """One parsed trace: the tables the diff engine reads (see `read_trace`).

    events: a row per kept event in time order (longer first at equal start, so a parent precedes its
    children): name, cat (CATEGORIES), raw_cat, ts_us (from the first event), dur_us, pid, tid, device,
    stream, correlation, external_id, input_dims, input_types, module, flops, step, parent (row, -1 for a
    root), self_us. steps: one row per ProfilerStep#N (or one "whole trace" row). metadata: rank, devices,
    vendor, time unit, counts of the events read, kept and dropped.
    """

    path: str
    events: pd.DataFrame = field(repr=False)
    steps: pd.DataFrame = field(repr=False)
    metadata: dict = field(default_factory=dict)

    def select_steps(self, wanted, key: str | None = None) -> Trace:
        """This trace cut to the ProfilerStep#N windows numbered in `wanted` (HTA's iterations): the other steps
        leave `steps`, and their events keep their rows (parents stay valid) with step -1, outside every step, as
        events before the first step are. `metadata["selected_steps"]` lists the steps kept. TraceError (naming
        `key`, the option that asked) when the trace has no ProfilerStep#N markers, or none of the wanted numbers."""
        wanted = sorted({int(s) for s in wanted})
        have = self.steps.loc[self.steps["name"] != "whole trace", "step"].tolist()
        if not have:
            raise TraceError("has no ProfilerStep#N markers, so no steps to pick", path=self.path, key=key)
        keep = [s for s in have if s in set(wanted)]
        if not keep:
            raise TraceError(f"has no step {describe_steps(wanted)} (its steps: {describe_steps(have)})", path=self.path,
                             key=key)
        step = self.events["step"].to_numpy()
        events = self.events.assign(step=np.where(np.isin(step, keep), step, -1))
        steps = self.steps[self.steps["step"].isin(keep)].reset_index(drop=True)
        return Trace(path=self.path, events=events, steps=steps, metadata={**self.metadata, "selected_steps": keep})

    def __repr__(self) -> str:  # the tables are too big to print
        return (f"Trace(path={self.path!r}, events={len(self.events)} rows, steps={len(self.steps)}, "
                f"vendor={self.metadata.get('device_vendor')!r}, rank={self.metadata.get('rank')!r})")


def describe_steps(steps) -> str:
    """[1009, 1010, 1011, 1013] -> "1009-1011,1013": step numbers as the --iterations option spells them."""
    steps = sorted(set(steps))
    runs: list[list[int]] = []
    for s in steps:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _vendor(devices: list[str], runtime_names: list[str], has_gpu_events: bool, gpu_backend: bool = False) -> str:
    """nvidia/amd from deviceProperties names, else from runtime call names (cuda*/hip*); "cpu" when the
    trace shows no GPU at all (no devices, no GPU events, no NCCL backend); "unknown" otherwise."""
    text = " ".join(devices).lower()
    if devices:
        if any(w in text for w in ("nvidia", "tesla", "geforce", "quadro", "rtx", "a100", "h100", "h200", "v100")):
            return "nvidia"
        if any(w in text for w in ("amd", "radeon", "instinct", "mi250", "mi300", "gfx")):
            return "amd"
    low = [n.lower() for n in runtime_names]
    if any(n.startswith("hip") for n in low):
        return "amd"
    if any(n.startswith(("cuda", "cu")) for n in low):
        return "nvidia"
    if not devices and not has_gpu_events and not gpu_backend:
        return "cpu"
    return "unknown"


def _int_or_none(v):
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    if type(v) is str and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


def build_trace(path: Path, cols: dict, info: dict, header: dict) -> Trace:
    """Typed column arrays -> the events/steps tables. Each array is released as soon as it is converted,
    so the peak stays near twice the compact columns."""
    n = len(cols["ts"])
    if n == 0:
        seen = info["n_read"]
        detail = f"{seen:,} trace events read"
        reasons = {**info["dropped"], **{f"cat={k}": v for k, v in info["unknown"].items()}}
        if reasons:
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:4]
            detail += ", dropped: " + ", ".join(f"{k} x{v:,}" for k, v in top)
        raise TraceError("no profiler events (no complete 'X' events of a known category with a valid ts and "
                         f"dur; {detail})", path=path)

    ts = np.array(cols.pop("ts"), dtype=np.float64)  # copies, and frees the typed array
    dur = np.array(cols.pop("dur"), dtype=np.float64)
    base = info["base"]
    ns = float(base) + float(np.median(ts)) > _NS_MEDIAN_THRESHOLD
    tmin = float(ts.min())
    origin = float(base) + tmin
    ts -= tmin
    if ns:
        ts /= 1000.0
        dur /= 1000.0
        origin /= 1000.0
    # float parsing leaves sub-nanosecond noise on large absolute times (4203669612512.74 - 4203669603187.439
    # = 9325.30126953125): no profiler records below a nanosecond, so round to it
    np.round(ts, 3, out=ts)
    np.round(dur, 3, out=dur)

    # rows in time order, longer first at equal start (so a parent always precedes its children)
    order = np.lexsort((-dur, ts))
    ts = ts[order]
    dur = dur[order]

    def take(key: str, dtype) -> np.ndarray:
        col = cols.pop(key)
        arr = col[0] if isinstance(col, tuple) else col
        out = np.frombuffer(arr, dtype=dtype)[order]
        del col, arr
        return out

    def take_cat(key: str, by_keys: bool) -> pd.Categorical:
        labels = cols[key][1]
        c = take(key, np.int32)
        return categorical(c, labels) if by_keys else from_labels(c, labels)

    rawcat_labels = cols["raw_cat"][1]
    rawcat_codes = take("raw_cat", np.int32)
    kind = np.array(info["rawcat_kind"], dtype=np.int8)[rawcat_codes]
    raw_cat = categorical(rawcat_codes, rawcat_labels)
    del rawcat_codes
    cat = pd.Categorical.from_codes(kind.astype(np.int32), categories=pd.Index(list(CATEGORIES), dtype=object))
    name_cat = take_cat("name", True)
    pid_cat = take_cat("pid", True)
    tid_cat = take_cat("tid", True)

    steps, step = _steps(name_cat, kind, ts, dur)

    # nesting on each (pid, tid) among CPU-side events
    parent = np.full(n, -1, dtype=np.int64)
    cpu_rows = np.flatnonzero(np.isin(kind, NESTING_CATS))
    if len(cpu_rows):
        group = pid_cat.codes[cpu_rows].astype(np.int64)
        group *= max(len(tid_cat.categories), 1)
        group += tid_cat.codes[cpu_rows]
        local = nest(group, ts[cpu_rows], dur[cpu_rows])
        del group
        has = local >= 0
        parent[cpu_rows[has]] = cpu_rows[local[has]]
        del local, has
    del cpu_rows
    child = parent >= 0
    # (bincount with no children at all returns int64: subtract into a fresh float array)
    self_us = dur - np.bincount(parent[child], weights=dur[child], minlength=n)
    del child
    np.maximum(self_us, 0.0, out=self_us)

    data = {
        "name": name_cat,
        "cat": cat,
        "raw_cat": raw_cat,
        "ts_us": ts,
        "dur_us": dur,
        "pid": pid_cat,
        "tid": tid_cat,
    }
    for key in ("device", "stream", "correlation", "external_id"):
        data[key] = take(key, np.int64)
    data["input_dims"] = take_cat("input_dims", False)
    data["input_types"] = take_cat("input_types", False)
    data["module"] = take_cat("module", True)
    data["flops"] = take("flops", np.float64)
    data["step"] = step
    data["parent"] = parent
    data["self_us"] = self_us
    events = pd.DataFrame(data, copy=False)
    del data

    # metadata
    dist = header.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else {}
    props = header.get("deviceProperties")
    devices = [str(d.get("name", "")) for d in props if isinstance(d, dict)] if isinstance(props, list) else []
    has_gpu = bool(np.isin(kind, GPU_CATS).any())
    is_runtime = kind == RUNTIME
    runtime_names = [str(x) for x in name_cat[is_runtime].unique()[:200]] if is_runtime.any() else []
    metadata = {
        "rank": _int_or_none(dist.get("rank")),
        "world_size": _int_or_none(dist.get("world_size")),
        "devices": devices,
        "device_vendor": _vendor(devices, runtime_names, has_gpu, str(dist.get("backend", "")).lower() in ("nccl", "rccl")),
        "time_unit_detected": "ns" if ns else "us",
        "schema_version": header.get("schemaVersion"),
        "n_events_read": info["n_read"],
        "n_events_kept": n,
        "unknown_categories": dict(info["unknown"]),
        "dropped": dict(info["dropped"]),
        "display_time_unit": header.get("displayTimeUnit"),
        "ts_origin_us": origin,
    }
    return Trace(path=str(path), events=events, steps=steps, metadata=metadata)


def _steps(name_cat: pd.Categorical, kind: np.ndarray, ts: np.ndarray, dur: np.ndarray):
    """ProfilerStep#N windows (from CPU-side events named so) and the step of each row by its start."""
    n = len(ts)
    step_of_code = np.full(len(name_cat.categories), -1, dtype=np.int64)
    for i, lab in enumerate(name_cat.categories):
        m = _STEP_RE.match(lab)
        if m:
            step_of_code[i] = int(m.group(1))
    is_marker = None
    if (step_of_code >= 0).any():
        ev_step_no = step_of_code[name_cat.codes]
        is_marker = (ev_step_no >= 0) & np.isin(kind, STEP_CATS)
    if is_marker is None or not is_marker.any():
        end = float((ts + dur).max())
        steps = pd.DataFrame({"step": np.array([0], dtype=np.int64), "name": ["whole trace"],
                              "start_us": np.array([0.0]), "end_us": np.array([end])})
        return steps, np.zeros(n, dtype=np.int64)
    marks = pd.DataFrame({"step": ev_step_no[is_marker], "start_us": ts[is_marker],
                          "end_us": ts[is_marker] + dur[is_marker]})
    steps = marks.groupby("step", sort=False).agg(start_us=("start_us", "min"), end_us=("end_us", "max"))
    steps = steps.reset_index().sort_values(["start_us", "step"], kind="stable").reset_index(drop=True)
    steps.insert(1, "name", [f"ProfilerStep#{s}" for s in steps["step"]])
    steps = steps.astype({"step": np.int64, "start_us": np.float64, "end_us": np.float64})
    starts = steps["start_us"].to_numpy()
    ends = steps["end_us"].to_numpy()
    j = np.searchsorted(starts, ts, side="right") - 1
    jj = np.maximum(j, 0)
    inside = (j >= 0) & ((ts < ends[jj]) | (ts == starts[jj]))
    step = np.where(inside, steps["step"].to_numpy()[jj], -1).astype(np.int64)
    return steps, step
