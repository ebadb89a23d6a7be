"""The Streamlit app (issue 15) through streamlit.testing.v1.AppTest: every page on every kind of run folder renders
without an exception, and the values it shows are report.json's. The browser test is test_app_browser.py, the New
investigation page's test_app_jobs.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import APP_PAGES, ROOT, make_tiny_registry, run_cli, walk_app_pages
from streamlit.testing.v1 import AppTest

from diagnose.core.runfolder import RunFolder
from profilers.tracediff import FULL_COLUMNS

LABELS = {"regression": "REGRESSION", "no_regression": "NO REGRESSION", "improvement": "IMPROVEMENT",
          "inconclusive": "INCONCLUSIVE", "not_measured": "NOT MEASURED"}


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory) -> Path:
    """A fresh compare of the tiny registry's mlp v1 -> v2 with the profiler on: its op diff is
    evidence/op_diff.parquet, its traces are in the folder."""
    root = tmp_path_factory.mktemp("app-profiled")
    registry = make_tiny_registry(root / "registry")
    out = root / "mlp-v1-vs-v2"
    result = run_cli("compare", "--registry", str(registry), "--old", "v1", "--new", "v2", "--budget", "3",
                     "--no-verify", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def runs_dir(report_runs, profiled_run, tmp_path_factory) -> Path:
    """A runs folder holding every kind of run: the saved regression (format 1, profile.json only), no regression
    (sources unavailable), production signals alone, and the profiled compare."""
    from diagnose.compare import write_reports

    root = tmp_path_factory.mktemp("app-runs")
    for name, path in report_runs.items():
        shutil.copytree(path, root / name)
    shutil.copytree(profiled_run, root / "profiled")
    write_reports(RunFolder(root / "regression"))  # the saved run's report.json as this version ranks it
    return root


def app(runs: Path, monkeypatch, page: str, run: str | None = None) -> AppTest:
    monkeypatch.setenv("DIAGNOSE_APP_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
    at.query_params["page"] = page
    if run:
        at.query_params["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def report_json(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "report.json").read_text())


def texts(at: AppTest) -> str:
    """Everything the page wrote as text, Markdown, caption, metric or expander label."""
    parts = [e.value for kind in ("markdown", "text", "caption", "header", "subheader", "code") for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric] + [e.label for e in at.expander]
    return "\n".join(str(p) for p in parts).replace("\\", "")  # as shown: Markdown's escapes dropped


@pytest.mark.parametrize("run", ["regression", "no_regression", "production", "profiled"])
def test_every_page_renders_every_kind_of_run(runs_dir, monkeypatch, run):
    """Page after page through the sidebar, as a user clicks: each renders its run without an exception or error."""
    report = report_json(runs_dir, run)
    shown = walk_app_pages(runs_dir, run, monkeypatch)
    for page in APP_PAGES[1:-1]:
        assert f"{report['model']} {report['old']} -> {report['new']}" in shown[page], page


@pytest.mark.parametrize("run", ["regression", "no_regression", "production", "profiled"])
def test_the_overview_shows_report_json_verdict_deltas_and_causes(runs_dir, monkeypatch, run):
    """The verdict, each lab quantile of the new version with its change, production's change, the top causes."""
    report = report_json(runs_dir, run)
    at = app(runs_dir, monkeypatch, "overview", run)
    text = texts(at)
    assert LABELS[report["verdict"]] in at.markdown[0].value
    metrics = {m.label.split(" (")[0]: m for m in at.metric}
    latency = report["latency"] or {}
    if latency.get("new"):
        for q in ("p50", "p90", "p99"):
            assert metrics[f"lab {q}"].value == f"{latency['new'][f'{q}_ms']:.2f} ms"
            assert metrics[f"lab {q}"].delta == f"{latency['delta'][f'{q}_pct']:+.1f}%"
    else:
        assert metrics["lab"].value == "not measured"
    production = latency.get("production")
    if production:
        assert metrics[f"production {production['statistic']}"].delta == f"{production['change_pct']:+.1f}%"
    likely = [h for h in report["hypotheses"] if h["score"] >= 0.05]
    labels = [e.label for e in at.expander if e.label[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert labels == [f"{i}. {h['cause']} — {h['score']:.2f}" for i, h in enumerate(likely[:5], 1)]
    if likely:
        assert all(line[:40].replace("\\", "") in text.replace("\\", "") for line in likely[0]["evidence"][:3])


def test_the_runs_page_lists_every_run_with_report_json_verdict_and_top_cause(runs_dir, monkeypatch):
    at = app(runs_dir, monkeypatch, "runs")
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == {"regression", "no_regression", "production", "profiled"}
    for name in table.index:
        report = report_json(runs_dir, name)
        assert table.loc[name, "verdict"] == LABELS[report["verdict"]]
        assert (table.loc[name, "model"], table.loc[name, "old"], table.loc[name, "new"]) == (
            report["model"], report["old"], report["new"])
        top = [h["cause"] for h in report["hypotheses"] if h["score"] >= 0.05][:1]
        assert table.loc[name, "top cause"] == (top[0] if top else "")


def test_opening_a_run_from_the_runs_page_shows_its_overview(runs_dir, monkeypatch):
    at = app(runs_dir, monkeypatch, "runs")
    at.selectbox(key="runs-open").set_value("no_regression").run()
    assert not at.exception
    assert at.query_params["page"] in ("overview", ["overview"])
    assert at.query_params["run"] in ("no_regression", ["no_regression"])
    assert "mlp v1 -> v3" in texts(at) and at.header[0].value == "Overview"


def test_two_runs_compared_side_by_side(runs_dir, monkeypatch):
    at = app(runs_dir, monkeypatch, "runs")
    at.multiselect(key="runs-pair").set_value(["profiled", "no_regression"]).run()
    assert not at.exception
    pair = at.dataframe[1].value.set_index("run")
    for name in ("profiled", "no_regression"):
        report = report_json(runs_dir, name)
        assert pair.loc[name, "verdict"] == LABELS[report["verdict"]]
        assert pair.loc[name, "new p99 ms"] == str(round(report["latency"]["new"]["p99_ms"], 3))
    assert any("the fix" in m.value for m in at.markdown)


def test_the_latency_page_shows_report_json_figures_and_filters_the_samples(runs_dir, monkeypatch):
    report = report_json(runs_dir, "profiled")
    at = app(runs_dir, monkeypatch, "latency", "profiled")
    table = at.dataframe[0].value
    assert table["p99_ms"].tolist() == pytest.approx([report["latency"]["old"]["p99_ms"], report["latency"]["new"]["p99_ms"]])
    cells = at.dataframe[1].value
    assert sorted(cells["n"]) == sorted(c["n"] for c in report["cells"].values())
    shown = int(next(c.value for c in at.caption if "timed batches shown" in c.value).split()[0].replace(",", ""))
    assert shown == report["latency"]["old"]["n"] + report["latency"]["new"]["n"]
    at.multiselect(key="latency-cells").set_value(["new"]).run()
    shown = int(next(c.value for c in at.caption if "timed batches shown" in c.value).split()[0].replace(",", ""))
    assert shown == report["latency"]["new"]["n"]


def test_the_latency_page_says_when_nothing_was_replayed(runs_dir, monkeypatch):
    at = app(runs_dir, monkeypatch, "latency", "production")
    assert any("--no-benchmark" in i.value for i in at.info)


def test_the_ops_page_shows_every_row_sorted_filtered_and_drilled_down(runs_dir, monkeypatch):
    report = report_json(runs_dir, "profiled")
    full = RunFolder(runs_dir / "profiled").op_diff()
    at = app(runs_dir, monkeypatch, "ops", "profiled")
    table = at.dataframe[0].value
    assert table["key"].iloc[0] == report["profile"]["tables"]["ops"][0]["key"]  # the top operator, as report.json
    assert len(table) == min(50, (full["table"] == "ops").sum())
    at.selectbox(key="ops-table").set_value("shapes").run()
    shapes = at.dataframe[0].value
    assert shapes["key"].iloc[0] == report["profile"]["tables"]["shapes"][0]["key"]
    op = report["profile"]["tables"]["ops"][0]["key"]
    at.text_input(key="ops-filter-shapes").input(op).run()
    assert set(at.dataframe[0].value["key"].str.split(" | ", regex=False).str[0]) == {op}
    at.selectbox(key="ops-sort-shapes").set_value("key").run()
    keys = at.dataframe[0].value["key"].tolist()
    assert keys == sorted(keys)
    # the drill-down: the module with the largest change, its operators, then one operator's input shapes
    drill = full[full["table"] == "module_shapes"]
    module = drill.assign(size=drill["delta_self_us"].abs()).groupby("module")["size"].sum().idxmax()
    assert at.selectbox(key="ops-module").value == module
    ops_in_module = at.dataframe[1].value
    expected = drill[drill["module"] == module].groupby("op")["delta_self_us"].sum()
    assert dict(zip(ops_in_module["op"], ops_in_module["delta_self_us"], strict=True)) == pytest.approx(expected.to_dict())
    assert len(at.get("download_button")) == 2  # the two Chrome traces
    assert any("tensorboard --logdir" in c.value for c in at.code)


def test_the_ops_page_pages_a_diff_of_100000_rows(runs_dir, monkeypatch, tmp_path):
    """A run whose op diff has 100,000 rows: 50 go to the browser, the page picker reaches the last one."""
    runs = tmp_path / "runs"
    shutil.copytree(runs_dir / "profiled", runs / "big")
    rng = np.random.default_rng(0)
    n = 100_000
    delta = rng.normal(0, 50, n)
    frame = pd.DataFrame({"table": "ops", "key": [f"aten::op_{i}" for i in range(n)], "module": "",
                          "op": [f"aten::op_{i}" for i in range(n)], "shape": "",
                          "old_calls": 1.0, "new_calls": 1.0, "old_self_us": 100.0, "new_self_us": 100.0 + delta,
                          "old_total_us": 100.0, "new_total_us": 100.0 + delta, "old_flops": 0.0, "new_flops": 0.0,
                          "delta_self_us": delta, "delta_total_us": delta, "delta_calls": 0.0, "share": delta / delta.sum(),
                          "status": np.where(delta > 0, "increased", "decreased")})[list(FULL_COLUMNS)]
    RunFolder(runs / "big").write_op_diff(frame)
    at = app(runs, monkeypatch, "ops", "big")
    page = at.dataframe[0].value
    assert len(page) == 50 and page["key"].iloc[0] == frame["key"].iloc[np.abs(delta).argmax()]
    picker = at.number_input(key="ops-ops-page")
    assert picker.max == 2000
    picker.set_value(2000).run()
    assert at.dataframe[0].value["key"].iloc[-1] == frame["key"].iloc[np.abs(delta).argmin()]


def test_the_signals_page_draws_each_timeline_with_the_deploy(runs_dir, monkeypatch):
    report = report_json(runs_dir, "production")
    at = app(runs_dir, monkeypatch, "signals", "production")
    series = [s for s in report["timelines"]["series"] if s["t"] and any(v is not None for v in s["values"])]
    assert series and len(at.get("vega_lite_chart")) == len(series)
    assert any(c.value.startswith("deploy 2026-11-20 10:00:00 UTC") for c in at.caption)
    sources = at.dataframe[0].value.set_index("source")
    for name, source in report["evidence_sources"].items():
        assert sources.loc[name, "status"] == source["status"]


def test_the_drift_and_fix_pages_show_report_json(runs_dir, monkeypatch):
    report = report_json(runs_dir, "regression")
    at = app(runs_dir, monkeypatch, "drift", "regression")
    drift = report["drift"]
    assert any(f"{drift['features_tested']} tested" in s.value for s in at.subheader)
    at = app(runs_dir, monkeypatch, "fix", "regression")
    variants = at.dataframe[0].value
    assert variants["name"].tolist() == [v["name"] for v in report["fix"]["variants"]]
    assert variants["p99_ms"].tolist() == pytest.approx([v["p99_ms"] for v in report["fix"]["variants"]])
    assert report["fix"]["status"].upper() in at.markdown[0].value


def test_pages_without_the_evidence_say_why(runs_dir, monkeypatch):
    at = app(runs_dir, monkeypatch, "ops", "no_regression")
    assert any(i.value.startswith("No op-level diff in this run") for i in at.info)
    at = app(runs_dir, monkeypatch, "fix", "no_regression")
    assert any(i.value.startswith("No variants were verified") for i in at.info)


def test_an_empty_runs_folder_says_how_to_start(tmp_path, monkeypatch):
    for page in ("runs", "overview"):
        at = app(tmp_path, monkeypatch, page)
        assert any("diagnose compare --old v1 --new v2" in i.value for i in at.info)


def test_an_unreadable_run_is_one_error_line(runs_dir, monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(runs_dir / "no_regression", runs / "broken")
    (runs / "broken" / "samples.parquet").write_bytes(b"not parquet")
    at = app(runs, monkeypatch, "overview", "broken")
    assert len(at.error) == 1 and "broken/samples.parquet: cannot read samples" in at.error[0].value.replace("\\", "")


def test_hostile_names_are_shown_as_text(runs_dir, monkeypatch, tmp_path):
    """A model, a version, an op and a finding with HTML and Markdown in them reach the page escaped: the text is
    shown as written, never as markup (Streamlit's Markdown would render **bold** and links)."""
    hostile = '<img src=x onerror="alert(1)"> **bold** [link](javascript:alert(1))'
    runs = tmp_path / "runs"
    run = Path(shutil.copytree(runs_dir / "profiled", runs / "hostile"))
    info = json.loads((run / "run.json").read_text())
    info["model"] = hostile
    (run / "run.json").write_text(json.dumps(info))
    profile = json.loads((run / "evidence" / "profile.json").read_text())
    profile["findings"] = [f"{hostile} got slower"]
    (run / "evidence" / "profile.json").write_text(json.dumps(profile))
    full = RunFolder(run).op_diff()
    full.loc[0, "key"] = full.loc[0, "op"] = hostile
    RunFolder(run).write_op_diff(full)
    at = app(runs, monkeypatch, "ops", "hostile")
    markdown = [m.value for m in at.markdown]
    finding = next(m for m in markdown if "got slower" in m)
    assert "\\<img" in finding and "\\*\\*bold\\*\\*" in finding and "\\]\\(javascript" in finding  # escaped
    assert finding.replace("\\", "") == f"- {hostile} got slower"  # and no character dropped
    assert at.caption[0].value.startswith(f"{finding[2:].replace(' got slower', '')} v1 -> v2")  # the model, escaped
    assert hostile in set(at.dataframe[0].value["key"])  # a table cell is text
