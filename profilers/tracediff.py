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
- `kernels`: per GPU kernel, when the traces have any.

Rows are ranked by their contribution to the total change of CPU self time per step (`share`). `signals`
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
    return int(np.prod(shape)) if shape else 1


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


def _module_paths(events: pd.DataFrame) -> list[str]:
    """Each event's module: its own TorchScript hierarchy or module annotation, else its parent's module."""
    own = [torchscript_module_path(m) or (n[len(MODULE_PREFIX):] if n.startswith(MODULE_PREFIX) else "")
           for m, n in zip(events["module"].astype(str), events["name"].astype(str), strict=True)]
    return _inherit(own, events["parent"].to_numpy(), lambda parent, mine: mine or parent)


def _inherit(own: list[str], parents: np.ndarray, combine) -> list[str]:
    """Resolve a value down the call tree: value[i] = combine(value[parent[i]], own[i]); roots combine with ""."""
    values: list[str | None] = [None] * len(own)
    for i in range(len(own)):
        chain = []
        j = i
        while j >= 0 and values[j] is None:
            chain.append(j)
            j = parents[j]
        value = values[j] if j >= 0 else ""
        for k in reversed(chain):
            value = combine(value, own[k])
            values[k] = value
    return values


def _call_paths(events: pd.DataFrame) -> list[str]:
    """"module::encoder > aten::linear > aten::addmm": the names from the step down to each event."""
    names = ["" if n.startswith("ProfilerStep#") else n for n in events["name"].astype(str)]
    return _inherit(names, events["parent"].to_numpy(),
                    lambda parent, mine: f"{parent} > {mine}" if parent and mine else parent or mine)


def side_table(trace: Trace) -> tuple[pd.DataFrame, int]:
    """The CPU ops of one trace with module, call path, FLOPs and size columns; and its number of steps."""
    events = trace.events.reset_index(drop=True)
    table = events.assign(
        module_path=_module_paths(events),
        call_path=_call_paths(events),
        name=events["name"].astype(str),
        input_dims=events["input_dims"].astype(str),
        input_types=events["input_types"].astype(str),
    )
    cpu = table[table["cat"] == "cpu_op"].copy()
    given = cpu["flops"].to_numpy(dtype=float)
    estimated = np.array([estimate_flops(n, d) for n, d in zip(cpu["name"], cpu["input_dims"], strict=True)])
    cpu["flops_est"] = np.where(np.isnan(given), estimated, given)
    cpu["low_precision"] = cpu["input_types"].map(lambda t: any(p in t for p in LOW_PRECISION))
    steps = max(1, int((trace.steps["name"] != "whole trace").sum()) or 1)
    cpu = cpu[cpu["step"] >= 0] if (cpu["step"] >= 0).any() else cpu
    return cpu, steps


def _aggregate(frame: pd.DataFrame, keys: list[str], steps: int) -> pd.DataFrame:
    grouped = frame.groupby(keys, observed=True, sort=False).agg(
        calls=("dur_us", "size"), self_us=("self_us", "sum"), total_us=("dur_us", "sum"), flops=("flops_est", "sum"))
    return grouped / steps


def _diff_table(old: pd.DataFrame, new: pd.DataFrame, total_delta_us: float, top: int) -> list[dict]:
    joined = old.add_prefix("old_").join(new.add_prefix("new_"), how="outer").fillna(0.0)
    joined["delta_self_us"] = joined["new_self_us"] - joined["old_self_us"]
    joined["delta_total_us"] = joined["new_total_us"] - joined["old_total_us"]
    joined["delta_calls"] = joined["new_calls"] - joined["old_calls"]
    joined["share"] = joined["delta_self_us"] / total_delta_us if abs(total_delta_us) > 1e-9 else 0.0
    joined["status"] = np.where(joined["old_calls"] == 0, "added", np.where(joined["new_calls"] == 0, "removed", "changed"))
    ranked = joined.reindex(joined["delta_self_us"].abs().sort_values(ascending=False, kind="stable").index)
    rows = []
    for key, row in ranked.head(top).iterrows():
        entry = {"key": " | ".join(map(str, key)) if isinstance(key, tuple) else str(key)}
        for column in ("calls", "self_us", "total_us", "flops"):
            entry[f"old_{column}"] = round(float(row[f"old_{column}"]), 3)
            entry[f"new_{column}"] = round(float(row[f"new_{column}"]), 3)
        entry.update(delta_self_us=round(float(row["delta_self_us"]), 3), delta_total_us=round(float(row["delta_total_us"]), 3),
                     delta_calls=round(float(row["delta_calls"]), 3), share=round(float(row["share"]), 4),
                     status=str(row["status"]))
        rows.append(entry)
    return rows


def _module_rollup(frame: pd.DataFrame, steps: int, depth: int = 8) -> pd.DataFrame:
    """Self time of each op charged to its module and every ancestor module (inclusive module time)."""
    parts = []
    for level in range(1, depth + 1):
        prefix = frame["module_path"].map(lambda p, n=level: ".".join(p.split(".")[:n]) if p and p.count(".") + 1 >= n else None)
        sub = frame.assign(module=prefix).dropna(subset=["module"])
        if sub.empty:
            break
        parts.append(sub)
    if not parts:
        return pd.DataFrame(columns=["calls", "self_us", "total_us", "flops"])
    rolled = pd.concat(parts)
    grouped = rolled.groupby("module", sort=False).agg(
        calls=("dur_us", "size"), self_us=("self_us", "sum"), total_us=("self_us", "sum"), flops=("flops_est", "sum"))
    return grouped / steps


def _top_shape(frame: pd.DataFrame, name: str, module: str) -> str:
    sub = frame[(frame["name"] == name) & (frame["module_path"] == module)]
    if sub.empty:
        return ""
    return Counter(sub["input_dims"]).most_common(1)[0][0]


def _dtype_mix(frame: pd.DataFrame) -> dict:
    total = frame["self_us"].sum()
    low = frame.loc[frame["low_precision"], "self_us"].sum()
    # a quantized op's time sits partly in its children (quantize, unpack), so count it inclusively
    quantized = frame.loc[frame["name"].str.startswith("quantized::"), "dur_us"].sum()
    types = Counter()
    for text, us in zip(frame["input_types"], frame["self_us"], strict=True):
        for t in set(_dims(text.replace("'", '"')) if text.startswith("[") else []):
            if t:
                types[t] += us
    return {"low_precision_share": round(min(1.0, float((low + quantized) / total)), 4) if total else 0.0,
            "dtypes": [t for t, _ in types.most_common(6)]}


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


def diff_traces(old: Trace, new: Trace, top: int = 25) -> dict:
    old_ops, old_steps = side_table(old)
    new_ops, new_steps = side_table(new)
    old_self = old_ops["self_us"].sum() / old_steps
    new_self = new_ops["self_us"].sum() / new_steps
    total_delta = new_self - old_self

    tables = {
        "ops": _diff_table(_aggregate(old_ops, ["name"], old_steps), _aggregate(new_ops, ["name"], new_steps), total_delta, top),
        "shapes": _diff_table(_aggregate(old_ops, ["name", "input_dims"], old_steps),
                              _aggregate(new_ops, ["name", "input_dims"], new_steps), total_delta, top),
        "modules": _diff_table(_module_rollup(old_ops, old_steps), _module_rollup(new_ops, new_steps), total_delta, top),
        "tree": _diff_table(_aggregate(old_ops, ["call_path"], old_steps), _aggregate(new_ops, ["call_path"], new_steps),
                            total_delta, top),
    }
    kernels = {}
    for label, trace, steps in (("old", old, old_steps), ("new", new, new_steps)):
        gpu = trace.events[trace.events["cat"] == "kernel"]
        if (gpu["step"] >= 0).any():
            gpu = gpu[gpu["step"] >= 0]
        kernels[label] = gpu.assign(name=gpu["name"].astype(str), self_us=gpu["dur_us"], flops_est=0.0).pipe(
            _aggregate, ["name"], steps) if len(gpu) else None
    if kernels["old"] is not None or kernels["new"] is not None:
        empty = pd.DataFrame(columns=["calls", "self_us", "total_us", "flops"], dtype=float)
        old_k = kernels["old"] if kernels["old"] is not None else empty
        new_k = kernels["new"] if kernels["new"] is not None else empty
        tables["kernels"] = _diff_table(old_k, new_k, float(new_k["self_us"].sum() - old_k["self_us"].sum()), top)

    findings = _findings(old_ops, new_ops, old_steps, new_steps, tables, total_delta)

    old_names, new_names = set(old_ops["name"]), set(new_ops["name"])
    added = sorted(new_names - old_names, key=lambda n: -new_ops.loc[new_ops["name"] == n, "self_us"].sum())
    removed = sorted(old_names - new_names, key=lambda n: -old_ops.loc[old_ops["name"] == n, "self_us"].sum())
    signals = {
        "old_self_ms_per_step": round(old_self / 1000, 4),
        "new_self_ms_per_step": round(new_self / 1000, 4),
        "delta_self_ms_per_step": round(total_delta / 1000, 4),
        "old_step_ms": round(float((old.steps["end_us"] - old.steps["start_us"]).mean()) / 1000, 4),
        "new_step_ms": round(float((new.steps["end_us"] - new.steps["start_us"]).mean()) / 1000, 4),
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
    }
    return {"signals": signals, "findings": findings, "tables": tables,
            "old": {"path": old.path, **_meta(old)}, "new": {"path": new.path, **_meta(new)}}


def _first_op_elements(frame: pd.DataFrame) -> float:
    """Input elements of the root ops of each step: how large the tensors are that enter the model."""
    roots = frame[frame["call_path"].str.count(" > ") == 0]
    return float(sum(_elements(d) for d in roots["input_dims"])) if len(roots) else 0.0


def _meta(trace: Trace) -> dict:
    keep = ("rank", "devices", "device_vendor", "time_unit_detected", "n_events_kept")
    return {k: trace.metadata.get(k) for k in keep}


def flops_ratio(signals: dict) -> float | None:
    old, new = signals["old_flops_per_step"], signals["new_flops_per_step"]
    return new / old if old > 0 and not math.isnan(old) else None


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
