"""The typed Report and the run-folder reader: an old run folder reads the same, report.json holds to its schema,
results are immutable, and a toy cause, evidence source and output format are each one function plus one
registry line."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jsonschema
import pytest
from conftest import ROOT, run_cli

from diagnose import sources
from diagnose.analysis import analyze
from diagnose.core.evidence import Evidence
from diagnose.core.runfolder import RunFolder

SAVED = ROOT / "fixtures" / "runs" / "textclf-v1-vs-v2"  # saved by main before the Report and RunFolder existed
SCHEMA = json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text())


@pytest.fixture
def saved_run(tmp_path):
    """A copy of the saved run folder (analyze rewrites its reports)."""
    return shutil.copytree(SAVED, tmp_path / "run")


def test_an_old_run_folder_gives_the_same_verdict_figures_and_causes(saved_run):
    before = json.loads((SAVED / "report.json").read_text())
    result = run_cli("analyze", str(saved_run), "--format", "json")
    assert result.returncode == 0, result.stderr
    after = json.loads(result.stdout)
    assert RunFolder(saved_run).format_version == 1
    assert after["verdict"] == before["verdict"] == "regression"
    # the same figures; the tail's own verdict (report.json 2.2) and production's latency (2.3: none recorded) are
    # new beside them
    # (the p90's and p99's CIs now resample the harness's blocks, docs/statistics.md: only those two differ)
    tail_cis = ("p90_pct_ci", "p99_pct_ci")
    kept = {k: v for k, v in after["latency"].items() if k not in ("tail", "production", "delta")}
    assert kept == {k: v for k, v in before["latency"].items() if k != "delta"}
    assert {k: v for k, v in after["latency"]["delta"].items() if k not in tail_cis} == \
        {k: v for k, v in before["latency"]["delta"].items() if k not in tail_cis}
    for key in tail_cis:
        lo, hi = after["latency"]["delta"][key]
        assert lo <= after["latency"]["delta"][key.replace("_ci", "")] <= hi
    assert after["latency"]["production"] is None and after["verdict_source"] == "lab"
    assert after["latency"]["tail"]["verdict"] in ("regression", "unsettled") and after["regression_kind"] == "median"
    assert after["attribution"] == before["attribution"]
    # the same causes, the model side's with the same scores; those of the environment weigh at most 0.6, as no
    # production latency shows whether they slowed requests (schema 2.3: hypotheses' `missing` says so)
    environment = {"gpu.clock_throttling", "gpu.contention", "runtime.memory_pressure", "runtime.cpu_throttling"}
    assert [h["cause"] for h in after["hypotheses"]] == [h["cause"] for h in before["hypotheses"]]
    for h_after, h_before in zip(after["hypotheses"], before["hypotheses"], strict=True):
        if h_after["cause"] in environment:
            assert 0 < h_after["score"] <= 0.6 * 0.9 + 1e-9
        else:
            assert h_after["score"] == h_before["score"]
    assert all(h["missing"] for h in after["hypotheses"] if h["cause"] in environment)
    # the same hypotheses; their next steps now end with commands to run (diagnose.next_steps)
    for h_after, h_before in zip(after["hypotheses"], before["hypotheses"], strict=True):
        assert {**h_after, "next_steps": None, "score": None} == {**h_before, "next_steps": None, "score": None,
                                                                   "missing": h_after["missing"]}
        assert h_after["next_steps"][:len(h_before["next_steps"])] == h_before["next_steps"]
    assert any(step.startswith("$ diagnose compare") for step in after["hypotheses"][0]["next_steps"])
    # the same fix; each variant row now also says how it was timed (report.json 2.2)
    assert [{k: v for k, v in r.items() if k != "runs_as"} for r in after["fix"]["variants"]] == before["fix"]["variants"]
    assert {**after["fix"], "variants": None} == {**before["fix"], "variants": None}
    assert [r["runs_as"] for r in after["fix"]["variants"]][:1] and all(r["runs_as"] for r in after["fix"]["variants"])
    # the same drift; only the latency tie's name changed, where payload_bytes and text.chars tie (the same bytes
    # here), to the column's own feature (diagnose.shift_latency._pick_feature)
    tie_before, tie_after = before["drift"]["latency_tie"], after["drift"]["latency_tie"]
    assert {**after["drift"], "latency_tie": None} == {**before["drift"], "latency_tie": None,
                                                         "distributions": []}  # 2.4: none kept in this old folder
    assert (tie_before["feature"], tie_after["feature"]) == ("payload_bytes", "text.chars")
    assert tie_after["correlations"] == tie_before["correlations"]
    assert {k: v for k, v in tie_after.items() if k not in ("feature", "text")} == \
           {k: v for k, v in tie_before.items() if k not in ("feature", "text")}
    assert after["profile"]["totals"] == before["profile"]["signals"]  # renamed in format 2 / schema 2.0
    skipped = {"status": "unavailable", "reason": "stage skipped"}  # sources added since: host, loadtest
    assert after["evidence_sources"] == before["collectors"] | {"host": skipped, "loadtest": skipped}
    assert after["rule_errors"] == [] and after["schema_version"] == "2.4" and after["incomplete"] is None
    jsonschema.validate(after, SCHEMA)


def test_report_to_dict_is_report_json_and_holds_to_the_schema(saved_run):
    report = analyze(saved_run)
    jsonschema.validate(report.to_dict(), SCHEMA)
    assert json.loads((saved_run / "report.json").read_text())["schema_version"] == "1.0"  # not rewritten by analyze()
    assert report.latency.old.samples.size == report.latency.old.stats.n  # the raw samples stay reachable
    assert report.to_dict()["latency"]["old"]["n"] == report.latency.old.stats.n


def test_results_are_immutable(saved_run):
    report = analyze(saved_run)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.verdict = "no_regression"
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.hypotheses[0].score = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        Evidence.unavailable("gpu", "no GPU").status = "ok"
    assert analyze(saved_run).to_dict()["hypotheses"] == report.to_dict()["hypotheses"]


def test_each_file_is_read_once(saved_run):
    folder = RunFolder(saved_run)
    assert folder.samples() is folder.samples()
    assert folder.evidence("versions") is folder.evidence("versions")
    assert folder.evidence("no-such-source") == {"status": "unavailable", "reason": "stage skipped"}


def _toy_offline(folder, deployment):
    text = (folder / "toy.txt").read_text().strip()
    return Evidence("toy", "ok", data={"queue_depth": int(text)}, summary=[f"queue depth {text}"])


def _toy_rule(ctx):
    from diagnose.core.report import Hypothesis

    depth = ctx.signal("toy").get("queue_depth")
    if not depth:
        return None
    return Hypothesis("serving.toy_queue", 0.7, f"The toy queue held {depth} requests", ctx.signal_summary("toy"))


def _broken_rule(ctx):
    raise KeyError("a key the rule expected")


def test_a_toy_evidence_source_and_cause_rule_reach_the_report(saved_run, tmp_path, monkeypatch):
    from diagnose import hypotheses
    from diagnose.signals import collect_offline, copy_into

    monkeypatch.setattr(sources, "SOURCES", sources.SOURCES + (
        sources.EvidenceSource("toy", "signals", signal=True, files=("toy.txt",), offline=_toy_offline),))
    monkeypatch.setattr(hypotheses, "RULES", hypotheses.RULES + (
        hypotheses.Rule(("serving.toy_queue",), _toy_rule), hypotheses.Rule(("serving.broken",), _broken_rule)))
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "toy.txt").write_text("512\n")
    (recorded / "notes.txt").write_text("not a documented file\n")
    folder = RunFolder(saved_run)
    found = collect_offline(copy_into(folder.signals_dir, recorded), {})
    assert found["toy"].ok and found["gpu"].status == "unavailable"
    assert (folder.signals_dir / "toy.txt").is_file() and not (folder.signals_dir / "notes.txt").exists()
    folder.write_evidence("toy", found["toy"])

    report = analyze(saved_run).to_dict()
    assert report["evidence_sources"]["toy"] == {"status": "ok", "source": "toy"}
    toy = next(h for h in report["hypotheses"] if h["cause"] == "serving.toy_queue")
    assert toy["score"] == 0.7 and toy["evidence"] == ["toy: queue depth 512"]
    assert report["hypotheses"][0]["cause"] == "preprocessing.change"  # the others still rank as before
    assert report["rule_errors"] == [{"rule": "_broken_rule", "causes": ["serving.broken"],
                                      "error": "KeyError: 'a key the rule expected'"}]
    assert any("cause rule _broken_rule failed" in w for w in report["warnings"])
    jsonschema.validate(report, SCHEMA)


def test_a_toy_output_format_drives_the_cli_and_the_run_folder(saved_run, monkeypatch, capsys):
    import reports
    from diagnose.cli import main

    toy = reports.Format("toy", lambda report: f"{report.model}: {report.verdict}\n", "report.toy", "a toy format")
    monkeypatch.setattr(reports, "FORMATS", reports.FORMATS + (toy,))
    monkeypatch.delenv("DIAGNOSE_RUN_REPORTS")  # every saved format, as without the tests' setting
    assert main(["analyze", str(saved_run), "--format", "toy"]) == 0
    assert capsys.readouterr().out == "textclf: regression\n"
    assert (saved_run / "report.toy").read_text() == "textclf: regression\n"
    assert (saved_run / "report.md").is_file()
