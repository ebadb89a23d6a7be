"""The op-level trace diff: hand-checked on a tiny real pair, sensible on real pairs, and the CLI over every file."""

from __future__ import annotations

import json

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
def test_cli_diff_traces_on_every_shared_trace(tmp_path):
    files = sorted(p for p in TRACES.rglob("*") if p.name.endswith((".json", ".json.gz")))
    assert len(files) >= 12
    for path in files:
        result = run_cli("diff-traces", str(path), str(path), "--top", "3")
        assert result.returncode == 0, (path, result.stderr)
        assert "CPU op self time per step" in result.stdout
    pair = run_cli("diff-traces", str(TRACES / "hta/trace_compare/base"), str(TRACES / "hta/trace_compare/test"), "--json")
    assert pair.returncode == 0 and json.loads(pair.stdout)["totals"]["ops_added"]


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
