"""The op-level diff of two profiler traces: where the time went, and what kind of change it was.

Both traces are read once into the normalized table of `profilers.traces` and reduced to per-step figures
(each side divided by its own number of ProfilerStep windows), so traces of different lengths compare.
The diff is a set of small tables with consistent `old_` / `new_` / `delta_` columns:

- `ops`: per operator name: calls, self time, inclusive time, FLOPs per step;
- `shapes`: per (operator, input shapes);
- `modules`: per module path, inclusive of submodules (TorchScript "Module Hierarchy" or the
  `module::<path>` annotations that `profilers.torchprof` adds for eager models);
- `tree`: per call path from the step down ("module::encoder > aten::linear > aten::addmm"): the two call
  trees aligned by path, so a change under one module is charged to that module;
- `kernels`: per GPU kernel, when the traces have any;
- `regions`: per user annotation (`record_function` regions, `nccl:*` collectives, `## forward ##` markers) by
  inclusive time, and the step itself: every `ProfilerStep#N` is one `ProfilerStep` region (one call per step),
  never an operator.

Rows are ranked by their contribution to the total change of CPU self time per step (`share`; regions: of the
step time), and each has a status: added, deleted, increased, decreased, unchanged (`_status`). `totals`
sums up what the engine needs to tell more work (FLOPs, calls, input sizes) from slower work (about the
same FLOPs, new ops) and from a precision change (low-precision dtypes replaced by fp32).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import pandas as pd

from profilers.torchprof import MODULE_PREFIX
from profilers.traces import Trace

LOW_PRECISION = ("c10::Half", "c10::BFloat16", "signed char", "unsigned char", "c10::qint8", "c10::quint8", "c10::Float8")
COPY_OPS = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::contiguous", "aten::clone")
_TS_SEGMENT = re.compile(r"^(?:[A-Za-z_]\w*\.)?([^.(]+)\(")
_STEP_NAME = re.compile(r"^ProfilerStep#\d+$")
STEP_REGION = "ProfilerStep"
COLLECTIVE_PREFIXES = ("nccl:", "rccl:", "gloo:", "ucc:", "mpi:", "record_param_comms")
GPU_SUFFIX = " [gpu]"  # a region's GPU-side span (gpu_user_annotation), beside its CPU-side one
UNCHANGED_WITHIN = 0.05  # a row whose time moved by at most this fraction (and whose calls did not) is unchanged


def torchscript_module_path(hierarchy: str) -> str:
    """"TOP(Classifier)::forward.encoder(BertModel)::forward.0(BertLayer)::forward." -> "encoder.0"."""
    if not hierarchy:
        return ""
    names = []
    for segment in hierarchy.split("::")[1:]:
        match = _TS_SEGMENT.match(segment)
        if match:
            names.append(match.group(1))
    return ".".join(names)


def _dims(text: str) -> list:
    try:
        return json.loads(text) if text else []
    except ValueError:
        return []


def _prod(shape) -> int:
    """Elements of a shape; a list of shapes (a tensor-list argument) counts each tensor."""
    if not shape:
        return 1
    if all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    return sum(_prod(s) for s in shape if isinstance(s, list))


def estimate_flops(name: str, input_dims: str) -> float:
    """FLOPs of the matrix and convolution ops from their input shapes (multiply-add = 2 FLOPs).

    Only leaf-level ops are counted (addmm, mm, bmm, baddbmm, the convolution entry op) so that a linear
    layer is not counted again through the addmm it calls.
    """
    dims = _dims(input_dims)
    try:
        if name in ("aten::mm", "aten::addmm"):
            a, b = (dims[0], dims[1]) if name == "aten::mm" else (dims[1], dims[2])
            return 2.0 * _prod(a[:-1]) * a[-1] * b[-1]
        if name in ("aten::bmm", "aten::baddbmm"):
            a, b = (dims[0], dims[1]) if name == "aten::bmm" else (dims[1], dims[2])
            return 2.0 * a[0] * a[1] * a[2] * b[2]
        if name == "aten::convolution":
            x, w = dims[0], dims[1]
            spatial = _prod(x[2:])  # output size taken as the input size: exact for stride 1 "same" padding
            return 2.0 * x[0] * w[0] * _prod(w[1:]) * spatial
    except (IndexError, TypeError):
        return 0.0
    return 0.0


def _elements(input_dims: str) -> int:
    return sum(_prod(d) for d in _dims(input_dims) if isinstance(d, list) and d)


def _categories(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their strings: per-row work becomes per-distinct-value work."""
    column = column.astype("category")
    return column.cat.codes.to_numpy(), [str(c) for c in column.cat.categories]


def _inherit(own: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """value[i] = own[i] if own[i] >= 0 else value[parent[i]] (-1 at roots): one vectorized pass per tree level."""
    value = own.copy()
    has_parent = parents >= 0
    while True:
        inherited = np.where(has_parent, value[np.where(has_parent, parents, 0)], -1)
        updated = np.where(own >= 0, own, inherited)
        if np.array_equal(updated, value):
            return value
        value = updated


def _depths(parents: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parents), dtype=np.int64)
    has_parent = parents >= 0
    while True:
        updated = np.where(has_parent, depth[np.where(has_parent, parents, 0)] + 1, 0)
        if np.array_equal(updated, depth):
            return depth
        depth = updated


def _module_paths(events: pd.DataFrame) -> pd.Categorical:
    """Each event's module: its own TorchScript hierarchy or module annotation, else its parent's module."""
    module_codes, modules = _categories(events["module"])
    name_codes, names = _categories(events["name"])
    paths: dict[str, int] = {}
    from_module = np.array([paths.setdefault(torchscript_module_path(m), len(paths)) for m in modules] or [0])
    from_name = np.array([paths.setdefault(n[len(MODULE_PREFIX):], len(paths)) if n.startswith(MODULE_PREFIX) else -1
                          for n in names] or [-1])
    empty = paths.setdefault("", len(paths))
    own = np.where(module_codes >= 0, from_module[module_codes], -1)
    own = np.where(own == empty, -1, own)
    own = np.where(own < 0, from_name[name_codes], own)
    resolved = _inherit(own, events["parent"].to_numpy())
    labels = list(paths)
    return pd.Categorical.from_codes(np.where(resolved < 0, empty, resolved), categories=labels)


def _call_paths(events: pd.DataFrame) -> pd.Categorical:
    """"forward > aten::linear > aten::addmm": the names from the step down to each event, as ids per level."""
    name_codes, names = _categories(events["name"])
    transparent = np.array([n.startswith("ProfilerStep#") for n in names] or [False])
    parents = events["parent"].to_numpy()
    depth = _depths(parents)
    path_id = np.full(len(events), -1, dtype=np.int64)
    known: dict[tuple[int, int], int] = {}  # (parent path id, name code) -> path id
    for level in range(int(depth.max()) + 1 if len(depth) else 0):
        rows = np.flatnonzero(depth == level)
        parent_ids = np.where(parents[rows] >= 0, path_id[np.maximum(parents[rows], 0)], -1)
        step_rows = transparent[name_codes[rows]]
        path_id[rows[step_rows]] = parent_ids[step_rows]
        rows, parent_ids = rows[~step_rows], parent_ids[~step_rows]
        if not len(rows):
            continue
        pairs = np.stack([parent_ids, name_codes[rows]], axis=1)
        unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
        # one id per (parent path, name) over all levels: children of a transparent step meet root ops here
        ids = np.array([known.setdefault((int(p), int(n)), len(known)) for p, n in unique])
        path_id[rows] = ids[inverse.ravel()]
    labels: list[str] = []
    for parent, name in known:  # insertion order: parents always come first
        labels.append(f"{labels[parent]} > {names[name]}" if parent >= 0 else names[name])
    labels.append("ProfilerStep")
    return pd.Categorical.from_codes(np.where(path_id < 0, len(labels) - 1, path_id), categories=labels)


def _per_category(codes: np.ndarray, categories: list[str], fn, fill) -> np.ndarray:
    values = np.array([fn(c) for c in categories] + [fill])
    return values[np.where(codes >= 0, codes, len(categories))]


def _step_markers(events: pd.DataFrame) -> np.ndarray:
    """Rows named ProfilerStep#N (whatever their category): the step, not an operator."""
    codes, names = _categories(events["name"])
    return _per_category(codes, names, lambda n: bool(_STEP_NAME.match(n)), False).astype(bool)


def _in_steps(frame: pd.DataFrame, trace: Trace) -> pd.DataFrame:
    """The rows inside a profiled step; all of them when none is (a trace whose steps hold no such rows), unless
    steps were picked (`Trace.select_steps`): then only the picked steps count."""
    inside = frame["step"] >= 0
    if "selected_steps" in trace.metadata or inside.any():
        return frame[inside]
    return frame


def step_count(trace: Trace) -> int:
    return max(1, int((trace.steps["name"] != "whole trace").sum()) or 1)


def side_table(trace: Trace) -> tuple[pd.DataFrame, int]:
    """The CPU ops of one trace with module, call path, FLOPs and size columns; and its number of steps.
    ProfilerStep#N markers recorded as operators (older traces) are the step, not ops: left out."""
    events = trace.events.reset_index(drop=True)
    cpu_rows = (events["cat"] == "cpu_op").to_numpy() & ~_step_markers(events)
    module_path = _module_paths(events)[cpu_rows]
    call_path = _call_paths(events)[cpu_rows]
    cpu = events.loc[cpu_rows, ["name", "input_dims", "input_types", "dur_us", "self_us", "flops", "step"]].copy()
    cpu["name"] = cpu["name"].astype("category").cat.remove_unused_categories()
    cpu["module_path"], cpu["call_path"] = module_path, call_path
    cpu["module_path"] = cpu["module_path"].cat.remove_unused_categories()
    cpu["call_path"] = cpu["call_path"].cat.remove_unused_categories()
    # FLOPs and precision per distinct (op, shapes) and per distinct type list, not per row
    name_codes, names = _categories(cpu["name"])
    dims_codes, dims = _categories(cpu["input_dims"])
    unique, inverse = np.unique(np.stack([name_codes, dims_codes], axis=1), axis=0, return_inverse=True)
    flops = np.array([estimate_flops(names[n], dims[d] if d >= 0 else "") for n, d in unique] or [0.0])
    estimated = flops[inverse.ravel()] if len(cpu) else np.zeros(0)
    given = cpu["flops"].to_numpy(dtype=float)
    cpu["flops_est"] = np.where(np.isnan(given), estimated, given)
    type_codes, types = _categories(cpu["input_types"])
    cpu["low_precision"] = _per_category(type_codes, types, lambda t: any(p in t for p in LOW_PRECISION), False)
    return _in_steps(cpu, trace).reset_index(drop=True), step_count(trace)


def region_frame(trace: Trace) -> pd.DataFrame:
    """The regions of one trace, a row per event inside the profiled steps: key, kind, dur_us, self_us.

    Regions are the user annotations (`record_function`, `nccl:*` collectives: kind "collective"; the others:
    "annotation"), each ProfilerStep#N as the one "ProfilerStep" region (kind "step", also when it was recorded
    as an operator), and the GPU-side spans of annotations as "<name> [gpu]" ("gpu ..." kinds). The
    `module::<path>` annotations of eager models are the `modules` table's, not regions.
    """
    events = trace.events
    marker = _step_markers(events)
    cat = events["cat"]
    rows = cat.isin(["annotation", "gpu_annotation"]).to_numpy() | (marker & (cat == "cpu_op").to_numpy())
    sub = events.loc[rows, ["name", "cat", "dur_us", "self_us", "step"]].assign(marker=marker[rows])
    sub = _in_steps(sub, trace)
    name = sub["name"].astype(str)
    sub = sub[~name.str.startswith(MODULE_PREFIX).to_numpy()]
    name = sub["name"].astype(str)
    step = sub["marker"].to_numpy()
    gpu = (sub["cat"] == "gpu_annotation").to_numpy()
    key = np.where(step, STEP_REGION, name.to_numpy(dtype=object))
    kind = np.where(step, "step", np.where(name.str.startswith(COLLECTIVE_PREFIXES).to_numpy(), "collective", "annotation"))
    key = np.where(gpu, key.astype(str) + GPU_SUFFIX, key).astype(str)
    kind = np.where(gpu, "gpu " + kind.astype(object), kind).astype(str)
    return pd.DataFrame({"key": key, "kind": kind, "dur_us": sub["dur_us"].to_numpy(),
                         "self_us": sub["self_us"].to_numpy()})


def _status(old_calls, new_calls, old_value, new_value) -> np.ndarray:
    """HTA's categories of a diff row: added (only in new), deleted (only in old), else increased or decreased
    when its time per step (the table's measure) moved by more than UNCHANGED_WITHIN of the larger side, or, the
    time within that, when its calls per step moved; unchanged otherwise."""
    old_calls, new_calls = np.asarray(old_calls, float), np.asarray(new_calls, float)
    old_value, new_value = np.asarray(old_value, float), np.asarray(new_value, float)
    delta = new_value - old_value
    by_time = np.abs(delta) > UNCHANGED_WITHIN * np.maximum(np.abs(old_value), np.abs(new_value))
    calls_moved = ~np.isclose(new_calls, old_calls, rtol=1e-9, atol=1e-12)
    up = np.where(by_time, delta > 0, new_calls > old_calls)
    return np.where(old_calls == 0, "added", np.where(new_calls == 0, "deleted", np.where(
        ~(by_time | calls_moved), "unchanged", np.where(up, "increased", "decreased"))))


def _aggregate(frame: pd.DataFrame, keys: list[str], steps: int) -> pd.DataFrame:
    grouped = frame.groupby(keys, observed=True, sort=False).agg(
        calls=("dur_us", "size"), self_us=("self_us", "sum"), total_us=("dur_us", "sum"), flops=("flops_est", "sum"))
    # plain string keys, so the two sides' categorical indexes join on values
    if len(keys) == 1:
        grouped.index = pd.Index([str(k) for k in grouped.index], name=keys[0])
    else:
        grouped.index = pd.MultiIndex.from_tuples([tuple(map(str, k)) for k in grouped.index], names=keys)
    return grouped / steps


def _diff_frame(old: pd.DataFrame, new: pd.DataFrame, total_delta_us: float) -> pd.DataFrame:
    """Every row of one diff table, largest |delta_self_us| first, indexed by its key (" | "-joined parts)."""
    joined = old.add_prefix("old_").join(new.add_prefix("new_"), how="outer").fillna(0.0)
    joined["delta_self_us"] = joined["new_self_us"] - joined["old_self_us"]
    joined["delta_total_us"] = joined["new_total_us"] - joined["old_total_us"]
    joined["delta_calls"] = joined["new_calls"] - joined["old_calls"]
    joined["share"] = joined["delta_self_us"] / total_delta_us if abs(total_delta_us) > 1e-9 else 0.0
    joined["status"] = _status(joined["old_calls"], joined["new_calls"], joined["old_self_us"], joined["new_self_us"])
    ranked = joined.reindex(joined["delta_self_us"].abs().sort_values(ascending=False, kind="stable").index)
    ranked.index = pd.Index([" | ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in ranked.index],
                            name="key")
    return ranked


def _rows(frame: pd.DataFrame, top: int) -> list[dict]:
    """The evidence JSON's rows: the top of a `_diff_frame`, rounded."""
    rows = []
    for key, row in frame.head(top).iterrows():
        entry = {"key": key}
        for column in ("calls", "self_us", "total_us", "flops"):
            entry[f"old_{column}"] = round(float(row[f"old_{column}"]), 3)
            entry[f"new_{column}"] = round(float(row[f"new_{column}"]), 3)
        entry.update(delta_self_us=round(float(row["delta_self_us"]), 3), delta_total_us=round(float(row["delta_total_us"]), 3),
                     delta_calls=round(float(row["delta_calls"]), 3), share=round(float(row["share"]), 4),
                     status=str(row["status"]))
        rows.append(entry)
    return rows


def _diff_table(old: pd.DataFrame, new: pd.DataFrame, total_delta_us: float, top: int) -> list[dict]:
    return _rows(_diff_frame(old, new, total_delta_us), top)


FULL_COLUMNS = ("table", "key", "module", "op", "shape", "old_calls", "new_calls", "old_self_us", "new_self_us",
                "old_total_us", "new_total_us", "old_flops", "new_flops", "delta_self_us", "delta_total_us", "delta_calls",
                "share", "status")
# the parts of each full table's key, in order (the app drills down by module path and input shape)
KEY_PARTS = {"ops": ("op",), "shapes": ("op", "shape"), "modules": ("module",), "tree": (), "kernels": ("op",),
             "module_shapes": ("module", "op", "shape")}


def full_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every row of every op table in one frame (evidence/op_diff.parquet): `table`, `key`, the key's parts
    (`module`, `op`, `shape`, empty where the table has no such part), then the diff's columns."""
    parts = []
    for name, frame in frames.items():
        out = frame.reset_index()
        out.insert(0, "table", name)
        split = out["key"].str.split(" | ", regex=False, n=len(KEY_PARTS[name]) - 1) if KEY_PARTS[name] else None
        for part in ("module", "op", "shape"):
            out[part] = split.str[KEY_PARTS[name].index(part)] if part in KEY_PARTS[name] else ""
        parts.append(out)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(FULL_COLUMNS))
    return table[list(FULL_COLUMNS)].astype({"status": str})


def _region_aggregate(frame: pd.DataFrame, steps: int) -> pd.DataFrame:
    grouped = frame.groupby("key", sort=False).agg(kind=("kind", "first"), calls=("dur_us", "size"),
                                                   self_us=("self_us", "sum"), total_us=("dur_us", "sum"))
    grouped[["calls", "self_us", "total_us"]] = grouped[["calls", "self_us", "total_us"]].astype(float) / steps
    return grouped


def _region_table(old: pd.DataFrame, new: pd.DataFrame, step_delta_us: float, top: int) -> list[dict]:
    """Regions diffed by inclusive time per step; `share` is of the change of step time (regions nest, so the
    shares of a table overlap and need not sum to 1)."""
    kinds = old["kind"].combine_first(new["kind"]) if len(old) or len(new) else pd.Series(dtype=object)
    numeric = ["calls", "self_us", "total_us"]
    joined = old[numeric].add_prefix("old_").join(new[numeric].add_prefix("new_"), how="outer").fillna(0.0)
    for column in numeric:
        joined[f"delta_{column}"] = joined[f"new_{column}"] - joined[f"old_{column}"]
    joined["status"] = _status(joined["old_calls"], joined["new_calls"], joined["old_total_us"], joined["new_total_us"])
    ranked = joined.reindex(joined["delta_total_us"].abs().sort_values(ascending=False, kind="stable").index)
    rows = []
    for key, row in ranked.head(top).iterrows():
        entry = {"key": str(key), "kind": str(kinds.get(key, "annotation"))}
        for column in numeric:
            entry[f"old_{column}"] = round(float(row[f"old_{column}"]), 3)
            entry[f"new_{column}"] = round(float(row[f"new_{column}"]), 3)
        for column in numeric:
            entry[f"delta_{column}"] = round(float(row[f"delta_{column}"]), 3)
        share = float(row["delta_total_us"]) / step_delta_us if abs(step_delta_us) > 1e-9 else 0.0
        entry.update(share=round(share, 4), status=str(row["status"]))
        rows.append(entry)
    return rows


def _region_findings(regions: list[dict], limit: int = 2) -> list[str]:
    """Regions that exist on one side only (a collective gone, a new record_function block), in plain words."""
    found = []
    for row in regions:
        if len(found) >= limit:
            break
        if row["kind"].endswith("step") or row["status"] not in ("added", "deleted"):
            continue
        side = "new" if row["status"] == "added" else "old"
        found.append(f"region {row['key']} ({row['kind']}) {row['status']}: {row[f'{side}_calls']:g} calls/step, "
                     f"{row[f'{side}_total_us'] / 1000:.3f} ms/step inclusive in {side} only")
    return found


def _module_rollup(frame: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Self time of each op charged to its module and every ancestor module (inclusive module time)."""
    per_module = frame.groupby("module_path", observed=True, sort=False).agg(
        calls=("dur_us", "size"), self_us=("self_us", "sum"), flops=("flops_est", "sum"))
    rolled: dict[str, np.ndarray] = {}
    for module, row in zip(per_module.index, per_module.to_numpy(), strict=True):
        parts = str(module).split(".") if module else []
        for level in range(1, len(parts) + 1):
            key = ".".join(parts[:level])
            rolled[key] = rolled[key] + row if key in rolled else row.copy()
    table = pd.DataFrame.from_dict(rolled, orient="index", columns=["calls", "self_us", "flops"])
    table["total_us"] = table["self_us"]
    return table[["calls", "self_us", "total_us", "flops"]] / steps


def _top_shape(frame: pd.DataFrame, name: str, module: str) -> str:
    sub = frame.loc[(frame["name"] == name) & (frame["module_path"] == module), "input_dims"]
    return str(sub.value_counts().index[0]) if len(sub) else ""


def _dtype_mix(frame: pd.DataFrame) -> dict:
    total = frame["self_us"].sum()
    low = frame.loc[frame["low_precision"], "self_us"].sum()
    # a quantized op's time sits partly in its children (quantize, unpack), so count it inclusively
    quantized = frame.loc[frame["name"].astype(str).str.startswith("quantized::"), "dur_us"].sum()
    by_types = frame.groupby("input_types", observed=True)["self_us"].sum()
    weights = Counter()
    for text, us in by_types.items():
        for dtype in set(_dims(str(text))):
            if isinstance(dtype, str) and dtype:
                weights[dtype] += us
    return {"low_precision_share": round(min(1.0, float((low + quantized) / total)), 4) if total else 0.0,
            "dtypes": [t for t, _ in weights.most_common(6)]}


def describe_row(op: str, module: str, delta_us: float, share: float, old_shape: str, new_shape: str) -> str:
    where = f" under {module}" if module else ""
    text = f"{op}{where}: {delta_us / 1000:+.2f} ms/step, {100 * share:.0f}% of the change"
    if old_shape and new_shape and old_shape != new_shape:
        text += f"; shapes {new_shape} (new) vs {old_shape} (old)"
    elif new_shape and not old_shape:
        text += "; new in this version"
    return text


def _findings(old_ops, new_ops, old_steps, new_steps, tables, total_delta, limit: int = 5) -> list[str]:
    """Plain words for the top of the diff: the module that holds most of the change, then operators."""
    if abs(total_delta) < 1e-9:
        return []
    same_sign = lambda row: row["delta_self_us"] * total_delta > 0  # noqa: E731
    found = []
    holders = [r for r in tables["modules"] if same_sign(r) and r["share"] >= 0.5]
    if holders:
        deepest = max(holders, key=lambda r: (r["key"].count("."), r["share"]))
        found.append(f"module {deepest['key']}: {deepest['delta_self_us'] / 1000:+.2f} ms/step, "
                     f"{100 * deepest['share']:.0f}% of the change")
    for row in [r for r in tables["ops"] if same_sign(r)][:2]:
        flops = f"; FLOPs {row['new_flops'] / row['old_flops']:.2f}x" if row["old_flops"] > 0 else ""
        calls = f"{row['new_calls']:g} calls/step"
        if row["delta_calls"]:
            calls = f"{row['old_calls']:g} -> {calls}"
        status = " (new op)" if row["status"] == "added" else ""
        found.append(f"{row['key']}{status}: {row['delta_self_us'] / 1000:+.2f} ms/step, {100 * row['share']:.0f}% of the "
                     f"change, {calls}{flops}")
    pairs = _diff_table(_aggregate(old_ops, ["module_path", "name"], old_steps),
                        _aggregate(new_ops, ["module_path", "name"], new_steps), total_delta, 50)
    for row in pairs:
        if len(found) >= limit:
            break
        if not same_sign(row):
            continue
        module, op = row["key"].split(" | ", 1)
        if not module:
            continue
        found.append(describe_row(op, module, row["delta_self_us"], row["share"],
                                  _top_shape(old_ops, op, module), _top_shape(new_ops, op, module)))
    return found


def diff_traces(old: Trace, new: Trace, top: int = 25, full: bool = False) -> dict:
    """The diff's totals, findings and top `top` rows of each table; with `full`, also `full`: every row of every
    op table plus the (module path, op, input shape) drill-down table, as one frame (`full_table`)."""
    old_ops, old_steps = side_table(old)
    new_ops, new_steps = side_table(new)
    old_self = old_ops["self_us"].sum() / old_steps
    new_self = new_ops["self_us"].sum() / new_steps
    total_delta = new_self - old_self

    frames = {
        "ops": _diff_frame(_aggregate(old_ops, ["name"], old_steps), _aggregate(new_ops, ["name"], new_steps), total_delta),
        "shapes": _diff_frame(_aggregate(old_ops, ["name", "input_dims"], old_steps),
                              _aggregate(new_ops, ["name", "input_dims"], new_steps), total_delta),
        "modules": _diff_frame(_module_rollup(old_ops, old_steps), _module_rollup(new_ops, new_steps), total_delta),
        "tree": _diff_frame(_aggregate(old_ops, ["call_path"], old_steps), _aggregate(new_ops, ["call_path"], new_steps),
                            total_delta),
    }
    tables = {name: _rows(frame, top) for name, frame in frames.items()}
    kernels = {}
    for label, trace, steps in (("old", old, old_steps), ("new", new, new_steps)):
        gpu = _in_steps(trace.events[trace.events["cat"] == "kernel"], trace)
        kernels[label] = gpu.assign(name=gpu["name"].astype(str), self_us=gpu["dur_us"], flops_est=0.0).pipe(
            _aggregate, ["name"], steps) if len(gpu) else None
    if kernels["old"] is not None or kernels["new"] is not None:
        empty = pd.DataFrame(columns=["calls", "self_us", "total_us", "flops"], dtype=float)
        old_k = kernels["old"] if kernels["old"] is not None else empty
        new_k = kernels["new"] if kernels["new"] is not None else empty
        frames["kernels"] = _diff_frame(old_k, new_k, float(new_k["self_us"].sum() - old_k["self_us"].sum()))
        tables["kernels"] = _rows(frames["kernels"], top)

    old_step_us = float((old.steps["end_us"] - old.steps["start_us"]).mean())
    new_step_us = float((new.steps["end_us"] - new.steps["start_us"]).mean())
    old_regions = _region_aggregate(region_frame(old), old_steps)
    new_regions = _region_aggregate(region_frame(new), new_steps)
    tables["regions"] = _region_table(old_regions, new_regions, new_step_us - old_step_us, top)

    findings = _findings(old_ops, new_ops, old_steps, new_steps, tables, total_delta)
    findings += _region_findings(tables["regions"])

    old_names, new_names = set(old_ops["name"]), set(new_ops["name"])
    added = sorted(new_names - old_names, key=lambda n: -new_ops.loc[new_ops["name"] == n, "self_us"].sum())
    removed = sorted(old_names - new_names, key=lambda n: -old_ops.loc[old_ops["name"] == n, "self_us"].sum())
    totals = {
        "old_self_ms_per_step": round(old_self / 1000, 4),
        "new_self_ms_per_step": round(new_self / 1000, 4),
        "delta_self_ms_per_step": round(total_delta / 1000, 4),
        "old_step_ms": round(old_step_us / 1000, 4),
        "new_step_ms": round(new_step_us / 1000, 4),
        "old_flops_per_step": float(old_ops["flops_est"].sum() / old_steps),
        "new_flops_per_step": float(new_ops["flops_est"].sum() / new_steps),
        "old_calls_per_step": round(len(old_ops) / old_steps, 2),
        "new_calls_per_step": round(len(new_ops) / new_steps, 2),
        "old_input_elements_per_step": float(_first_op_elements(old_ops) / old_steps),
        "new_input_elements_per_step": float(_first_op_elements(new_ops) / new_steps),
        "old_copy_ms_per_step": round(float(old_ops.loc[old_ops["name"].isin(COPY_OPS), "self_us"].sum()) / old_steps / 1000, 4),
        "new_copy_ms_per_step": round(float(new_ops.loc[new_ops["name"].isin(COPY_OPS), "self_us"].sum()) / new_steps / 1000, 4),
        "ops_added": added[:10],
        "ops_removed": removed[:10],
        "old_precision": _dtype_mix(old_ops),
        "new_precision": _dtype_mix(new_ops),
        "steps": {"old": old_steps, "new": new_steps},
        "iterations": {"old": _iterations(old), "new": _iterations(new)},
        "regions_added": _only_in(new_regions, old_regions),
        "regions_deleted": _only_in(old_regions, new_regions),
    }
    diff = {"totals": totals, "findings": findings, "tables": tables,
            "old": {"path": old.path, **_meta(old)}, "new": {"path": new.path, **_meta(new)}}
    if full:
        keys = ["module_path", "name", "input_dims"]
        frames["module_shapes"] = _diff_frame(_aggregate(old_ops, keys, old_steps), _aggregate(new_ops, keys, new_steps),
                                              total_delta)
        diff["full"] = full_table(frames)
    return diff


def _only_in(side: pd.DataFrame, other: pd.DataFrame, limit: int = 10) -> list[str]:
    """Keys of the regions of `side` that `other` lacks, largest inclusive time first."""
    only = side.loc[~side.index.isin(other.index), "total_us"]
    return [str(k) for k in only.sort_values(ascending=False, kind="stable").index[:limit]]


def _iterations(trace: Trace) -> list[int]:
    """The ProfilerStep#N numbers diffed (all of the trace's, or those picked); [] when the trace has none."""
    return [int(s) for s in trace.steps.loc[trace.steps["name"] != "whole trace", "step"]]


def _first_op_elements(frame: pd.DataFrame) -> float:
    """Input elements of the root ops of each step: how large the tensors are that enter the model."""
    roots = frame[~frame["call_path"].astype(str).str.contains(" > ", regex=False)]
    counts = roots["input_dims"].value_counts()
    return float(sum(_elements(str(dims)) * n for dims, n in counts.items()))


def _meta(trace: Trace) -> dict:
    keep = ("rank", "devices", "device_vendor", "time_unit_detected", "n_events_kept")
    return {k: trace.metadata.get(k) for k in keep}


def profile_summary(trace: Trace, top: int = 15) -> dict:
    """One trace alone: the operators and modules that take the time, per step."""
    ops, steps = side_table(trace)

    def rows(table: pd.DataFrame) -> list[dict]:
        ranked = table.sort_values("self_us", ascending=False, kind="stable").head(top)
        return [{"key": " | ".join(map(str, k)) if isinstance(k, tuple) else str(k),
                 **{c: round(float(v), 3) for c, v in r.items()}} for k, r in ranked.iterrows()]

    return {"path": trace.path, "steps": steps, "self_ms_per_step": round(ops["self_us"].sum() / steps / 1000, 4),
            "flops_per_step": float(ops["flops_est"].sum() / steps),
            "ops": rows(_aggregate(ops, ["name"], steps)), "modules": rows(_module_rollup(ops, steps)),
            "shapes": rows(_aggregate(ops, ["name", "input_dims"], steps))}
