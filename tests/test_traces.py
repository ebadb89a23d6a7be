"""profilers.traces: the streaming Kineto trace reader.

Real traces come from ../shared/data/traces (skipped when absent); exact values are checked on small
traces written here; bad input must give one TraceError naming the file; memory must not grow with the
file (streaming). The fast path (orjson over chunks) must give exactly what the ijson path gives, on every
real trace and on hand-made documents cut into chunks of every size; whatever it does not read, the ijson
path reads (or reports).
"""

from __future__ import annotations

import gc
import gzip
import json
import math
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diagnose.core.errors import UserError
from fixtures.synthetic_trace import write_synthetic_trace
from profilers import json_scan, trace_fast_reader, traces
from profilers.trace_ijson_reader import IJSON_BACKEND
from profilers.trace_nesting import nest
from profilers.traces import CATEGORIES, Trace, TraceError, find_trace_files, read_trace

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "data" / "traces"

EVENT_COLUMNS = ["name", "cat", "raw_cat", "ts_us", "dur_us", "pid", "tid", "device", "stream", "correlation",
                 "external_id", "input_dims", "input_types", "module", "flops", "step", "parent", "self_us"]
GPU_CATS = ["kernel", "memcpy", "memset", "gpu_annotation"]

# the files listed in ../shared/data/traces/README.md, with the number of events each holds
README_FILES = {
    "hta/trace_diff/control/control.json.gz": 109_123,
    "hta/trace_diff/test/test.json.gz": 105_167,
    "hta/trace_compare/base/base.json.gz": 33,
    "hta/trace_compare/test/test.json.gz": 34,
    "hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz": 68_692,
    "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz": 30,
    "hta/amd_trace/mi250_minitoy_train_ROCm6_2_kineto.json.gz": 220,
    "hta/rank_unavailable/rank_not_found.json.gz": 2_467,
    "hta/distributed_info_unavailable/distributed_info_not_found.json.gz": 2_467,
    "hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz": 1_408,
    "hta/call_stack/backward_thread.json": 7,
    "tb_plugin/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz": 75_718,
    "tb_plugin/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz": 71_424,
}


def shared(rel: str) -> Path:
    if not TRACES.is_dir():
        pytest.skip("../shared/data/traces not present")
    p = TRACES / rel
    if not p.is_file():
        pytest.skip(f"../shared/data/traces/{rel} not present")
    return p


_cache: dict[str, Trace] = {}


def real(rel: str) -> Trace:
    """Each real trace is parsed once per session, by the fast path alone (so that a silent fall back to the
    ijson path cannot hide here)."""
    if rel not in _cache:
        _cache[rel] = read_trace(shared(rel), parser="fast")
    return _cache[rel]


def write_trace(path: Path, events: list[dict], gz: bool = False, **top) -> Path:
    doc = {**top, "traceEvents": events}
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def X(name, ts, dur, cat="cpu_op", pid=1, tid=1, **args) -> dict:
    ev = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur}
    if args:
        ev["args"] = args
    return ev


def check_invariants(tr: Trace) -> None:
    ev = tr.events
    assert list(ev.columns) == EVENT_COLUMNS
    for c in ("name", "cat", "raw_cat", "pid", "tid", "input_dims", "input_types", "module"):
        assert isinstance(ev[c].dtype, pd.CategoricalDtype), c
    for c in ("ts_us", "dur_us", "flops", "self_us"):
        assert ev[c].dtype == np.float64, c
    for c in ("device", "stream", "correlation", "external_id", "step", "parent"):
        assert ev[c].dtype == np.int64, c
    assert list(ev["cat"].cat.categories) == list(CATEGORIES)
    assert all(isinstance(x, str) for x in ev["pid"].cat.categories)
    assert all(isinstance(x, str) for x in ev["tid"].cat.categories)
    assert ev["tid"].cat.categories.is_unique and ev["name"].cat.categories.is_unique
    assert ev["ts_us"].min() == 0.0
    assert (ev["dur_us"] >= 0).all()
    assert ev["ts_us"].is_monotonic_increasing
    assert ((ev["self_us"] >= 0) & (ev["self_us"] <= ev["dur_us"])).all()
    parent = ev["parent"].to_numpy()
    assert (parent < np.arange(len(ev))).all()  # a parent always precedes its children
    has = parent >= 0
    par = ev.iloc[parent[has]]
    kids = ev[has]
    assert (par["pid"].to_numpy() == kids["pid"].to_numpy()).all()
    assert (par["tid"].to_numpy() == kids["tid"].to_numpy()).all()
    assert (par["ts_us"].to_numpy() <= kids["ts_us"].to_numpy()).all()
    assert (kids["ts_us"].to_numpy() < (par["ts_us"] + par["dur_us"]).to_numpy()).all()
    assert set(par["cat"].astype(str)) <= {"cpu_op", "annotation", "python", "runtime"}
    gpu = ev["cat"].isin(GPU_CATS).to_numpy()
    assert (parent[gpu] == -1).all()
    assert (ev["self_us"].to_numpy()[gpu] == ev["dur_us"].to_numpy()[gpu]).all()
    md = tr.metadata
    assert md["n_events_kept"] == len(ev) > 0
    assert md["n_events_read"] >= md["n_events_kept"]
    assert md["time_unit_detected"] in ("us", "ns")
    assert md["device_vendor"] in ("nvidia", "amd", "cpu", "unknown")
    assert list(tr.steps.columns) == ["step", "name", "start_us", "end_us"]
    assert tr.steps["step"].dtype == np.int64
    assert (tr.steps["end_us"] >= tr.steps["start_us"]).all()
    assert set(ev["step"]) <= set(tr.steps["step"]) | {-1}


def counts(tr: Trace) -> dict:
    return {k: int(v) for k, v in tr.events["cat"].value_counts().items() if v}


# ----------------------------------------------------------------------------------------------------
# real traces


def test_readme_lists_every_trace_file():
    if not TRACES.is_dir():
        pytest.skip("../shared/data/traces not present")
    found = {p.relative_to(TRACES).as_posix() for p in find_trace_files(TRACES)}
    assert found == set(README_FILES)


@pytest.mark.parametrize("rel", sorted(README_FILES))
def test_every_readme_trace_parses(rel):
    tr = real(rel)
    check_invariants(tr)
    assert tr.path == str(shared(rel))
    assert tr.metadata["n_events_read"] == README_FILES[rel]
    md = tr.metadata
    kept_or_counted = (md["n_events_kept"] + sum(md["dropped"].values()) + sum(md["unknown_categories"].values()))
    assert kept_or_counted == md["n_events_read"]


def test_control_trace():
    tr = real("hta/trace_diff/control/control.json.gz")
    assert counts(tr) == {"cpu_op": 40506, "runtime": 24692, "kernel": 8568, "memset": 654, "annotation": 288,
                          "memcpy": 228}
    assert tr.steps["step"].tolist() == [1009, 1010, 1011, 1012, 1013, 1014]
    assert tr.steps["name"].tolist() == [f"ProfilerStep#{i}" for i in range(1009, 1015)]
    assert (tr.steps["start_us"].iloc[1:].to_numpy() >= tr.steps["end_us"].iloc[:-1].to_numpy()).all()
    md = tr.metadata
    assert (md["rank"], md["world_size"], md["device_vendor"], md["time_unit_detected"]) == (3, 8, "nvidia", "us")
    assert md["devices"] == ["NVIDIA A100-PG509-200"] * 8
    assert md["schema_version"] == 1
    assert md["dropped"] == {"ph=f": 24692, "ph=s": 9450, "ph=M": 42, "ph=i": 2}
    assert md["unknown_categories"] == {"Trace": 1}
    ev = tr.events
    # almost every event lies in a step; the step of a row is the step its start falls in
    assert (ev["step"] >= 1009).mean() > 0.99
    first = tr.steps.iloc[0]
    in_first = ev[(ev["ts_us"] >= first.start_us) & (ev["ts_us"] < first.end_us)]
    assert (in_first["step"] == 1009).all()
    # kernels carry device/stream/correlation; cpu ops carry shapes; runtime correlations link to kernels
    k = ev[ev["cat"] == "kernel"]
    assert (k["device"] == 3).all() and (k["stream"] >= 0).all() and (k["correlation"] >= 0).all()
    assert (ev.loc[ev["cat"] == "cpu_op", "input_dims"] != "").mean() > 0.9
    rt = ev[ev["cat"] == "runtime"]
    assert k["correlation"].isin(rt["correlation"]).mean() > 0.99
    # nesting: aten ops hang under ProfilerStep annotations, launches under ops
    assert (rt["parent"] >= 0).mean() > 0.95
    ann = ev[ev["name"] == "ProfilerStep#1010"]
    assert len(ann) == 1 and ann["parent"].iloc[0] == -1
    assert 0 < ann["self_us"].iloc[0] < ann["dur_us"].iloc[0]


def test_test_trace_other_gpu():
    tr = real("hta/trace_diff/test/test.json.gz")
    md = tr.metadata
    assert (md["rank"], md["world_size"], md["device_vendor"]) == (1, 2, "nvidia")
    assert md["devices"] == ["Tesla V100-SXM2-16GB"] * 2
    assert counts(tr)["kernel"] == 9876 and counts(tr)["cpu_op"] == 31236
    assert tr.steps["step"].tolist() == list(range(1009, 1015))


def test_trace_compare_pair_small():
    base = real("hta/trace_compare/base/base.json.gz")
    test = real("hta/trace_compare/test/test.json.gz")
    assert len(base.events) == 33 and len(test.events) == 34
    assert counts(base) == {"cpu_op": 6, "kernel": 6, "memcpy": 6, "memset": 6, "runtime": 5, "annotation": 4}
    assert counts(test)["cpu_op"] == 9 and counts(test)["kernel"] == 5
    assert base.steps["step"].tolist() == [1009, 1010] == test.steps["step"].tolist()
    assert base.metadata["rank"] == 1 and base.metadata["world_size"] is None
    assert base.metadata["devices"] == [] and base.metadata["device_vendor"] == "nvidia"  # from cuda* runtime calls
    assert base.metadata["schema_version"] is None


def test_ns_resolution_trace_has_sane_durations():
    tr = real("hta/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz")
    md = tr.metadata
    # displayTimeUnit is "ns" but the values are (fractional) microseconds since the epoch
    assert md["display_time_unit"] == "ns" and md["time_unit_detected"] == "us"
    assert 1.7e15 < md["ts_origin_us"] < 1.8e15
    ev = tr.events
    span = (ev["ts_us"] + ev["dur_us"]).max()
    assert 0.1e6 < span < 10e6  # half a second of training, in microseconds
    med = ev.groupby("cat", observed=True)["dur_us"].median()
    assert 1 < med["kernel"] < 1000 and 0.1 < med["runtime"] < 100 and 0.5 < med["cpu_op"] < 1000
    assert (ev["dur_us"] != ev["dur_us"].round()).any()  # fractional microseconds are kept
    assert tr.steps["step"].tolist() == [101, 102, 103, 104, 105]
    assert (md["rank"], md["world_size"]) == (0, 1)
    assert counts(tr)["gpu_annotation"] == 15


def test_cpu_only_trace():
    tr = real("hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz")
    c = counts(tr)
    assert "kernel" not in c and "runtime" not in c and c == {"annotation": 11, "cpu_op": 4}
    md = tr.metadata
    assert md["device_vendor"] == "cpu" and md["devices"] == []
    assert (md["rank"], md["world_size"]) == (34, 300)
    assert tr.steps["step"].tolist() == [551]
    assert (tr.events["input_types"] == '["float"]').sum() == 10  # gloo:all_reduce "Input type"


def test_amd_trace():
    tr = real("hta/amd_trace/mi250_minitoy_train_ROCm6_2_kineto.json.gz")
    md = tr.metadata
    assert md["device_vendor"] == "amd"
    assert md["devices"][0] == "AMD Radeon Graphics"
    assert counts(tr) == {"cpu_op": 70, "runtime": 21, "kernel": 14, "annotation": 3, "memcpy": 2, "gpu_annotation": 2}
    # ProfilerStep#1 is also recorded as a gpu_user_annotation: only the CPU-side markers make the steps
    assert tr.steps["step"].tolist() == [1, 2]
    assert tr.steps["end_us"].iloc[0] == pytest.approx(9288.291)
    assert tr.steps["start_us"].iloc[1] == 9325.301  # rounded to the nanosecond, no float noise
    rt = tr.events[tr.events["name"] == "hipMemcpyWithStream"]
    assert (rt["stream"] == 0).all()  # "stream": "0x0"


def test_rank_and_distributed_info_unavailable():
    a = real("hta/rank_unavailable/rank_not_found.json.gz")
    b = real("hta/distributed_info_unavailable/distributed_info_not_found.json.gz")
    assert a.metadata["rank"] is None and a.metadata["world_size"] is None
    assert b.metadata["rank"] is None and b.metadata["world_size"] is None
    assert b.metadata["devices"] == ["NVIDIA A100-PG509-200"] * 8 and b.metadata["device_vendor"] == "nvidia"
    assert a.metadata["devices"] == [] and a.metadata["device_vendor"] == "unknown"  # nccl backend, no devices
    assert counts(a) == counts(b) == {"cpu_op": 2424, "annotation": 43}
    assert a.steps["step"].tolist() == [1009]


def test_alexnet_trace_without_steps():
    tr = real("hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz")
    assert len(tr.steps) == 1
    row = tr.steps.iloc[0]
    assert (row.step, row["name"], row.start_us) == (0, "whole trace", 0.0)
    assert row.end_us == (tr.events["ts_us"] + tr.events["dur_us"]).max()
    assert (tr.events["step"] == 0).all()
    md = tr.metadata
    assert md["unknown_categories"] == {"cuda_sync": 41, "Trace": 1}
    assert md["dropped"]["ph=f"] == 345 and md["dropped"]["ph=s"] == 155
    assert counts(tr)["memset"] == 3


def test_call_stack_plain_json_nesting():
    tr = real("hta/call_stack/backward_thread.json")
    ev = tr.events.set_index(tr.events["name"].astype(str))
    names = list(ev.index)

    def parent_of(name):
        p = ev.loc[name, "parent"]
        return names[p] if p >= 0 else None

    assert parent_of("ProfilerStep#552") is None
    assert parent_of("## backward ##") == "ProfilerStep#552"
    assert parent_of("autograd::engine::evaluate_function: AddmmBackward0") is None  # another thread
    assert parent_of("AddmmBackward0") == "autograd::engine::evaluate_function: AddmmBackward0"
    assert parent_of("aten::mm") == "AddmmBackward0"
    assert parent_of("cudaLaunchKernel") == "aten::mm"
    kernel = [n for n in names if n.startswith("void cutlass")][0]
    assert parent_of(kernel) is None
    assert ev.loc["aten::mm", "self_us"] == 58 - 10
    assert ev.loc["AddmmBackward0", "self_us"] == 102 - 58
    assert ev.loc["ProfilerStep#552", "self_us"] == 413451 - 107988
    assert ev.loc[kernel, "correlation"] == 2131433 == ev.loc["cudaLaunchKernel", "correlation"]
    assert ev.loc[kernel, "stream"] == 7 and ev.loc["cudaLaunchKernel", "stream"] == -1
    assert (ev["step"] == 552).all()
    assert tr.metadata["rank"] == 0


@pytest.mark.parametrize("rel", ["tb_plugin/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz",
                                 "tb_plugin/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz"])
def test_tb_plugin_old_categories(rel):
    tr = real(rel)
    ev = tr.events
    mapping = ev.groupby("raw_cat", observed=True)["cat"].agg(lambda s: set(s.astype(str)))
    assert {k: v for k, v in mapping.items()} == {"Operator": {"cpu_op"}, "Kernel": {"kernel"}, "Runtime": {"runtime"},
                                                  "Memcpy": {"memcpy"}, "Memset": {"memset"}}
    assert tr.steps["step"].tolist() == [5, 6, 7, 8, 9, 10]  # ProfilerStep#N are "Operator" events here
    # "external id" (lower case) in this format; tid "25738" (str) and 25738 (int) are one thread
    assert (ev.loc[ev["cat"] == "kernel", "external_id"] >= 0).all()
    assert "stream 7" in set(ev["tid"].cat.categories)
    assert ev["tid"].cat.categories.is_unique
    assert tr.metadata["rank"] is None and tr.metadata["device_vendor"] == "nvidia"
    assert tr.metadata["dropped"]["ph=i"] > 10000


def test_uses_the_c_parser():
    assert IJSON_BACKEND == "yajl2_c"  # the pure-Python fallback parses ~10x slower


def test_find_trace_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.json", "a/b/y.json.gz", "a/b/w0.pt.trace.json", "a/b/w1.pt.trace.json.gz", "a/notes.txt", "z.jsonl"):
        (tmp_path / name).write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in find_trace_files(tmp_path)]
    assert found == ["a/b/w0.pt.trace.json", "a/b/w1.pt.trace.json.gz", "a/b/y.json.gz", "a/x.json"]
    assert find_trace_files(tmp_path / "a" / "x.json") == [tmp_path / "a" / "x.json"]
    with pytest.raises(TraceError, match="no such file"):
        find_trace_files(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------
# exact values on hand-made traces


def test_nesting_parent_and_self_time(tmp_path):
    events = [
        X("A", 1000, 100),
        X("B", 1010, 30),
        X("C", 1015, 5),
        X("D", 1050, 10),
        X("cudaLaunchKernel", 1052, 2, cat="cuda_runtime", correlation=9),
        X("T2", 1012, 18, tid=2),  # another thread: overlaps A in time but is a root
        X("gemm", 1053, 40, cat="kernel", pid=0, tid=7, device=0, stream=7, correlation=9),
        X("Memset (Device)", 1054, 1, cat="gpu_memset", pid=0, tid=7),
        X("E", 1100, 0),  # zero length, starts where A ends: a root
    ]
    tr = read_trace(write_trace(tmp_path / "t.json", events))
    check_invariants(tr)
    ev = tr.events
    names = ev["name"].astype(str).tolist()
    assert names == ["A", "B", "T2", "C", "D", "cudaLaunchKernel", "gemm", "Memset (Device)", "E"]
    parents = [names[p] if p >= 0 else None for p in ev["parent"]]
    assert parents == [None, "A", None, "B", "A", "D", None, None, None]
    assert ev["self_us"].tolist() == [60.0, 25.0, 18.0, 5.0, 8.0, 2.0, 40.0, 1.0, 0.0]
    assert ev["ts_us"].tolist() == [0.0, 10.0, 12.0, 15.0, 50.0, 52.0, 53.0, 54.0, 100.0]
    assert ev["cat"].astype(str).tolist() == ["cpu_op", "cpu_op", "cpu_op", "cpu_op", "cpu_op", "runtime", "kernel",
                                              "memset", "cpu_op"]
    assert ev["correlation"].tolist() == [-1, -1, -1, -1, -1, 9, 9, -1, -1]
    assert ev["stream"].tolist() == [-1] * 6 + [7, -1, -1]
    assert (ev["step"] == 0).all()
    assert tr.steps.to_dict("records") == [{"step": 0, "name": "whole trace", "start_us": 0.0, "end_us": 100.0}]


def test_nesting_ties_identical_and_same_start(tmp_path):
    events = [
        X("outer", 0, 50),
        X("same_start_shorter", 0, 20),
        X("twin1", 30, 10),
        X("twin2", 30, 10),  # identical interval: nested under its twin (file order)
        X("after", 50, 5),  # starts exactly when outer ends: a root
    ]
    ev = read_trace(write_trace(tmp_path / "t.json", events)).events
    names = ev["name"].astype(str).tolist()
    assert names == ["outer", "same_start_shorter", "twin1", "twin2", "after"]
    assert [names[p] if p >= 0 else None for p in ev["parent"]] == [None, "outer", "outer", "twin1", None]
    assert ev["self_us"].tolist() == [20.0, 20.0, 0.0, 10.0, 5.0]


def test_nest_matches_a_stack():
    rng = np.random.default_rng(7)

    def laminar(n):
        ts, ds = [], []

        def fill(a, b, depth):
            x = a
            while x < b and len(ts) < n:
                s = x + int(rng.integers(0, 3))
                if s > b:
                    break
                length = 0 if rng.random() < 0.1 else int(rng.integers(0, max(1, (b - s) // 2 + 1)))
                ts.append(s)
                ds.append(length)
                if rng.random() < 0.05 and length:
                    ts.append(s)
                    ds.append(length)
                if length > 2 and depth < 6:
                    fill(s, s + length, depth + 1)
                x = s + length + (0 if rng.random() < 0.3 else int(rng.integers(0, 3)))

        fill(0, 10_000, 0)
        return np.array(ts, float) * 0.125, np.array(ds, float) * 0.125

    def stack(g, t, d):
        e = t + d
        out = np.full(len(t), -1)
        st: list[int] = []
        for i in np.lexsort((-e, t, g)):
            while st and (g[st[-1]] != g[i] or e[st[-1]] <= t[i]):
                st.pop()
            out[i] = st[-1] if st else -1
            st.append(i)
        return out

    for _ in range(60):
        parts = [laminar(int(rng.integers(1, 300))) for _ in range(int(rng.integers(1, 4)))]
        g = np.concatenate([np.full(len(p[0]), 5 * k) for k, p in enumerate(parts)])
        t = np.concatenate([p[0] for p in parts])
        d = np.concatenate([p[1] for p in parts])
        perm = rng.permutation(len(t))
        g, t, d = g[perm], t[perm], d[perm]
        np.testing.assert_array_equal(nest(g, t, d), stack(g, t, d))


def test_nest_on_huge_time_ranges():
    """Days of nanoseconds on several threads overflow the one-key search: the per-thread path must agree."""
    g = np.array([0, 0, 0, 1, 1, 2, 3, 4])
    t = np.array([0.0, 1e14, 2e14, 0.0, 5e14, 9e14, 1e15, 2e15])
    d = np.array([1e15, 1e13, 0.0, 1e15, 1.0, 0.0, 5.0, 1.0])
    assert nest(g, t, d).tolist() == [-1, 0, 0, -1, 3, -1, -1, -1]
    assert nest(g[:0], t[:0], d[:0]).tolist() == []


def test_step_assignment(tmp_path):
    base = 1_600_000_000_000_000
    events = [
        X("ProfilerStep#3", base + 0, 100, cat="user_annotation"),
        X("ProfilerStep#4", base + 100, 100, cat="user_annotation"),
        X("before", base - 10, 5),
        X("aten::add", base + 50, 10),
        X("aten::mul", base + 150, 10),
        X("late kernel", base + 250, 5, cat="kernel", pid=0, tid=7),
        X("straddling kernel", base + 99, 5, cat="kernel", pid=0, tid=7),
        X("ProfilerStep#3", base + 60, 1, cat="gpu_user_annotation", pid=0, tid=7),  # GPU side: not a marker
    ]
    tr = read_trace(write_trace(tmp_path / "t.json", events))
    check_invariants(tr)
    assert tr.steps.to_dict("records") == [
        {"step": 3, "name": "ProfilerStep#3", "start_us": 10.0, "end_us": 110.0},
        {"step": 4, "name": "ProfilerStep#4", "start_us": 110.0, "end_us": 210.0},
    ]
    step = dict(zip(tr.events["name"].astype(str) + "/" + tr.events["cat"].astype(str), tr.events["step"], strict=True))
    assert step == {"before/cpu_op": -1, "ProfilerStep#3/annotation": 3, "aten::add/cpu_op": 3,
                    "ProfilerStep#3/gpu_annotation": 3, "straddling kernel/kernel": 3, "ProfilerStep#4/annotation": 4,
                    "aten::mul/cpu_op": 4, "late kernel/kernel": -1}
    assert tr.metadata["ts_origin_us"] == base - 10


def test_relative_fractional_timestamps(tmp_path):
    events = [X("a", 1712195495505543.25, 63.813), X("b", 1712195495505600.5, 1.28)]
    tr = read_trace(write_trace(tmp_path / "t.json", events, displayTimeUnit="ns"))
    assert tr.events["ts_us"].tolist() == [0.0, 57.25]
    assert tr.events["dur_us"].tolist() == [63.813, 1.28]
    assert tr.metadata["time_unit_detected"] == "us"
    assert tr.metadata["ts_origin_us"] == 1712195495505543.25


def test_nanosecond_epoch_timestamps_are_detected(tmp_path):
    base = 1_712_195_495_505_543_123  # ns since the epoch
    events = [X("outer", base, 10_000), X("inner", base + 1_500, 2_250), X("k", base + 20_000, 4_000, cat="kernel", pid=0)]
    tr = read_trace(write_trace(tmp_path / "t.json", events))
    md = tr.metadata
    assert md["time_unit_detected"] == "ns"
    ev = tr.events
    assert ev["ts_us"].tolist() == [0.0, 1.5, 20.0]
    assert ev["dur_us"].tolist() == [10.0, 2.25, 4.0]
    assert ev["parent"].tolist() == [-1, 0, -1]
    assert ev["self_us"].tolist() == [7.75, 2.25, 4.0]
    assert md["ts_origin_us"] == pytest.approx(base / 1000)


def test_python_function_dropped_unless_kept(tmp_path):
    events = [
        X("op", 0, 100),
        {"ph": "X", "cat": "python_function", "name": "model.py(3): forward", "pid": 1, "tid": 1, "ts": 5, "dur": 50},
        {"ph": "X", "cat": "python_function", "name": "torch/nn/module.py(9): __call__", "pid": 1, "tid": 1, "ts": 6, "dur": 40},
        X("aten::mm", 10, 20),
    ]
    p = write_trace(tmp_path / "t.json", events)
    tr = read_trace(p)
    assert tr.events["name"].astype(str).tolist() == ["op", "aten::mm"]
    assert tr.metadata["dropped"] == {"python_function": 2}
    assert tr.events["parent"].tolist() == [-1, 0]
    kept = read_trace(p, keep_python=True)
    check_invariants(kept)
    ev = kept.events
    assert ev["cat"].astype(str).tolist() == ["cpu_op", "python", "python", "cpu_op"]
    assert ev["parent"].tolist() == [-1, 0, 1, 2]
    assert ev["self_us"].tolist() == [50.0, 10.0, 20.0, 20.0]
    assert kept.metadata["dropped"] == {}


def test_unknown_categories_and_phases_are_counted(tmp_path):
    events = [
        X("op", 0, 10),
        X("PyTorch Profiler (0)", 0, 1000, cat="Trace", pid="Spans", tid="PyTorch Profiler"),
        X("Stream Sync", 3, 1, cat="cuda_sync", pid=0, tid=7),
        X("Stream Sync", 5, 1, cat="cuda_sync", pid=0, tid=7),
        {"ph": "X", "name": "no cat", "pid": 1, "tid": 1, "ts": 1, "dur": 1},
        {"ph": "s", "id": 1, "pid": 1, "tid": 1, "ts": 1, "cat": "ac2g", "name": "ac2g"},
        {"ph": "f", "id": 1, "pid": 0, "tid": 7, "ts": 2, "cat": "ac2g", "name": "ac2g", "bp": "e"},
        {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 4, "args": {"Bytes": 4}},
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "python"}},
        {"ph": "b", "cat": "async", "id": 3, "name": "x", "pid": 1, "tid": 1, "ts": 3},
        {"ph": "e", "cat": "async", "id": 3, "name": "x", "pid": 1, "tid": 1, "ts": 4},
        {"name": "no ph", "pid": 1, "tid": 1, "ts": 4},
        X("cudaLaunchKernel", 6, 1, cat="cuda_driver"),
        X("hipLaunchKernel", 7, 1, cat="privateuse1_runtime"),
        X("user", 20, 1, cat="record_param_comms"),
    ]
    tr = read_trace(write_trace(tmp_path / "t.json", events))
    md = tr.metadata
    assert md["unknown_categories"] == {"Trace": 1, "cuda_sync": 2, "(missing)": 1}
    assert md["dropped"] == {"ph=s": 1, "ph=f": 1, "ph=i": 1, "ph=M": 1, "ph=b": 1, "ph=e": 1, "ph=missing": 1}
    assert md["n_events_read"] == len(events) and md["n_events_kept"] == 4
    assert tr.events["cat"].astype(str).tolist() == ["cpu_op", "runtime", "runtime", "annotation"]
    assert set(tr.events["raw_cat"].cat.categories) == {"cpu_op", "cuda_driver", "privateuse1_runtime",
                                                        "record_param_comms"}


def test_args_columns(tmp_path):
    events = [
        X("aten::addmm", 0, 10, **{"External id": 12, "Input Dims": [[4, 8], [8, 16], []],
                                   "Input type": ["float", "float", "Scalar"], "Module Hierarchy": "top.fc",
                                   "flops": 1024}),
        X("aten::relu", 10, 2, **{"External id": 13, "Input Dims": [[4, 16]], "flops": 64.5}),
        X("k", 11, 1, cat="Kernel", pid=0, tid="stream 7", **{"device": 0, "stream": 7, "correlation": 5,
                                                              "external id": 13}),
        X("m", 12, 1, cat="Memcpy", pid=0, tid=7, **{"device": "1", "stream": "0x0", "correlation": str(2**70)}),
        X("f", 12.5, 1, cat="Memset", pid=0, tid=7, **{"device": 1e30, "stream": 3.0, "correlation": [1]}),
        X("bare", 13, 1),
    ]
    ev = read_trace(write_trace(tmp_path / "t.json", events, gz=True)).events
    assert ev["external_id"].tolist() == [12, 13, 13, -1, -1, -1]
    assert ev["input_dims"].tolist() == ["[[4,8],[8,16],[]]", "[[4,16]]", "", "", "", ""]
    assert ev["input_types"].tolist() == ['["float","float","Scalar"]', "", "", "", "", ""]
    assert ev["module"].tolist() == ["top.fc", "", "", "", "", ""]
    assert ev["flops"].tolist()[:2] == [1024.0, 64.5] and all(math.isnan(x) for x in ev["flops"].tolist()[2:])
    assert ev["device"].tolist() == [-1, -1, 0, 1, -1, -1]
    assert ev["stream"].tolist() == [-1, -1, 7, 0, 3, -1]
    assert ev["correlation"].tolist() == [-1, -1, 5, -1, -1, -1]  # 2**70 does not fit int64
    assert ev["tid"].tolist() == ["1", "1", "stream 7", "7", "7", "1"]
    assert ev["pid"].tolist() == ["1", "1", "0", "0", "0", "1"]


def test_int_and_str_ids_are_one_category(tmp_path):
    events = [X("a", 0, 10, pid=25738, tid=25738), X("b", 1, 1, pid=25738, tid="25738")]
    ev = read_trace(write_trace(tmp_path / "t.json", events)).events
    assert list(ev["tid"].cat.categories) == ["25738"]
    assert ev["parent"].tolist() == [-1, 0]  # one thread, so b nests in a


def test_metadata_from_before_and_after_the_events(tmp_path):
    events = [X("aten::mm", 0, 1), X("gemm", 1, 1, cat="kernel", pid=0)]
    # Kineto writes these before traceEvents ...
    tr = read_trace(write_trace(tmp_path / "a.json", events, schemaVersion=1,
                                deviceProperties=[{"id": 0, "name": "NVIDIA H100 80GB HBM3"}],
                                distributedInfo={"backend": "nccl", "rank": 2, "world_size": 4}))
    md = tr.metadata
    assert (md["rank"], md["world_size"], md["devices"], md["device_vendor"], md["schema_version"]) == \
        (2, 4, ["NVIDIA H100 80GB HBM3"], "nvidia", 1)
    # ... other writers after it: found from the end of the stream
    doc = {"traceEvents": events * 200, "deviceProperties": [{"id": 0, "name": "AMD Instinct MI300X"}],
           "distributedInfo": {"rank": 5}, "schemaVersion": 2, "displayTimeUnit": "ms", "traceName": "x ], \"y"}
    p = tmp_path / "b.json.gz"
    p.write_bytes(gzip.compress(json.dumps(doc, indent=2).encode()))
    md = read_trace(p).metadata
    assert (md["rank"], md["devices"], md["device_vendor"], md["schema_version"], md["display_time_unit"]) == \
        (5, ["AMD Instinct MI300X"], "amd", 2, "ms")


def test_bare_array_of_events(tmp_path):
    p = tmp_path / "bare.json"
    p.write_text(json.dumps([X("a", 5, 10), X("b", 6, 2), {"ph": "M", "name": "x"}]))
    tr = read_trace(p)
    assert tr.events["name"].astype(str).tolist() == ["a", "b"]
    assert tr.events["parent"].tolist() == [-1, 0]
    assert tr.metadata["rank"] is None and tr.metadata["dropped"] == {"ph=M": 1}


def test_bad_events_are_dropped_and_counted(tmp_path):
    events = [
        X("good", 0, 10),
        {"ph": "X", "cat": "cpu_op", "name": "no dur", "pid": 1, "tid": 1, "ts": 1},
        {"ph": "X", "cat": "cpu_op", "name": "no ts", "pid": 1, "tid": 1, "dur": 1},
        X("negative dur", 2, -1),
        X("string ts", "3", 1),
        X("null dur", 3, None),
        X("bool dur", 3, True),
        X("negative ts", -5, 1),
        [1, 2, 3],
        "not an event",
        X("unhashable name", 4, 1) | {"name": ["x"]},
        X("args not an object", 4, 1) | {"args": [1]},
    ]
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"traceEvents": events}))
    tr = read_trace(p)
    assert tr.events["name"].astype(str).tolist() == ["good"]
    assert tr.metadata["dropped"] == {"missing ts/dur": 3, "invalid ts/dur": 4, "malformed event": 4}
    assert list(tr.events["name"].cat.categories) == ["good"]  # nothing left over from the dropped ones


# ----------------------------------------------------------------------------------------------------
# bad input: one TraceError naming the file


def expect_error(path: Path, *words: str) -> TraceError:
    with pytest.raises(TraceError) as info:
        read_trace(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg
    assert isinstance(info.value, UserError) and info.value.path == str(path)
    return info.value


def test_truncated_gzip_of_a_real_trace(tmp_path):
    data = shared("hta/trace_diff/control/control.json.gz").read_bytes()
    p = tmp_path / "half.json.gz"
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated gzip")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(json.dumps({"traceEvents": [X("a", i, 1) for i in range(2000)]}).encode())
    p = tmp_path / "t.pt.trace.json.gz"
    p.write_bytes(data[: len(data) - 20])
    expect_error(p, "truncated gzip")
    p.write_bytes(data[:10])  # a bare gzip header
    expect_error(p, "gzip")


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "bad.json.gz"
    p.write_bytes(b"\x1f\x8b" + b"\x00garbage" * 10)
    expect_error(p, "gzip")


def test_invalid_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "ts": 1, "dur": }]}')
    expect_error(p, "invalid JSON", "near byte")
    p.write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1}')
    expect_error(p, "invalid JSON", "truncated")
    p.write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1}]} trailing')
    expect_error(p, "invalid JSON")
    p.write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": NaN, "dur": 1}]}')
    expect_error(p, "invalid JSON")
    p.write_bytes(b'{"traceEvents": [{"name": "\xff\xfe"}]}')
    expect_error(p)
    p.write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1, "args": {"id": %d}}]}'
                 % 2**70)
    expect_error(p, "invalid JSON", "integer overflow")  # yajl stops at integers beyond 64 bits


def test_deep_nesting_is_refused_quickly_on_both_paths(tmp_path):
    """200 KB of nested brackets in an event's args took minutes on the ijson path (quadratic in the depth)."""
    ok = json.dumps(X("a", 1, 1))
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        depth = 200_000 // len(opener)
        nested = opener * depth + "1" + closer * depth
        p = write_trace(tmp_path / "deep.json", [])
        p.write_text('{"traceEvents": [%s, {"ph": "X", "name": "b", "args": {"x": %s}}]}' % (ok, nested))
        for parser in ("auto", "ijson"):
            start = time.perf_counter()
            with pytest.raises(TraceError, match="nested deeper than 64 levels") as info:
                read_trace(p, parser=parser)
            assert time.perf_counter() - start < 2 and info.value.path == str(p)
        start = time.perf_counter()  # the fast path alone gives up at orjson's limit (linear time), for auto to refuse
        with pytest.raises(Exception, match="invalid JSON"):
            read_trace(p, parser="fast")
        assert time.perf_counter() - start < 2
        gz = tmp_path / "deep.json.gz"
        gz.write_bytes(gzip.compress(p.read_bytes()))
        expect_error(gz, "nested deeper than 64 levels", "near byte")
    # as deep as the limit, and brackets inside strings, still parse
    at_limit = {"x": json.loads("[" * 60 + "1" + "]" * 60), "s": "[[[[" * 100}
    p = write_trace(tmp_path / "ok.json", [X("a", 1, 1, **at_limit)])
    for parser in ("fast", "ijson"):
        assert len(read_trace(p, parser=parser).events) == 1


def test_empty_file(tmp_path):
    p = tmp_path / "empty.json"
    p.write_bytes(b"")
    expect_error(p, "empty file")
    p.write_bytes(b"  \n\t ")
    expect_error(p, "empty file")
    g = tmp_path / "empty.json.gz"
    g.write_bytes(gzip.compress(b""))
    expect_error(g, "empty file")


def test_wrong_top_level(tmp_path):
    p = tmp_path / "t.json"
    p.write_text("{}")
    expect_error(p, "no 'traceEvents' array")
    p.write_text('{"traceEvents": 5}')
    expect_error(p, "'traceEvents' is not an array")
    p.write_text('{"traceEvents": {"ph": "X"}}')
    expect_error(p, "'traceEvents' is not an array")
    p.write_text("42")
    expect_error(p, "top level", "a number")
    p.write_text('"trace"')
    expect_error(p, "top level", "a string")


def test_no_profiler_events(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"traceEvents": []}')
    expect_error(p, "no profiler events")
    p.write_text("[]")
    expect_error(p, "no profiler events")
    write_trace(p, [{"ph": "X", "cat": "cpu_op", "name": "a", "pid": 1, "tid": 1, "ts": 1}] * 3)
    expect_error(p, "no profiler events", "missing ts/dur x3")
    write_trace(p, [X("PyTorch Profiler (0)", 0, 10, cat="Trace"), X("sync", 1, 1, cat="cuda_sync"),
                    {"ph": "s", "id": 1, "ts": 1, "cat": "ac2g"}])
    expect_error(p, "no profiler events", "cat=Trace")
    write_trace(p, [{"ph": "X", "cat": "python_function", "name": "f", "pid": 1, "tid": 1, "ts": 1, "dur": 1}])
    expect_error(p, "no profiler events", "python_function")


def test_missing_file_and_folder(tmp_path):
    expect_error(tmp_path / "nope.json.gz", "not found")
    expect_error(tmp_path, "folder")


# ----------------------------------------------------------------------------------------------------
# streaming: memory bounded by the kept events, not by the file


_RSS_PROBE = """
import json, resource, sys
from profilers.traces import read_trace
read_trace(sys.argv[2])  # warm up: every lazy import and cache in place before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tr = read_trace(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024
print(json.dumps({"delta": (peak - base) * scale, "rows": len(tr.events), "read": tr.metadata["n_events_read"],
                  "steps": len(tr.steps), "kernels": int((tr.events["cat"] == "kernel").sum())}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is POSIX")
def test_large_trace_streams_in_bounded_memory(tmp_path):
    """~300k events (60 MB of JSON): the peak RSS growth of the parse must stay far below what holding the
    document takes (json.load of this file grows RSS by ~6x its size: a list of event dicts). The parse
    runs in a fresh interpreter so earlier tests cannot hide its peak."""
    big = tmp_path / "big.pt.trace.json"
    n = write_synthetic_trace(big, 300_000)
    small = write_trace(tmp_path / "small.json", [X("a", 0, 1)])
    size = big.stat().st_size
    r = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(big), str(small)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ops = out["kernels"]
    assert ops == 75_000 and out["read"] == n == 4 * ops + out["steps"] and out["rows"] == 3 * ops + out["steps"]
    # compact columns take ~85 bytes a row; the table, the build and allocator slack about twice that
    assert out["delta"] < 0.75 * size, f"peak RSS grew by {out['delta'] / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"
    assert out["delta"] < 400 * out["rows"] + 16 * 2**20


def test_tracemalloc_peak_does_not_follow_file_size(tmp_path):
    """Events that are dropped (python_function, flows) carry 40 MB of strings: a streaming parse never holds
    them, so the traced peak stays near the size of the kept columns. (tracemalloc slows ijson ~15x, so this
    file has few events and large ones.)"""
    p = tmp_path / "fat.json"
    blob = "x" * 20_000
    with open(p, "w") as fh:
        fh.write('{"traceEvents": [\n')
        for i in range(2000):
            fh.write(f'{{"ph":"X","cat":"python_function","name":"f{i}","pid":1,"tid":1,"ts":{i * 10},"dur":5,'
                     f'"args":{{"Python id":{i},"blob":"{blob}"}}}},\n')
            fh.write(f'{{"ph":"X","cat":"kernel","name":"k","pid":0,"tid":7,"ts":{i * 10 + 1},"dur":2}},\n')
        fh.write('{"ph":"X","cat":"cpu_op","name":"last","pid":1,"tid":1,"ts":0,"dur":1}\n]}\n')
    size = p.stat().st_size
    assert size > 40e6
    tracemalloc.start()
    try:
        tr = read_trace(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(tr.events) == 2001 and tr.metadata["dropped"] == {"python_function": 2000}
    assert peak < 0.05 * size, f"traced peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"


# ----------------------------------------------------------------------------------------------------
# the fast path: exactly what the ijson path gives


def assert_same_trace(a: Trace, b: Trace) -> None:
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
    pd.testing.assert_frame_equal(a.steps, b.steps, check_exact=True)
    assert a.metadata == b.metadata
    assert list(a.metadata["dropped"]) == list(b.metadata["dropped"])  # in the same order, too
    assert list(a.metadata["unknown_categories"]) == list(b.metadata["unknown_categories"])
    assert a.path == b.path


@pytest.mark.parametrize("rel", sorted(README_FILES))
def test_fast_path_matches_ijson_on_every_real_trace(rel):
    assert_same_trace(real(rel), read_trace(shared(rel), parser="ijson"))


def outcome(path: Path, parser: str, keep_python: bool = False):
    """("ok", trace) or ("error", message) of one parse; the fast path alone may raise anything."""
    try:
        return "ok", read_trace(path, keep_python=keep_python, parser=parser)
    except TraceError as e:
        return "error", str(e)
    except Exception as e:  # only the fast path alone gives up with other exceptions
        assert parser == "fast", repr(e)
        return "declined", repr(e)


def check_paths_agree(path: Path, fast_must_read: bool, keep_python: bool = False) -> None:
    """auto gives exactly what ijson gives; the fast path alone either gives that too or gives up."""
    kind, slow = outcome(path, "ijson", keep_python)
    for parser in ("auto", "fast"):
        got_kind, got = outcome(path, parser, keep_python)
        if parser == "fast" and got_kind == "declined" and not fast_must_read:
            continue
        assert got_kind == kind, (parser, got, slow)
        if kind == "ok":
            assert_same_trace(got, slow)
        else:
            assert got == slow


@pytest.fixture(params=[9, 61, 4096, None], ids=lambda c: f"chunk={c or 'default'}")
def chunk(request, monkeypatch):
    """Small chunks put every chunk boundary inside strings, escapes, numbers and events."""
    if request.param is not None:
        monkeypatch.setattr(trace_fast_reader, "_CHUNK", request.param)
        monkeypatch.setattr(trace_fast_reader, "_SCAN_WINDOW", max(1, request.param // 3))
        monkeypatch.setattr(trace_fast_reader, "_BATCH_BYTES", request.param * 5)
    return request.param


TRICKY_EVENTS = [
    X("ProfilerStep#7", 1_600_000_000_000_000, 500, cat="user_annotation"),
    X("a }, { b", 1_600_000_000_000_010, 10, **{"Input Dims": [[1, 2], []], "Module Hierarchy": 'x"y\\',
                                                 "Input type": ["float", "}, {"], "External id": 4}),
    X('q"uote\\', 1_600_000_000_000_011, 2.5, **{"Call stack": "\\\\\\\"", "external id": "0x10", "flops": 12}),
    X("back\\slash\\\\", 1_600_000_000_000_012.125, 1, cat="kernel", pid=0, tid="stream 7", device=0, stream="7",
      correlation=3),
    {"ph": "X", "cat": "cpu_op", "name": '[]{},"\\', "pid": 1, "tid": 1, "ts": 1_600_000_000_000_013, "dur": 1,
     "args": {"x": [{"a": "}, {"}, [[], {}]], "Input Dims": [[1.0, 2]], "flops": 2.5}},
    [1, 2, {"}": "{"}], "not an event", 5, None, {}, [],
    {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "é ü \u2603 \U0001F600"}},
    {"ph": "f", "id": 1, "cat": "ac2g", "name": "ac2g", "ts": 1_600_000_000_000_014, "bp": "e"},
    X("big", 1_600_000_000_000_015, 1, **{"blob": "y}, {" * 300, "Input type": ["float", "}, {"]}),
    X("no args", 1_600_000_000_000_016, 0),
    X("null args", 1_600_000_000_000_017, 3) | {"args": None},
    X("empty args", 1_600_000_000_000_018, 3) | {"args": {}},
    X("bad args", 1_600_000_000_000_019, 3) | {"args": [1]},
    X("ints", 9_223_372_036_854_775_807, 1, cat="Memcpy", pid=0, tid=7, device=9_223_372_036_854_775_807,
      stream=-9_223_372_036_854_775_807, correlation=1e30),
    X("unicode \u00e9\u2603", 1_600_000_000_000_020, 1, cat="Runtime", **{"Module Hierarchy": {"a": [1]}}),
    X("py", 1_600_000_000_000_021, 5, cat="python_function"),
    X("x", "1", 1), X("y", 1, None), X("z", -1.5, 1), X(["unhashable"], 2, 1), X("t", True, 1),
    {"ph": "X", "cat": "cpu_op", "name": "missing ts", "pid": 1, "tid": 1, "dur": 1},
    {"ph": 7, "name": "numeric ph"}, {"ph": ["x"], "name": "unhashable ph"}, {"name": "no ph"},
]


def tricky_documents(tmp_path: Path) -> dict[str, Path]:
    events = TRICKY_EVENTS * 2
    top = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA A100 }, {"}, {"id": 1, "name": "x"}],
           "distributedInfo": {"backend": "nccl", "rank": 2, "world_size": 4}}
    after = {"displayTimeUnit": "ns", "traceName": 'x ], "y', "baseTimeNanoseconds": 17, "schemaVersion": 9}

    def doc(**dumps):  # the keys of `top`, then traceEvents, then those of `after` (schemaVersion twice)
        return (json.dumps(top, **dumps)[:-1] + ', "traceEvents": ' + json.dumps(events, **dumps) + ", "
                + json.dumps(after, **dumps)[1:])

    docs = {
        "compact": doc(separators=(",", ":")),
        "default": doc(),
        "pretty": doc(indent=2, ensure_ascii=False),
        "crlf": json.dumps({**top, "traceEvents": events}, indent=1).replace("\n", "\r\n") + "\r\n",
        "tabs": "\t\n " + json.dumps({"traceEvents": events, **top}, indent="\t") + " \n\t",
        "bare": json.dumps(events),
        "bare pretty": json.dumps(events, indent=3),
        "empty array": '{"a": 1, "traceEvents": [ ], "schemaVersion": 3}',
        "empty bare": " [ ] ",
        "one event": '{"traceEvents":[{"ph":"X","cat":"cpu_op","name":"a","pid":1,"tid":1,"ts":1,"dur":1}]}',
        "only others": json.dumps({"traceEvents": [{"ph": "i", "name": "a"}] * 50, "displayTimeUnit": "ms"}),
        "nested traceEvents": json.dumps({"deviceProperties": {"traceEvents": [1]}, "traceEvents": events}),
        "repeated keys": '{"schemaVersion": 1, "schemaVersion": 5, "traceEvents": ' + json.dumps(events)
                         + ', "schemaVersion": 2, "displayTimeUnit": "ms", "displayTimeUnit": "us"}',
        "ns epoch ints": json.dumps({"traceEvents": [X("a", 1_712_195_495_505_543_123, 10_000),
                                                     X("b", 1_712_195_495_505_544_623, 2_250), X("c", 5.5, 1)]}),
        "escaped key": '{"trace\\u0045vents": [{"ph":"X","cat":"cpu_op","name":"a","pid":1,"tid":1,"ts":1,"dur":1}]}',
        "second events key": '{"traceEvents": [{"ph": "i"}], "traceEvents": [{"ph":"X","cat":"cpu_op","name":"a",'
                             '"pid":1,"tid":1,"ts":1,"dur":1}]}',
        "events key not first array": '{"other": [[1], {"traceEvents": [2]}], "traceEvents": ' + json.dumps(events) + "}",
        "long digits in a string": json.dumps({"traceEvents": [X("k<18446744073709551615>", 1, 1)]}),
        "lone surrogate": '{"traceEvents": [{"ph":"X","cat":"cpu_op","name":"a\\ud800","pid":1,"tid":1,"ts":1,"dur":1}]}',
    }
    paths = {}
    for i, (name, text) in enumerate(docs.items()):
        p = tmp_path / f"doc{i}.json"
        p.write_bytes(text.encode())
        paths[name] = p
    g = tmp_path / "pretty.json.gz"
    g.write_bytes(gzip.compress(docs["pretty"].encode()))
    paths["pretty gz"] = g
    return paths


# documents that the fast path gives up on by design (the ijson path reads them)
FAST_DECLINES = {"escaped key", "second events key", "nested traceEvents", "events key not first array",
                 "long digits in a string", "lone surrogate"}


def test_fast_path_on_tricky_documents(tmp_path, chunk):
    for name, path in tricky_documents(tmp_path).items():
        for keep_python in (False, True) if name in ("compact", "pretty gz", "bare") else (False,):
            try:
                check_paths_agree(path, fast_must_read=name not in FAST_DECLINES, keep_python=keep_python)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None
    # the header comes from before the events, what is missing from after them
    md = read_trace(tricky_documents(tmp_path)["compact"], parser="fast").metadata
    assert (md["schema_version"], md["display_time_unit"], md["rank"], md["devices"]) == (1, "ns", 2, ["NVIDIA A100 }, {", "x"])


BAD_DOCUMENTS = {
    "missing comma": '{"traceEvents": [{"ph": "i"} {"ph": "i"}]}',
    "missing comma, arrays": '[[1] [2]]',
    "trailing comma": '{"traceEvents": [{"ph": "i"}, ]}',
    "trailing comma, bare": '[{"ph": "i"},]',
    "double comma": '{"traceEvents": [{"ph": "i"},, {"ph": "i"}]}',
    "leading comma": '{"traceEvents": [, {"ph": "i"}]}',
    "mismatched": '{"traceEvents": [{"ph": "i"]]}',
    "mismatched end": '{"traceEvents": [{"ph": "i"}}}',
    "int64 + 1": '{"traceEvents": [{"ph": "i", "args": {"id": 9223372036854775808}}]}',
    "int64 min": '{"traceEvents": [{"ph": "i", "args": {"id": -9223372036854775808}}]}',
    "2**64": '{"traceEvents": [{"ph": "i", "id": 18446744073709551616}]}',
    "2**70 in the header": '{"schemaVersion": 1180591620717411303424, "traceEvents": [{"ph": "i"}]}',
    "2**70 after": '{"traceEvents": [{"ph": "i"}], "schemaVersion": 1180591620717411303424}',
    "float overflow": '{"traceEvents": [{"ph": "X", "ts": 1e400}]}',
    "NaN": '{"traceEvents": [{"ph": "X", "ts": NaN}]}',
    "Infinity": '[{"ph": "X", "ts": -Infinity}]',
    "leading zero": '{"traceEvents": [{"ph": "X", "ts": 01}]}',
    "garbage after": '{"traceEvents": [{"ph": "i"}]} x',
    "garbage after bare": '[{"ph": "i"}] ]',
    "second document": '{"traceEvents": [{"ph": "i"}]}{"traceEvents": []}',
    "truncated in events": '{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 1}, {"ph"',
    "truncated after events": '{"traceEvents": [{"ph": "i"}], "schemaVersion": ',
    "unterminated string": '{"traceEvents": [{"ph": "i}]}',
    "bad escape": '{"traceEvents": [{"ph": "\\x"}]}',
    "control character": '{"traceEvents": [{"ph": "a\x01"}]}',
    "invalid utf-8": b'{"traceEvents": [{"ph": "X", "name": "\xff\xfe"}]}',
    "bom": b'\xef\xbb\xbf{"traceEvents": []}',
    "events not an array": '{"traceEvents": {"ph": "i"}}',
    "events a number": '{"traceEvents": 5, "other": [1]}',
    "no events": '{"other": [1, 2]}',
    "top level number": "42",
    "whitespace only": " \n\t ",
    "single quotes": "{'traceEvents': []}",
    "comment": '{"traceEvents": [/* x */]}',
}


def test_bad_documents_get_the_ijson_paths_answer(tmp_path, chunk):
    for i, (name, text) in enumerate(BAD_DOCUMENTS.items()):
        p = tmp_path / f"bad{i}.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        assert outcome(p, "ijson")[0] == "error", name  # every one of them is an error...
        try:
            check_paths_agree(p, fast_must_read=False)  # ... worded by the ijson path, whatever the fast path did
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # nest() on absurd random times (both paths alike)
def test_random_documents_agree(tmp_path, monkeypatch):
    """Random events (odd types in every field, strings full of brackets, quotes and backslashes), written
    compact or pretty, cut into random chunk sizes, sometimes with a byte broken: auto == ijson, and the fast
    path alone gives the same or gives up."""
    rng = random.Random(1234)
    atoms = ["}, {", '"', "\\", '\\"', "]", "[", "\u00e9", "\U0001F600", ",", "", "aten::mm", "ProfilerStep#2"]

    def text():
        return "".join(rng.choice(atoms) for _ in range(rng.randint(0, 3)))

    def value(depth=0):
        r = rng.random()
        if depth > 1 or r < 0.5:
            return rng.choice([rng.randint(-5, 10**6), rng.random() * 100, None, True, False, text(), 2**53 + 1,
                               1_712_195_495_505_543_123])
        if r < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {text(): value(depth + 1) for _ in range(rng.randint(0, 2))}

    def event():
        if rng.random() < 0.03:
            return value()
        ev = {"ph": rng.choices(["X", "f", "s", "M", None, 1], [20, 2, 2, 1, 1, 0.3])[0]}
        for key, choices in (("cat", ["cpu_op", "kernel", "cuda_runtime", "gpu_memcpy", "user_annotation",
                                      "python_function", "Trace", None, 3, "Operator"]),
                             ("name", ["aten::mm", "ProfilerStep#1", 7, 7.0, None]),
                             ("pid", [1, "1", 1.0, "Spans"]), ("tid", [1, 7, "7", "stream 7", True])):
            if rng.random() < 0.96:
                ev[key] = rng.choice(choices) if rng.random() < 0.9 else value()
        for key in ("ts", "dur"):
            if rng.random() < 0.97:
                ev[key] = rng.randint(0, 10**4) + rng.choice([0, 0.5, 0.125]) + (1_600_000_000_000_000 if key == "ts" else 0) \
                    if rng.random() < 0.93 else value()
        if rng.random() < 0.85:
            args = {}
            for key in ("device", "stream", "correlation", "External id", "external id", "flops", "Input Dims",
                        "Input type", "Module Hierarchy", "Call stack"):
                if rng.random() < 0.3:
                    args[key] = rng.randint(0, 9) if rng.random() < 0.6 else value()
            ev["args"] = args if rng.random() < 0.95 else rng.choice([[1], "s", 0, None])
        return ev

    for i in range(40):
        events = [event() for _ in range(rng.randint(0, 80))]
        doc = events if rng.random() < 0.2 else {"schemaVersion": rng.choice([1, value()]), "traceEvents": events,
                                                 "displayTimeUnit": rng.choice(["ms", value()])}
        raw = bytearray(json.dumps(doc, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5).encode())
        broken = rng.random() < 0.3
        if broken:
            at = rng.randrange(len(raw))
            raw[at:at + rng.randint(0, 1)] = rng.choice([b",", b"]", b"}", b'"', b"\\", b"", b"99999999999999999999"])
        p = tmp_path / f"r{i}.json"
        p.write_bytes(bytes(raw))
        monkeypatch.setattr(trace_fast_reader, "_CHUNK", rng.choice([7, 50, 999, 1 << 16]))
        check_paths_agree(p, fast_must_read=False, keep_python=rng.random() < 0.2)
        if not broken:
            assert outcome(p, "fast")[0] != "declined", i


def reference_structure(text: bytes) -> list[tuple[int, int, int]]:
    """(position, byte, depth after) of [ { ] } , outside strings: a byte at a time."""
    out, in_str, escaped, depth = [], False, False, 0
    for i, c in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in b"[{]},":
            depth += {0x5B: 1, 0x7B: 1, 0x5D: -1, 0x7D: -1}.get(c, 0)
            out.append((i, c, depth))
    return out


def test_scanner_matches_a_byte_at_a_time_reference():
    rng = random.Random(5)
    pieces = [b"[", b"{", b"]", b"}", b",", b" ", b"12", b":"]
    in_string = [b"\\\\", b'\\"', b"\\\\\\\"", b"x", b"[", b"}", b",", b"\\n", b"\\u00e9", b" "]
    for _ in range(300):
        text = bytearray()
        for _ in range(rng.randint(0, 60)):
            if rng.random() < 0.3:
                text += b'"' + b"".join(rng.choice(in_string) for _ in range(rng.randint(0, 6))) + b'"'
            else:
                text += rng.choice(pieces)
        text = bytes(text)
        # the same text scanned whole and in random pieces (the state carried across)
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))
        got, state, start = [], (False, 0, 0), 0
        for end in cuts + [len(text)]:
            if end <= start:
                continue
            (at, cls, depths), state = json_scan.scan(np.frombuffer(text[start:end], dtype=np.uint8), *state)
            got += [(start + int(a), text[start + int(a)], int(d)) for a, d in zip(at, depths, strict=True)]
            start = end
        assert got == reference_structure(text), text


def test_fast_path_with_the_standard_json_module(tmp_path, monkeypatch):
    """Without orjson, the standard library's json stands in: the same result."""
    monkeypatch.setattr(trace_fast_reader, "_loads", trace_fast_reader._json_loads)
    monkeypatch.setattr(trace_fast_reader, "_CHUNK", 999)
    for name, path in tricky_documents(tmp_path).items():
        check_paths_agree(path, fast_must_read=name not in FAST_DECLINES)
    for i, text in enumerate(BAD_DOCUMENTS.values()):
        p = tmp_path / f"bad{i}.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        check_paths_agree(p, fast_must_read=False)
    if TRACES.is_dir():
        rel = "hta/rank_unavailable/rank_not_found.json.gz"
        assert_same_trace(read_trace(shared(rel), parser="fast"), real(rel))


def test_auto_uses_the_fast_path_and_restores_gc(tmp_path, monkeypatch):
    p = write_trace(tmp_path / "t.json", [X("a", 0, 10), X("b", 1, 2)])

    def no_ijson(*args, **kwargs):
        raise AssertionError("the ijson path was used")

    monkeypatch.setattr(traces, "read_ijson", no_ijson)
    assert gc.isenabled()
    assert read_trace(p).events["name"].tolist() == ["a", "b"]
    assert gc.isenabled()
    gc.disable()
    try:
        read_trace(p)
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    with pytest.raises(AssertionError, match="ijson path was used"):
        read_trace(p, parser="ijson")
    with pytest.raises(ValueError, match="parser"):
        read_trace(p, parser="simdjson")


# --- picking steps and ranks ---------------------------------------------------------------------------------------
def test_select_steps_keeps_the_rows_of_the_picked_steps():
    from profilers.trace_table import describe_steps

    tr = real("hta/trace_diff/control/control.json.gz")
    cut = tr.select_steps([1012, 1010, 99])
    assert cut.steps["step"].tolist() == [1010, 1012] and cut.metadata["selected_steps"] == [1010, 1012]
    assert len(cut.events) == len(tr.events)  # rows kept, so every parent index still holds
    assert (cut.events["parent"].to_numpy() == tr.events["parent"].to_numpy()).all()
    before = tr.events["step"].to_numpy()
    after = cut.events["step"].to_numpy()
    assert set(np.unique(after)) == {-1, 1010, 1012}
    assert ((after >= 0) == np.isin(before, [1010, 1012])).all()
    assert tr.steps["step"].tolist() == list(range(1009, 1015))  # the trace itself is untouched
    with pytest.raises(TraceError, match=r"--iterations: has no step 1-3,7 \(its steps: 1009-1014\)"):
        tr.select_steps([1, 2, 3, 7], key="--iterations")
    with pytest.raises(TraceError, match="has no ProfilerStep#N markers"):
        real("hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz").select_steps([1])
    assert describe_steps([1013, 1009, 1010, 1011]) == "1009-1011,1013" and describe_steps([5]) == "5"


@pytest.mark.parametrize("rel", sorted(README_FILES))
def test_header_rank_is_the_parsed_rank(rel):
    """The rank read from the header alone (for --rank over a folder of per-rank traces) is the parse's, where the
    header has it before the events."""
    from profilers.trace_files import header_rank

    rank = header_rank(shared(rel))
    assert rank is None or rank == real(rel).metadata["rank"]
    expected = {"hta/trace_diff/control/control.json.gz": 3, "hta/trace_diff/test/test.json.gz": 1,
                "hta/trace_compare/base/base.json.gz": 1, "hta/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz": 34,
                "hta/rank_unavailable/rank_not_found.json.gz": None}
    if rel in expected:
        assert rank == expected[rel]


def test_rank_in_name():
    from profilers.trace_files import rank_in_name

    assert rank_in_name("rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz") == 34
    assert rank_in_name("/x/trace_rank_3.json") == 3 and rank_in_name("Rank7.json.gz") == 7
    assert rank_in_name("worker0.1623143089861.pt.trace.json.gz") is None
    assert rank_in_name("frank-3.json") is None and rank_in_name("rank-.json") is None
