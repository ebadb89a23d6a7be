"""`diagnose ci` and `diagnose report` (issue 14): the gate's rule, its exit codes in a subprocess, JUnit XML that CI
systems read, the step summary, baselines and their environment guard, and the example workflows run as written."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import xmlschema
import yaml
from conftest import BUSY_LOOP, ROOT, make_tiny_registry, run_cli, save_mlp

import reports
from diagnose.analysis import analyze
from diagnose.core import stats
from diagnose.core.errors import UserError
from diagnose.gate import check, evaluate, parse_budget

JUNIT = xmlschema.XMLSchema(str(ROOT / "tests" / "schemas" / "junit.xsd"))
SCHEMA = json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text())
SNAPSHOTS = ROOT / "tests" / "snapshots"


def delta(p50=0.0, p50_ci=(-1.0, 1.0), p99=0.0, p99_ci=(-5.0, 5.0), p=0.5) -> stats.Delta:
    return stats.Delta(p50, p50_ci, p50, p50_ci, p99, p99_ci, p)


# --- the rule: significant and beyond the budget ---------------------------------------------------------------------
@pytest.mark.parametrize("d, n, status", [
    (delta(p50=12.0, p50_ci=(9.0, 15.0), p=1e-9), 500, "fail"),          # sure and beyond
    (delta(p50=3.0, p50_ci=(2.0, 4.0), p=1e-6), 500, "pass"),            # sure, slower, within the budget
    (delta(p50=9.0, p50_ci=(-2.0, 20.0), p=0.2), 500, "inconclusive"),   # beyond, but not sure at all
    (delta(p50=0.4, p50_ci=(-1.5, 2.3), p=0.6), 500, "pass"),            # noise
    (delta(p50=-20.0, p50_ci=(-25.0, -15.0), p=1e-9), 500, "pass"),      # faster
    (delta(p50=6.0, p50_ci=(0.5, 11.0), p=0.005), 500, "inconclusive"),  # "significant" p, but the CI reaches the floor
])
def test_the_median_fails_only_when_significant_and_beyond_the_budget(d, n, status):
    assert check("p50", 5.0, d, n).status == status


@pytest.mark.parametrize("d, n, status", [
    (delta(p99=30.0, p99_ci=(12.0, 60.0)), 400, "fail"),
    (delta(p99=30.0, p99_ci=(12.0, 60.0)), 100, "inconclusive"),  # too few samples for a p99, however large
    (delta(p99=8.0, p99_ci=(2.0, 15.0)), 400, "inconclusive"),    # below the tail's 5% floor at its low end
    (delta(p99=2.0, p99_ci=(-6.0, 9.0)), 400, "pass"),
    (delta(p99=2.0, p99_ci=(-6.0, 9.0)), 50, "pass"),             # unsettled but its estimate is within the budget
])
def test_the_tail_needs_samples_and_a_ci_above_its_floor(d, n, status):
    assert check("p99", 5.0, d, n).status == status


@pytest.mark.parametrize("metric, d, status", [
    ("p50", delta(p50=7.9, p50_ci=(5.4, 10.6), p=1.5e-6), "inconclusive"),  # a baseline A/A pair measured in CI
    ("p50", delta(p50=25.0, p50_ci=(18.0, 31.0), p=1e-9), "fail"),
    ("p99", delta(p99=12.0, p99_ci=(6.0, 18.0)), "inconclusive"),
    ("p99", delta(p99=40.0, p99_ci=(22.0, 60.0)), "fail"),
])
def test_against_a_baseline_run_only_a_change_beyond_the_drift_between_runs_fails(metric, d, status):
    between = stats.Thresholds.for_run(between_runs=True)
    assert check(metric, 5.0, d, 400, between).status == status
    assert check(metric, 5.0, d, 400).status == "fail"  # the same figures within one interleaved run



def test_an_inconclusive_check_says_what_would_settle_it():
    tail = delta(p99=12.6, p99_ci=(1.5, 22.0))  # a real build's +10% p99 at 25 s on a noisy 2-core machine
    advice = check("p99", 5.0, tail, 4000, measured_s=25.3).message
    factor = float(re.search(r"about ([0-9.]+)x this run's samples", advice).group(1))
    assert factor == pytest.approx(2.04 * ((12.6 - 1.5) / (12.6 - 5.0)) ** 2, abs=0.05)
    assert f"--budget {5 * math.ceil(25.3 * factor / 5)} (this run measured 25 s)" in advice
    assert "larger --budget" in check("p99", 5.0, tail, 4000).message  # no seconds known: no figure
    assert "too noisy to judge this p99 budget" in check("p99", 5.0, delta(p99=9.0, p99_ci=(-12.0, 30.0)), 4000).message
    assert "--budget 15 (this run measured 6 s)" in check("p99", 5.0, delta(p99=30.0, p99_ci=(12.0, 60.0)), 100,
                                                           measured_s=6.0).message  # 200 samples a side needed
    assert "a budget under the floor cannot fail" in check("p99", 3.0, delta(p99=4.0, p99_ci=(-2.0, 9.0)), 400).message


def test_following_the_advice_settles_most_inconclusive_checks():
    """A true +15% p99 timed 600 samples a side is often inconclusive against a 5% budget: rerun with as many more
    samples as the advice says, most fail as they should, where a rerun at the same size rarely does."""
    def sides(n: int, seed: int):
        rng = np.random.default_rng(seed)
        return rng.lognormal(0, 0.35, n), rng.lognormal(0, 0.35, n) * 1.15

    def status(n: int, seed: int):
        old, new = sides(n, seed)
        return check("p99", 5.0, stats.relative_change(old, new, n_boot=1000, seed=seed), n)

    inconclusive = advised = same = 0
    for seed in range(30):
        first = status(600, seed)
        if first.status != "inconclusive":
            continue
        inconclusive += 1
        found = re.search(r"about ([0-9.]+)x", first.message)
        advised += status(int(600 * (float(found.group(1)) if found else 20)), 1000 + seed).status == "fail"
        same += status(600, 2000 + seed).status == "fail"
    assert inconclusive >= 10
    assert advised >= 0.7 * inconclusive and same <= 0.3 * inconclusive, (inconclusive, advised, same)

def test_the_gate_fails_on_any_failing_check_and_strict_fails_inconclusive():
    d = delta(p50=9.0, p50_ci=(-2.0, 20.0), p=0.2, p99=1.0, p99_ci=(-4.0, 4.0))
    settings = {"max_regression": {"p50": 5.0, "p99": 5.0}}
    loose, strict = evaluate(settings, d, 400), evaluate({**settings, "strict": True}, d, 400)
    assert (loose.status, loose.exit_code) == ("inconclusive", 0)
    assert (strict.status, strict.exit_code) == ("fail", 1)
    assert evaluate(None, d, 400).source == "default" and evaluate(settings, None, 0) is None


@pytest.mark.parametrize("text, parsed", [("p99=5%", ("p99", 5.0)), ("P50=2.5", ("p50", 2.5)), ("p90 = 10 %", ("p90", 10.0))])
def test_budgets_parse(text, parsed):
    assert parse_budget(text) == parsed


@pytest.mark.parametrize("text", ["p75=5%", "p99", "p99=fast", "p99=-3%"])
def test_a_bad_budget_is_one_clear_error(text):
    with pytest.raises(UserError, match="--max-regression"):
        parse_budget(text)


# --- the command, in a subprocess ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    return make_tiny_registry(tmp_path_factory.mktemp("ci") / "registry")


def _workflow(name: str) -> tuple[dict, str, list[str], str]:
    """A workflow file's (env, install step, the steps after it, the JUnit path the CI system reads)."""
    doc = yaml.safe_load((ROOT / "docs" / "ci" / name).read_text())
    if name.startswith("github"):
        steps = [s["run"] for s in doc["jobs"]["latency-gate"]["steps"] if "run" in s]
        junit = next(s for s in doc["jobs"]["latency-gate"]["steps"] if "junit" in s.get("uses", ""))
        return doc["env"], steps[0], steps[1:], junit["with"]["report_paths"]
    job = doc["latency-gate"]
    return job["variables"], job["before_script"][0], job["script"] + job["after_script"], job["artifacts"]["reports"]["junit"]


def _run_steps(steps: list[str], env: dict, cwd: Path) -> list[subprocess.CompletedProcess]:
    full = {**os.environ, "DIAGNOSE_PROGRESS": "0", **env}
    return [subprocess.run(["bash", "-c", step], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
            for step in steps]


def _checkout(registry: Path, root: Path, env: dict) -> Path:
    """A repository checkout holding the registry the workflow names, its v2 made far slower than v1 (its p99
    settles in a few seconds, as a real regression's does)."""
    models = Path(shutil.copytree(registry, root / env["DIAGNOSE_REGISTRY"]))
    save_mlp(models / "mlp" / "v2" / "model.pt", (1024, 1024, 1024))
    return models


@pytest.fixture(scope="module")
def failing_ci(registry, tmp_path_factory):
    """The GitHub Actions workflow's steps as a build runs them on a pull request that adds a slower v2, with the
    step summary file GitHub provides (another step already wrote to it): (checkout, its registry, results, junit)."""
    root = tmp_path_factory.mktemp("github")
    env, install, steps, junit = _workflow("github-actions.yml")
    assert "pip install torch==2.13.0" in install  # the CPU wheel first, as the README's install line
    models = _checkout(registry, root, env)
    (root / "step-summary.md").write_text("earlier step\n")
    results = _run_steps(steps, {**env, "MODEL": "mlp", "OLD": "v1", "NEW": "v2",
                                 "GITHUB_STEP_SUMMARY": str(root / "step-summary.md")}, root)
    return root, models, results, root / junit


def test_a_real_regression_fails_the_build_naming_the_cause(failing_ci):
    root, _, (gate, *after), _ = failing_ci
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert gate.stdout.startswith("CI GATE FAIL: mlp v2 against v1")
    assert "FAIL         p50 +" in gate.stdout and "model.compute_increase" in gate.stdout
    assert gate.stderr == ""
    run = json.loads((root / "runs" / "latency-gate" / "run.json").read_text())
    assert run["gate"] == {"max_regression": {"p50": 5.0, "p99": 10.0}, "strict": False}
    # the report step still ran (if: always()) and wrote the incident report into the run folder
    assert all(r.returncode == 0 for r in after), [r.stderr for r in after]
    assert (root / "runs" / "latency-gate" / "report.html").is_file()


def test_junit_is_valid_with_one_case_per_gated_statistic_and_the_causes(failing_ci):
    root, _, _, junit = failing_ci
    xml = junit.read_text()
    JUNIT.validate(xml)
    tree = JUNIT.to_dict(xml)
    cases = tree["testsuite"][0]["testcase"]
    assert [c["@name"] for c in cases] == ["p50 regression <= 5%", "p99 regression <= 10%"]  # in quantile order
    p50 = cases[0]
    assert "beyond the +5.0% budget" in p50["failure"]["@message"]
    assert "model.compute_increase" in p50["failure"]["$"]
    # `report --format junit` on the folder gives the build's XML again: the gate lives in the run folder
    again = run_cli("report", "runs/latency-gate", "--format", "junit", "--out", "-", cwd=root)  # as the build named it
    assert again.returncode == 0 and again.stdout == xml


def test_the_step_summary_is_appended_in_markdown(failing_ci):
    root, _, _, _ = failing_ci
    text = (root / "step-summary.md").read_text()
    assert text.startswith("earlier step\n# diagnose ci: mlp v1 -> v2")
    assert "## CI gate: FAIL" in text and "| p50 | +5% |" in text and "model.compute_increase" in text


def test_the_gitlab_workflow_runs_the_same_steps_where_gitlab_looks(failing_ci):
    """GitLab's job runs the GitHub build's commands, the gate in `script` (it fails the job) and the report in
    `after_script` (it runs after a failure), with the same variables; so the build above tried them, and its
    junit.xml is where `artifacts:reports:junit` reads it. (A second build of the same commands would add a
    quarter of a minute to CI and test nothing more.)"""
    _, _, results, junit = failing_ci
    gh_env, _, gh_steps, gh_junit = _workflow("github-actions.yml")
    env, install, steps, path = _workflow("gitlab-ci.yml")
    assert "pip install torch==2.13.0" in install
    assert steps == gh_steps and path == gh_junit and env == gh_env
    doc = yaml.safe_load((ROOT / "docs" / "ci" / "gitlab-ci.yml").read_text())["latency-gate"]
    assert doc["script"] == gh_steps[:1] and doc["after_script"] == gh_steps[1:]
    assert doc["artifacts"]["when"] == "always" and "runs/latency-gate" in doc["artifacts"]["paths"]
    assert [r.returncode for r in results] == [1, 0] and junit.is_file()


@pytest.mark.slow  # with a busy core beside it (conftest): the noisy machine a CI runner is
def test_a_noisy_a_a_pair_passes(registry, tmp_path):
    """v1 against v3, the same weights, with a second busy loop at normal priority: noise, never a failure."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        result = run_cli("ci", "--registry", str(registry), "--old", "v1", "--new", "v3", "--budget", "3",
                         "--no-profile", "--max-regression", "p99=5%", "--max-regression", "p50=5%",
                         "--out", str(tmp_path / "run"))
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(("CI GATE PASS", "CI GATE INCONCLUSIVE"))


@pytest.mark.parametrize("argv, needle", [
    (["--old", "v1", "--new", "v9"], "v9"),
    (["--new", "v2"], "--baseline RUN_DIR"),
    (["--old", "v1", "--new", "v2", "--max-regression", "p75=5%"], "--max-regression"),
    (["--baseline", "nowhere", "--new", "v2", "--verify"], "--verify"),
])
def test_errors_exit_2_with_one_line(registry, tmp_path, capsys, monkeypatch, argv, needle):
    from diagnose.cli import main

    monkeypatch.setenv("DIAGNOSE_PROGRESS", "0")
    assert main(["ci", "--registry", str(registry), "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and needle in err, err


def test_a_baseline_run_stands_for_the_old_side(failing_ci, tmp_path):
    """The failing build's new side (v2) as the baseline of v2 itself: only v2 is timed, against the saved samples.
    Budgets far beyond the drift between two runs of one machine (the wider floors' own tests are the unit tests
    above): an A/A pair across runs passes."""
    root, models, _, _ = failing_ci
    baseline = root / "runs" / "latency-gate"
    out = tmp_path / "run"
    result = run_cli("ci", "--registry", str(models), "--baseline", str(baseline), "--new", "v2", "--budget", "3",
                     "--max-regression", "p50=50%", "--max-regression", "p99=100%", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["old"] == "v2" and report["baseline"]["dir"] == str(baseline)
    assert report["gate"]["status"] != "fail", [c["message"] for c in report["gate"]["checks"]]
    assert any("baseline run" in w and "not interleaved" in w for w in report["warnings"]), report["warnings"]
    assert report["latency"]["noise_floor_pct"] == 10.0 and report["latency"]["tail"]["noise_floor_pct"] == 15.0
    assert report["evidence_sources"]["profile"]["status"] == "unavailable"
    cells = json.loads((out / "evidence" / "benchmark.json").read_text())["cells"]
    assert cells == ["old_model/old_requests", "new_model/new_requests"]


def test_a_baseline_from_another_environment_is_refused_before_measuring(failing_ci, tmp_path, capsys, monkeypatch):
    root, models, _, _ = failing_ci
    baseline = Path(shutil.copytree(root / "runs" / "latency-gate", tmp_path / "baseline"))
    env_file = baseline / "evidence" / "environment.json"
    env = json.loads(env_file.read_text())
    env["new"]["libraries"]["torch"] = "1.13.1"
    env_file.write_text(json.dumps(env))
    from diagnose.cli import main

    monkeypatch.setenv("DIAGNOSE_PROGRESS", "0")
    code = main(["ci", "--registry", str(models), "--baseline", str(baseline), "--new", "v2", "--budget", "2",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "torch" in err and "--allow-env-mismatch" in err, err
    assert not (tmp_path / "run" / "samples.parquet").exists()  # refused before anything was measured


# --- `diagnose report` on every kind of run folder -------------------------------------------------------------------
@pytest.fixture(scope="module")
def analyzed(report_runs) -> dict:
    return {name: analyze(path) for name, path in report_runs.items()}


@pytest.mark.parametrize("name", ["regression", "no_regression", "production"])
def test_every_text_format_renders_every_kind_of_run(analyzed, name):
    report = analyzed[name]
    jsonschema.validate(json.loads(reports.get("json").render(report)), SCHEMA)
    JUNIT.validate(reports.get("junit").render(report))
    for fmt in ("summary", "markdown", "html"):
        assert report.model in reports.get(fmt).render(report)


def test_a_run_without_a_benchmark_has_no_gate_and_says_so_in_junit(analyzed):
    report = analyzed["production"]
    assert report.gate is None and report.verdict == "regression" and report.verdict_source == "production"
    assert "not measured" in reports.get("junit").render(report)
    assert report.timelines is not None and {s.name for s in report.timelines.series} >= {"latency_p99_ms"}


def test_report_md_of_the_saved_regression_matches_its_snapshot(analyzed, report_runs):
    """The saved run's report.md, its folder's path made neutral. UPDATE_SNAPSHOTS=1 rewrites the snapshot."""
    text = reports.get("md").render(analyzed["regression"]).replace(str(report_runs["regression"]), "RUN_DIR")
    snapshot = SNAPSHOTS / "report-regression.md"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text)
    assert text == snapshot.read_text()


def test_report_writes_each_format_into_the_run_folder(report_runs, tmp_path):
    run = Path(shutil.copytree(report_runs["no_regression"], tmp_path / "run"))
    (run / "report.md").unlink()
    for fmt in ("md", "junit"):
        result = run_cli("report", str(run), "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{reports.get(fmt).name}: {run}")
    assert {"report.md", "junit.xml"} <= {p.name for p in run.iterdir()}
    JUNIT.validate(str(run / "junit.xml"))


def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    from diagnose.cli import main

    assert main(["report", str(tmp_path / "nowhere"), "--format", "html"]) == 2
    assert capsys.readouterr().err == f"diagnose: error: {tmp_path / 'nowhere'}: run folder not found\n"


def test_a_run_folder_keeps_json_markdown_and_html_unless_told_otherwise(report_runs):
    assert [f.filename for f in reports.saved_formats()] == ["report.json", "report.md", "report.html"]
    assert [f.filename for f in reports.saved_formats("md")] == ["report.json", "report.md"]
    assert (report_runs["no_regression"] / "report.html").is_file()
    with pytest.raises(KeyError, match="pdfx"):
        reports.saved_formats("json,pdfx")
