"""The op-level trace diff: hand-checked on a tiny real pair, sensible on real pairs, and the CLI over every file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED, run_cli

from profilers.tracediff import diff_traces, estimate_flops, torchscript_module_path
from profilers.traces import read_trace

TRACES = SHARED / "data" / "traces"
needs_shared = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/data/traces not present")


def row(table: list[dict], key: str) -> dict:
    return next(r for r in table if r["key"] == key)


@needs_shared
def test_tiny_pair_checked_by_hand():
    """test.json.gz adds three CPU ops inside ProfilerStep#1010; 2 steps per side, so per step it is half."""
    diff = diff_traces(read_trace(TRACES / "hta/trace_compare/base/base.json.gz"),
                       read_trace(TRACES / "hta/trace_compare/test/test.json.gz"))
    assert diff["totals"]["steps"] == {"old": 2, "new": 2}
    assert diff["totals"]["delta_self_ms_per_step"] == pytest.approx((311 + 11 + 207) / 2 / 1000, abs=1e-6)
    ops = diff["tables"]["ops"]
    all2all = row(ops, "All2All_Pooled_Req")
    assert all2all["status"] == "added" and all2all["new_calls"] == 0.5 and all2all["new_self_us"] == pytest.approx(155.5)
    assert all2all["share"] == pytest.approx(311 / 529, abs=1e-3)
    assert row(ops, "AddmmBackward0")["delta_self_us"] == pytest.approx(103.5)
    assert ops[0]["key"] == "All2All_Pooled_Req"  # ranked by contribution
    assert set(diff["totals"]["ops_added"]) == {"All2All_Pooled_Req", "AddmmBackward0", "CatBackward0"}
    assert diff["totals"]["ops_removed"] == []
    # aten::zeros starts before the first step and aten::zero_ after the last: outside every step, not counted
    assert all(r["key"] not in ("aten::zeros", "aten::zero_") for r in ops)
    assert diff["findings"][0].startswith("All2All_Pooled_Req (new op): +0.16 ms/step, 59% of the change")


@needs_shared
def test_the_full_table_keeps_every_row_with_its_key_parts():
    """What evidence/op_diff.parquet holds: every row of each table (the JSON keeps the top rows), the same figures,
    and a module x op x shape table whose rows add up to the ops table's."""
    control = read_trace(TRACES / "hta/trace_diff/control/control.json.gz")
    test = read_trace(TRACES / "hta/trace_diff/test/test.json.gz")
    diff = diff_traces(control, test, top=3, full=True)
    full = diff["full"]
    ops = full[full["table"] == "ops"]
    assert len(ops) > 3 and len(diff["tables"]["ops"]) == 3
    assert ops["key"].head(3).tolist() == [r["key"] for r in diff["tables"]["ops"]]
    assert ops["delta_self_us"].iloc[0] == pytest.approx(diff["tables"]["ops"][0]["delta_self_us"], abs=1e-3)
    assert (ops["op"] == ops["key"]).all() and (ops["module"] == "").all()
    shapes = full[full["table"] == "shapes"]
    assert (shapes["op"] + " | " + shapes["shape"] == shapes["key"]).all()
    drill = full[full["table"] == "module_shapes"]
    assert (drill["module"] + " | " + drill["op"] + " | " + drill["shape"] == drill["key"]).all()
    by_op = drill.groupby("op")["delta_self_us"].sum()
    assert np.allclose(by_op.reindex(ops["op"]).to_numpy(float), ops["delta_self_us"].to_numpy(float), atol=1e-3)
    assert "full" not in diff_traces(control, test, top=3)


@needs_shared
def test_dataloader_workers_pair_points_at_data_loading():
    base = TRACES / "tb_plugin"
    diff = diff_traces(read_trace(next((base / "resnet50_num_workers_0").glob("*.gz"))),
                       read_trace(next((base / "resnet50_num_workers_4").glob("*.gz"))))
    names = [r["key"] for r in diff["tables"]["ops"][:10]]
    added_removed = diff["totals"]["ops_added"] + diff["totals"]["ops_removed"]
    assert any("DataLoader" in n for n in names + added_removed), (names, added_removed)
    assert diff["totals"]["steps"]["old"] >= 1 and "kernels" in diff["tables"]
    # the same model: the convolutions ran on both sides with the same call counts
    conv = [r for r in diff["tables"]["ops"] if r["key"] == "aten::cudnn_convolution"]
    assert not conv or conv[0]["old_calls"] == conv[0]["new_calls"]


@needs_shared
def test_large_real_pair_diffs_with_kernels_and_findings():
    diff = diff_traces(read_trace(TRACES / "hta/trace_diff/control/control.json.gz"),
                       read_trace(TRACES / "hta/trace_diff/test/test.json.gz"), top=100_000)
    assert diff["tables"]["ops"] and diff["tables"]["kernels"] and diff["findings"]
    assert sum(r["share"] for r in diff["tables"]["ops"]) == pytest.approx(1.0, abs=1e-3)  # every row: the whole change
    assert sum(r["share"] for r in diff["tables"]["tree"]) == pytest.approx(1.0, abs=1e-3)


def test_flops_from_shapes():
    assert estimate_flops("aten::addmm", "[[1536],[128,384],[384,1536],[],[]]") == 2 * 128 * 384 * 1536
    assert estimate_flops("aten::mm", "[[4,8],[8,2]]") == 2 * 4 * 8 * 2
    assert estimate_flops("aten::bmm", "[[12,48,64],[12,64,48]]") == 2 * 12 * 48 * 64 * 48
    assert estimate_flops("aten::relu", "[[4,8]]") == 0
    assert estimate_flops("aten::addmm", "not json") == 0


def test_torchscript_module_hierarchy_becomes_a_dotted_path():
    text = ("TOP(Classifier)::forward.encoder(BertModel)::forward.encoder(BertEncoder)::forward.0(BertLayer)"
            "::forward.attention(BertAttention)::forward.self(BertSelfAttention)::forward.query(Linear)::forward.")
    assert torchscript_module_path(text) == "encoder.encoder.0.attention.self.query"
    assert torchscript_module_path("") == ""


@needs_shared
def test_cli_diff_traces_on_every_shared_trace(tmp_path, capsys):
    """In-process (the subprocess's exit codes and stderr are test_cli_bad_trace_is_one_line_exit_2's)."""
    from diagnose.cli import main

    files = sorted(p for p in TRACES.rglob("*") if p.name.endswith((".json", ".json.gz")))
    assert len(files) >= 12
    for path in files:
        code = main(["diff-traces", str(path), str(path), "--top", "3"])
        out, err = capsys.readouterr()
        assert code == 0, (path, err)
        assert "CPU op self time per step" in out
    code = main(["diff-traces", str(TRACES / "hta/trace_compare/base"), str(TRACES / "hta/trace_compare/test"), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["totals"]["ops_added"]


@pytest.mark.parametrize("content, needle",
                         [(b"", "empty"), (b"{not json", "JSON"), (b'{"traceEvents": []}', "no profiler events")])
def test_cli_bad_trace_is_one_line_exit_2(tmp_path, content, needle):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = run_cli("diff-traces", str(bad), str(bad))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and needle.lower() in lines[0].lower(), lines


def test_cli_folder_with_several_traces_is_refused(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text('{"traceEvents": []}')
    result = run_cli("diff-traces", str(tmp_path), str(tmp_path))
    assert result.returncode == 2 and "holds 2 traces" in result.stderr


def test_cli_profile_writes_a_tensorboard_logdir_and_lists_top_ops(tiny_registry, tmp_path):
    out = tmp_path / "prof"
    result = run_cli("profile", "v2", "--registry", str(tiny_registry), "--steps", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    traces = list((out / "v2").glob("v2.*.pt.trace.json.gz"))
    assert len(traces) == 1
    assert "3 profiled steps" in result.stdout and "aten::addmm" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    trace = read_trace(traces[0])
    assert len(trace.steps) == 3 and (trace.events["cat"] == "cpu_op").any()
    shapes = set(trace.events.loc[trace.events["name"] == "aten::addmm", "input_dims"].astype(str))
    assert "[[512],[1,32],[32,512],[],[]]" in shapes


# --- regions: user annotations, collectives, the step -------------------------------------------------------------
HTA_PAIR = ("hta/trace_compare/base/base.json.gz", "hta/trace_compare/test/test.json.gz")
CONTROL = "hta/trace_diff/control/control.json.gz"


def statuses(diff: dict) -> dict[str, set[str]]:
    """HTA's ops_diff view of a diff: the CPU ops and the regions, by status."""
    found: dict[str, set[str]] = {s: set() for s in ("added", "deleted", "increased", "decreased", "unchanged")}
    for r in diff["tables"]["ops"] + diff["tables"]["regions"]:
        found[r["status"]].add(r["key"])
    return found


@needs_shared
def test_hta_pair_step_1010_reports_the_deleted_collective_as_hta_does():
    """HTA's test_ops_diff on this pair, rank 1, iteration 1010: three ops added, nccl:all_reduce deleted."""
    base, test = (read_trace(TRACES / p).select_steps([1010]) for p in HTA_PAIR)
    diff = diff_traces(base, test)
    found = statuses(diff)
    assert found["added"] == {"AddmmBackward0", "All2All_Pooled_Req", "CatBackward0"}
    assert found["deleted"] == {"nccl:all_reduce"}
    assert found["increased"] == found["decreased"] == set()
    assert found["unchanged"] == {"ProfilerStep", "aten::as_strided", "aten::empty"}  # HTA's, less the runtime calls
    nccl = row(diff["tables"]["regions"], "nccl:all_reduce")
    assert nccl["kind"] == "collective" and (nccl["old_calls"], nccl["new_calls"]) == (1.0, 0.0)
    assert (nccl["old_total_us"], nccl["delta_total_us"]) == (67.0, -67.0)
    assert diff["totals"]["regions_deleted"] == ["nccl:all_reduce"] and diff["totals"]["regions_added"] == []
    assert diff["totals"]["iterations"] == {"old": [1010], "new": [1010]} and diff["totals"]["steps"] == {"old": 1, "new": 1}
    assert any(f.startswith("region nccl:all_reduce (collective) deleted") for f in diff["findings"])
    # over both steps the collective ran once of twice: decreased, half a call per step
    both = row(diff_traces(*(read_trace(TRACES / p) for p in HTA_PAIR))["tables"]["regions"], "nccl:all_reduce")
    assert (both["status"], both["old_calls"], both["new_calls"]) == ("decreased", 1.0, 0.5)
    assert (both["old_total_us"], both["new_total_us"]) == (66.5, 33.0)


@needs_shared
def test_cli_hta_pair_shows_the_deleted_collective():
    base, test = (str((TRACES / p).parent) for p in HTA_PAIR)
    text = run_cli("diff-traces", base, test, "--iterations", "1010")
    assert text.returncode == 0, text.stderr
    assert "| nccl:all_reduce | collective | 1 | 0 | 0.067 | 0.000 | -0.067 | 0% | deleted |" in text.stdout
    assert "| ProfilerStep | step | 1 | 1 | 122.149 | 122.149 | +0.000 | 0% | unchanged |" in text.stdout
    as_json = run_cli("diff-traces", base, test, "--iterations", "1010", "--rank", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    regions = {r["key"]: r["status"] for r in json.loads(as_json.stdout)["tables"]["regions"]}
    assert regions == {"nccl:all_reduce": "deleted", "ProfilerStep": "unchanged"}


@needs_shared
def test_profiler_steps_are_one_region_and_iterations_pick_steps():
    control = read_trace(TRACES / CONTROL)
    durations = dict(zip(control.steps["step"], control.steps["end_us"] - control.steps["start_us"], strict=True))
    diff = diff_traces(control, control, top=100_000)
    steps = [r for r in diff["tables"]["regions"] if r["kind"] == "step"]
    assert [r["key"] for r in steps] == ["ProfilerStep"] and steps[0]["old_calls"] == 1.0
    assert steps[0]["old_total_us"] == pytest.approx(sum(durations.values()) / 6, abs=1e-3)
    assert not any(r["key"].startswith("ProfilerStep") for name in ("ops", "shapes", "tree") for r in diff["tables"][name])
    regions = {r["key"]: r for r in diff["tables"]["regions"]}
    assert regions["nccl:all_to_all"]["kind"] == "collective" and regions["nccl:all_to_all"]["old_calls"] == 7.0
    assert regions["## forward ##"]["kind"] == "annotation" and all(r["status"] == "unchanged" for r in regions.values())

    picked = diff_traces(control.select_steps([1009, 1010, 1011]), control.select_steps(range(1012, 1015)))
    assert picked["totals"]["steps"] == {"old": 3, "new": 3}
    assert picked["totals"]["iterations"] == {"old": [1009, 1010, 1011], "new": [1012, 1013, 1014]}
    step = row(picked["tables"]["regions"], "ProfilerStep")
    assert step["old_total_us"] == pytest.approx(sum(durations[s] for s in (1009, 1010, 1011)) / 3, abs=1e-3)
    assert step["new_total_us"] == pytest.approx(sum(durations[s] for s in (1012, 1013, 1014)) / 3, abs=1e-3)
    assert step["old_total_us"] != pytest.approx(steps[0]["old_total_us"], abs=1.0)
    assert picked["totals"]["old_step_ms"] == pytest.approx(step["old_total_us"] / 1000, abs=1e-4)


@needs_shared
def test_cli_iterations_pick_the_steps_diffed():
    control, test = str(TRACES / CONTROL), str(TRACES / "hta/trace_diff/test/test.json.gz")
    picks = (("1009-1011", [1009, 1010, 1011]), ("1009,1010", [1009, 1010]), ("1013-1014,1009", [1009, 1013, 1014]))
    for spec, expected in picks:
        result = run_cli("diff-traces", control, test, "--iterations", spec, "--json")
        assert result.returncode == 0, result.stderr
        totals = json.loads(result.stdout)["totals"]
        assert totals["iterations"] == {"old": expected, "new": expected}
        assert totals["steps"] == {"old": len(expected), "new": len(expected)}
    other = run_cli("diff-traces", control, test, "--iterations", "1009", "--new-iterations", "1014", "--json")
    assert other.returncode == 0 and json.loads(other.stdout)["totals"]["iterations"] == {"old": [1009], "new": [1014]}


@needs_shared
def test_tb_plugin_steps_recorded_as_operators_are_the_step_not_ops():
    """This older trace records ProfilerStep#5..10 as `Operator`s: one step region, not six ops at 1/6 call per step."""
    trace = read_trace(next((TRACES / "tb_plugin/resnet50_num_workers_0").glob("*.gz")))
    diff = diff_traces(trace, trace, top=100_000)
    assert not any(r["key"].startswith("ProfilerStep") for r in diff["tables"]["ops"] + diff["tables"]["tree"])
    assert [(r["key"], r["kind"], r["old_calls"]) for r in diff["tables"]["regions"]] == [("ProfilerStep", "step", 1.0)]
    ev = trace.events
    marker = ev["name"].astype(str).str.startswith("ProfilerStep#")
    ops_in_steps = int(((ev["cat"] == "cpu_op") & (ev["step"] >= 0) & ~marker).sum())
    assert diff["totals"]["old_calls_per_step"] == round(ops_in_steps / 6, 2)


def _profile_tiny_model(path, extra_work: int, only_in_new: bool) -> dict:
    """A real torch.profiler run (CPU) of a tiny model in record_function regions; returns the raw trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    x = torch.randn(16, 64)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=1, active=3),
                                         on_trace_ready=lambda p: p.export_chrome_trace(str(path))) as prof:
        for _ in range(4):
            with record_function("my_region"):
                for _ in range(extra_work):
                    model(x)
                with record_function("inner"):
                    model(x)
            if only_in_new:
                with record_function("only_in_new"):
                    torch.relu(x)
            prof.step()
    return json.loads(path.read_text())


@pytest.mark.filterwarnings("ignore:Warning. Profiler clears events:UserWarning")
def test_record_function_regions_from_a_real_profiler_run(tmp_path):
    raw = _profile_tiny_model(tmp_path / "old.json", 1, False)
    _profile_tiny_model(tmp_path / "new.json", 40, True)
    diff = diff_traces(read_trace(tmp_path / "old.json"), read_trace(tmp_path / "new.json"))
    regions = {r["key"]: r for r in diff["tables"]["regions"]}
    assert set(regions) == {"ProfilerStep", "my_region", "inner", "only_in_new"}
    mine = regions["my_region"]
    assert mine["kind"] == "annotation" and mine["old_calls"] == mine["new_calls"] == 1.0
    raw_us = [e["dur"] for e in raw["traceEvents"] if e.get("name") == "my_region" and e.get("ph") == "X"]
    assert len(raw_us) == 3 and mine["old_total_us"] == pytest.approx(sum(raw_us) / 3, abs=2e-3)  # inclusive time
    assert 0 < mine["old_self_us"] < mine["old_total_us"]  # the ops and `inner` inside it are not its self time
    assert regions["inner"]["old_total_us"] < mine["old_total_us"]
    assert mine["status"] == "increased" and mine["delta_total_us"] > 0
    assert regions["only_in_new"]["status"] == "added" and diff["totals"]["regions_added"] == ["only_in_new"]
    assert regions["ProfilerStep"]["old_calls"] == 1.0 and diff["totals"]["steps"] == {"old": 3, "new": 3}


# --- --rank and --iterations at the command line -------------------------------------------------------------------
@needs_shared
def test_cli_rank_picks_the_trace_of_that_rank(tmp_path):
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    (ranks / "control.json.gz").symlink_to(TRACES / CONTROL)  # distributedInfo.rank 3
    (ranks / "test.json.gz").symlink_to(TRACES / "hta/trace_diff/test/test.json.gz")  # rank 1
    (ranks / "rank-7.json.gz").symlink_to(TRACES / "hta/rank_unavailable/rank_not_found.json.gz")  # no rank: by name
    result = run_cli("diff-traces", str(ranks), str(ranks), "--rank", "3", "--new-rank", "1", "--json")
    assert result.returncode == 0, result.stderr
    diff = json.loads(result.stdout)
    assert (diff["old"]["path"], diff["old"]["rank"]) == (str(ranks / "control.json.gz"), 3)
    assert (diff["new"]["path"], diff["new"]["rank"]) == (str(ranks / "test.json.gz"), 1)
    by_name = run_cli("diff-traces", str(ranks), str(ranks), "--rank", "7", "--json")
    assert by_name.returncode == 0 and json.loads(by_name.stdout)["old"]["path"] == str(ranks / "rank-7.json.gz")

    no_rank = str(TRACES / "hta/rank_unavailable/rank_not_found.json.gz")
    for args, needle in (((str(ranks), str(ranks), "--rank", "5"), "--rank: no trace of rank 5 among its 3 (ranks 1, 3, 7)"),
                         ((str(ranks), str(ranks)), "holds 3 traces"),
                         ((str(TRACES / HTA_PAIR[0]), str(TRACES / HTA_PAIR[1]), "--rank", "2"), "holds rank 1, not rank 2"),
                         ((no_rank, no_rank, "--rank", "0"), "records no rank")):
        bad = run_cli("diff-traces", *args)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, bad.stderr)


@needs_shared
@pytest.mark.parametrize("trace, spec, needle", [
    (HTA_PAIR[0], "1011", "--iterations: has no step 1011 (its steps: 1009-1010)"),
    (HTA_PAIR[0], "10-a", "--iterations: expected step numbers such as 1009-1011 or 1009,1010, got '10-a'"),
    (HTA_PAIR[0], "1010-1009", "the range 1010-1009 ends before it starts"),
    (HTA_PAIR[0], "", "expected step numbers"),
    (HTA_PAIR[0], "1009,", "expected step numbers"),
    (HTA_PAIR[0], "1-99999999999", "more than 1,000,000 steps"),
    ("hta/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz", "1", "has no ProfilerStep#N markers"),
])
def test_cli_bad_iterations_are_one_line_exit_2(trace, spec, needle):
    result = run_cli("diff-traces", str(TRACES / trace), str(TRACES / trace), "--iterations", spec)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr
