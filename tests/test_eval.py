"""`diagnose eval`: the scenario loader's refusals, the metrics' arithmetic, and one real run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from diagnose.core.errors import UserError
from diagnose.evaluation import DEFAULT_SUITE, ac_at, load_scenario, load_suite, render_table, score_row, summarize

GOOD = """description: an A/A
registry: registry
model: m
old: v1
new: v1
causes: []
verdict: no_regression
compare: {budget: 5, profile: false}
"""


def _suite(tmp_path: Path, text: str, name: str = "one") -> Path:
    folder = tmp_path / "suite" / name
    (folder / "registry").mkdir(parents=True)
    (folder / "scenario.yaml").write_text(text)
    return tmp_path / "suite"


def test_a_good_scenario_loads_and_folders_without_one_are_skipped(tmp_path):
    suite = _suite(tmp_path, GOOD)
    (suite / "notes").mkdir()
    [scenario] = load_suite(suite)
    assert (scenario.name, scenario.causes, scenario.verdict, scenario.compare) == ("one", (), "no_regression",
                                                                                    {"budget": 5, "profile": False})


@pytest.mark.parametrize("text, key, words", [
    (GOOD + "bogus: 1\n", "bogus", "unknown key"),
    (GOOD.replace("causes: []", "causes: [model.made_up]"), "causes", "unknown cause id 'model.made_up'"),
    (GOOD.replace("verdict: no_regression", "verdict: improvement"), "verdict", "must be one of"),
    (GOOD.replace("budget: 5", "budget: -1"), "compare.budget", "positive"),
    (GOOD.replace("profile: false", "profiel: false"), "compare.profiel", "unknown compare option"),
    (GOOD.replace("registry: registry", "registry: nowhere"), "registry", "not found"),
    (GOOD.replace("model: m\n", ""), "model", "missing"),
    (GOOD + "signals: {make: {}}\n", "signals", "generate"),
])
def test_a_bad_scenario_names_the_file_and_the_key(tmp_path, text, key, words):
    suite = _suite(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_scenario(suite / "one" / "scenario.yaml")
    message = str(caught.value)
    assert str(suite / "one" / "scenario.yaml") in message and f": {key}: " in message and words in message, message


def test_bad_yaml_is_one_line(tmp_path):
    suite = _suite(tmp_path, "causes: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_suite(suite)


@pytest.mark.parametrize("change, key", [("bogus: 1\n", "bogus"), ("causes: [model.nope]\n", "causes")])
def test_the_cli_refuses_a_bad_suite_with_exit_2_and_one_line(tmp_path, change, key):
    text = GOOD.replace("causes: []\n", "") + change if key == "causes" else GOOD + change
    suite = _suite(tmp_path, text)
    result = run_cli("eval", str(suite), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scenario.yaml" in lines[0] and f": {key}: " in lines[0], result.stderr


def test_the_cli_refuses_an_unknown_only_name(tmp_path):
    result = run_cli("eval", str(_suite(tmp_path, GOOD)), "--only", "two", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "unknown scenario 'two'" in result.stderr


def test_the_shipped_suite_loads():
    scenarios = load_suite(DEFAULT_SUITE)
    assert len(scenarios) >= 20
    assert any(not s.causes for s in scenarios) and any(s.registry == "embedded" for s in scenarios)


# ---- metrics ---------------------------------------------------------------------------------------------------------
def _row(name, causes, ranked, verdict="regression", expected="regression", error=None, seconds=1.0):
    scores = [0.9, 0.6, 0.3, 0.2, 0.1]
    hypotheses = [{"cause": c, "score": s} for c, s in zip(ranked, scores[:len(ranked)], strict=True)]
    return score_row({"name": name, "causes": causes, "expected_verdict": expected, "verdict": verdict, "error": error,
                      "hypotheses": hypotheses, "seconds": seconds})


def test_ac_at_k_counts_hits_out_of_at_most_k():
    ranked = ["a", "b", "c", "d"]
    assert ac_at(1, ranked, ["a"]) == 1 and ac_at(1, ranked, ["b"]) == 0 and ac_at(3, ranked, ["c"]) == 1
    assert ac_at(1, ranked, ["b", "c"]) == 0 and ac_at(2, ranked, ["b", "c"]) == 0.5 and ac_at(3, ranked, ["b", "c"]) == 1
    assert ac_at(3, ranked, ["a", "d", "x", "y"]) == pytest.approx(1 / 3)
    assert ac_at(3, [], ["a"]) == 0
    with pytest.raises(ValueError):
        ac_at(1, ranked, [])


def test_summary_metrics_and_confusion():
    rows = [
        _row("hit", ["a"], ["a", "b"]),                     # AC@1 1, AC@2 1, AC@3 1 -> Avg@3 1
        _row("second", ["a"], ["b", "a"]),                  # 0, 1, 1 -> 2/3
        _row("multi", ["b", "c"], ["a", "b", "c"]),         # 0, 0.5, 1 -> 0.5
        _row("missed", ["c"], ["a"], verdict="no_regression"),  # 0, 0, 0; its verdict is wrong too
        _row("broken", ["a"], [], verdict=None, error="RuntimeError: boom"),  # an error is a miss
        _row("aa", [], ["a"], verdict="no_regression", expected="no_regression"),
        _row("aa_false", [], ["b"], verdict="regression", expected="no_regression"),
    ]
    m = summarize(rows)
    assert (m["scenarios"], m["with_causes"], m["errors"], m["no_regression_scenarios"]) == (7, 5, 1, 2)
    assert m["ac@1"] == pytest.approx(1 / 5)
    assert m["ac@3"] == pytest.approx((1 + 1 + 1 + 0 + 0) / 5)
    assert m["avg@3"] == pytest.approx((1 + 2 / 3 + 0.5 + 0 + 0) / 5)
    assert m["no_regression_verdict_accuracy"] == 0.5 and m["no_regression_max_score"] == 0.9
    assert m["regression_verdict_accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == {"a": {"(error)": 1, "a": 1, "b": 1}, "b": {"a": 1}, "c": {"a": 1},
                              "(none)": {"a": 1, "b": 1}}
    assert m["seconds"] == 7.0
    text = render_table({"scenarios": rows, "metrics": m, "elapsed_s": 7.0, "out": "/tmp/x"})
    assert "AC@1 0.20" in text and "ERROR" in text and "FALSE+" in text and "error: RuntimeError: boom" in text


def test_a_low_scoring_top_hypothesis_is_no_prediction():
    row = score_row({"name": "x", "causes": [], "expected_verdict": "no_regression", "verdict": "no_regression",
                     "error": None, "hypotheses": [{"cause": "a", "score": 0.01}], "seconds": 1.0})
    assert row["predicted"] == "(none)" and row["max_score"] == 0.01 and row["verdict_ok"]


# ---- end to end --------------------------------------------------------------------------------------------------------
def test_eval_runs_two_scenarios_through_the_cli(tmp_path):
    out = tmp_path / "eval"
    result = run_cli("eval", "--only", "aa_tabular,schema_tabular_float64", "--budget-scale", "0.6", "--out", str(out),
                     "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == json.loads((out / "eval.json").read_text())
    assert [r["name"] for r in data["scenarios"]] == ["aa_tabular", "schema_tabular_float64"]
    aa, schema = data["scenarios"]
    assert aa["error"] is None and schema["error"] is None, (aa["error"], schema["error"])
    assert aa["expected_verdict"] == "no_regression" and aa["verdict"] != "regression" and aa["verdict_ok"]
    assert schema["causes"] == ["input.schema_change"] and schema["verdict"] == "regression"
    assert schema["hypotheses"][0]["cause"] == "input.schema_change" and schema["ac@1"] == 1
    assert Path(schema["run_folder"], "report.json").is_file() and schema["seconds"] > 0
    m = data["metrics"]
    assert (m["scenarios"], m["with_causes"], m["errors"], m["ac@1"]) == (2, 1, 0, 1.0)
    assert set(m) >= {"ac@3", "avg@3", "no_regression_verdict_accuracy", "no_regression_max_score", "confusion"}
