"""`diagnose eval`: run a labelled scenario suite through the whole compare and score the ranked causes.

A suite is a folder whose subfolders each hold a `scenario.yaml` (docs/eval.md): two versions of a model, the
true causes of their latency change and the verdict expected. Each scenario runs `run_compare` in-process into
its own run folder under the eval's output folder; its report's hypotheses (best first) are scored against the
labels with RCAEval's metrics: AC@k = |top-k & T| / min(k, |T|), Avg@3 = mean(AC@1, AC@2, AC@3), averaged over
the scenarios with causes; the verdict accuracy over the scenarios where nothing regressed; a confusion table
(true first cause -> predicted top-1 cause). A scenario that fails is an error row (scored as a miss), never the
end of the eval.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.core.errors import UserError, first_line

SCENARIO_FILE = "scenario.yaml"
RESULT_FILE = "eval.json"
DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios"
DEFAULT_BUDGET_S = 8.0
EMBEDDED = "embedded"
VERDICTS = ("regression", "no_regression")
KEYS = {"description", "registry", "model", "old", "new", "causes", "verdict", "signals", "compare"}
REQUIRED = ("registry", "model", "old", "new", "causes", "verdict")
# scenario `compare:` key -> (CompareOptions field, type check, what it must be)
COMPARE_KEYS = {
    "budget": ("budget_s", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
               "a positive number of seconds"),
    "verify_budget": ("verify_budget_s",
                      lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                      "a positive number of seconds"),
    "profile": ("profile", lambda v: isinstance(v, bool), "true or false"),
    "factorial": ("factorial", lambda v: isinstance(v, bool), "true or false"),
    "verify": ("verify", lambda v: isinstance(v, bool), "true or false"),
    "benchmark": ("benchmark", lambda v: isinstance(v, bool), "true or false"),
    "allow_env_mismatch": ("allow_env_mismatch", lambda v: isinstance(v, bool), "true or false"),
    "seed": ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "variants": ("variants", lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
                 "a list of variant names"),
    "old_requests": ("old_requests", lambda v: isinstance(v, str) and v, "a path relative to the scenario folder"),
    "new_requests": ("new_requests", lambda v: isinstance(v, str) and v, "a path relative to the scenario folder"),
}
NO_CAUSE = "(none)"


@dataclass(frozen=True)
class Scenario:
    name: str
    folder: Path
    registry: str  # a folder, or EMBEDDED
    model: str
    old: str
    new: str
    causes: tuple[str, ...]
    verdict: str
    description: str = ""
    signals: str | dict | None = None  # a folder relative to `folder`, or {"generate": spec}
    compare: dict = field(default_factory=dict)


# ---- loading ---------------------------------------------------------------------------------------------------------
def known_causes() -> set[str]:
    from diagnose.hypotheses import causes

    return set(causes())


def load_scenario(path: Path, causes: set[str] | None = None) -> Scenario:
    """One scenario.yaml, checked key by key: a bad one is a UserError naming the file and the key."""
    import yaml

    causes = known_causes() if causes is None else causes
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the scenario: {first_line(exc)}", path) from None
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {first_line(exc)}", path) from None
    if not isinstance(data, dict):
        raise UserError("a scenario must be a mapping of keys", path)
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise UserError(f"unknown key; known: {', '.join(sorted(KEYS))}", path, unknown[0])
    for key in REQUIRED:
        if key not in data:
            raise UserError("missing", path, key)
    for key in ("registry", "model", "old", "new"):
        if not isinstance(data[key], str) or not data[key]:
            raise UserError("must be a non-empty string", path, key)
    if not isinstance(data.get("description", ""), str):
        raise UserError("must be a string", path, "description")
    folder = path.parent
    if data["registry"] != EMBEDDED and not (folder / data["registry"]).is_dir():
        raise UserError(f"registry folder not found: {folder / data['registry']} (or say `{EMBEDDED}`)", path, "registry")
    labels = data["causes"]
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise UserError("must be a list of cause ids ([] when nothing regressed)", path, "causes")
    bad = [c for c in labels if c not in causes]
    if bad:
        raise UserError(f"unknown cause id {bad[0]!r}; known: {', '.join(sorted(causes))}", path, "causes")
    if len(set(labels)) != len(labels):
        raise UserError("a cause is listed twice", path, "causes")
    if data["verdict"] not in VERDICTS:
        raise UserError(f"must be one of {', '.join(VERDICTS)}", path, "verdict")
    signals = data.get("signals")
    if signals is not None:
        if isinstance(signals, str):
            if not (folder / signals).is_dir():
                raise UserError(f"signals folder not found: {folder / signals}", path, "signals")
        elif not (isinstance(signals, dict) and set(signals) == {"generate"} and isinstance(signals["generate"], dict)):
            raise UserError("must be a folder or {generate: {...}}", path, "signals")
    compare = data.get("compare") or {}
    if not isinstance(compare, dict):
        raise UserError("must be a mapping of compare options", path, "compare")
    for key, value in compare.items():
        if key not in COMPARE_KEYS:
            raise UserError(f"unknown compare option; known: {', '.join(sorted(COMPARE_KEYS))}", path, f"compare.{key}")
        _, check, what = COMPARE_KEYS[key]
        if not check(value):
            raise UserError(f"must be {what}", path, f"compare.{key}")
    return Scenario(name=folder.name, folder=folder, registry=data["registry"], model=data["model"], old=data["old"],
                    new=data["new"], causes=tuple(labels), verdict=data["verdict"],
                    description=data.get("description") or "", signals=signals, compare=dict(compare))


def load_suite(suite: str | Path, only: list[str] | None = None) -> list[Scenario]:
    """The suite's scenarios in name order (subfolders without a scenario.yaml are skipped); `only` picks by name."""
    root = Path(suite)
    if not root.is_dir():
        raise UserError("suite folder not found", root)
    causes = known_causes()
    scenarios = [load_scenario(p / SCENARIO_FILE, causes) for p in sorted(root.iterdir())
                 if p.is_dir() and (p / SCENARIO_FILE).is_file()]
    if not scenarios:
        raise UserError(f"no scenarios: no subfolder holds a {SCENARIO_FILE}", root)
    if only:
        names = {s.name for s in scenarios}
        missing = [n for n in only if n not in names]
        if missing:
            raise UserError(f"unknown scenario {missing[0]!r}; the suite holds: {', '.join(sorted(names))}", root, "--only")
        scenarios = [s for s in scenarios if s.name in set(only)]
    return scenarios


# ---- running ---------------------------------------------------------------------------------------------------------
def _registry_path(scenario: Scenario) -> str:
    if scenario.registry != EMBEDDED:
        return str((scenario.folder / scenario.registry).resolve())
    from diagnose.registry import Registry
    from fixtures.embedded import embedded_registry_root

    registry = Registry(embedded_registry_root(), embedded=True)
    for version in (scenario.old, scenario.new):  # built at first use, as the default registry is
        registry.manifest(scenario.model, version)
    return str(registry.root)


def _signals(scenario: Scenario, scratch: Path) -> Path | None:
    if scenario.signals is None:
        return None
    if isinstance(scenario.signals, str):
        return (scenario.folder / scenario.signals).resolve()
    from fixtures.scenario_signals import write

    scratch.mkdir(parents=True, exist_ok=True)
    write(scratch, dict(scenario.signals["generate"]))
    return scratch


def options_for(scenario: Scenario, run_dir: Path, scratch: Path, budget_scale: float = 1.0):
    from diagnose.compare import CompareOptions

    fields = {"budget_s": DEFAULT_BUDGET_S, "verify": False, "profile": False}
    for key, value in scenario.compare.items():
        name = COMPARE_KEYS[key][0]
        if name in ("old_requests", "new_requests"):
            value = (scenario.folder / value).resolve()
        elif name == "variants":
            value = tuple(value)
        fields[name] = value
    fields["budget_s"] *= budget_scale
    if fields.get("verify_budget_s"):
        fields["verify_budget_s"] *= budget_scale
    return CompareOptions(old=scenario.old, new=scenario.new, model=scenario.model, registry=_registry_path(scenario),
                          out=run_dir, signals=_signals(scenario, scratch),
                          argv=("diagnose", "eval", "--only", scenario.name), **fields)


def run_scenario(scenario: Scenario, out: Path, budget_scale: float = 1.0) -> dict:
    """Run one scenario's compare and score it; any failure becomes the row's `error`."""
    import reports
    from diagnose.compare import Interrupted, run_compare

    base = out / scenario.name
    row = {"name": scenario.name, "description": scenario.description, "model": scenario.model, "old": scenario.old,
           "new": scenario.new, "causes": list(scenario.causes), "expected_verdict": scenario.verdict,
           "verdict": None, "hypotheses": [], "run_folder": str(base / "run"), "error": None}
    started = time.monotonic()
    try:
        folder, report = run_compare(options_for(scenario, base / "run", base / "signals", budget_scale))
        data = json.loads(reports.get("json").render(report))
        row["verdict"] = data.get("verdict")
        row["summary"] = data.get("summary")
        row["hypotheses"] = [{"cause": h["cause"], "score": h["score"]} for h in data.get("hypotheses") or []]
        row["run_folder"] = str(folder)
    except (KeyboardInterrupt, Interrupted):
        raise
    except Exception as exc:  # a UserError or our bug: recorded, the suite goes on
        row["error"] = f"{type(exc).__name__}: {first_line(exc, 300)}"
    row["seconds"] = round(time.monotonic() - started, 2)
    return score_row(row)


# ---- scoring ---------------------------------------------------------------------------------------------------------
def ac_at(k: int, ranked: list[str], truth: list[str] | tuple[str, ...]) -> float:
    """RCAEval's AC@k: the share of the true causes found in the top k, out of at most k findable."""
    if not truth:
        raise ValueError("AC@k needs at least one true cause")
    return len(set(ranked[:k]) & set(truth)) / min(k, len(truth))


def predicted_top(row: dict) -> str:
    """The top-1 cause the report names as likely (score >= the likely threshold), else NO_CAUSE."""
    from reports.sections import LIKELY_MIN_SCORE

    hyps = row.get("hypotheses") or []
    return hyps[0]["cause"] if hyps and hyps[0]["score"] >= LIKELY_MIN_SCORE else NO_CAUSE


def score_row(row: dict) -> dict:
    ranked = [h["cause"] for h in row.get("hypotheses") or []]
    truth = row["causes"]
    row["max_score"] = max((h["score"] for h in row.get("hypotheses") or []), default=0.0)
    row["predicted"] = predicted_top(row)
    if truth:
        for k in (1, 2, 3):
            row[f"ac@{k}"] = ac_at(k, ranked, truth)
        row["avg@3"] = (row["ac@1"] + row["ac@2"] + row["ac@3"]) / 3
    row["verdict_ok"] = row["verdict"] is not None and (
        row["verdict"] == "regression" if row["expected_verdict"] == "regression" else row["verdict"] != "regression")
    return row


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(rows: list[dict]) -> dict:
    """The suite's metrics over scored rows (error rows count as misses)."""
    caused = [r for r in rows if r["causes"]]
    clean = [r for r in rows if r["expected_verdict"] == "no_regression"]
    regress = [r for r in rows if r["expected_verdict"] == "regression"]
    confusion: dict[str, dict[str, int]] = {}
    for r in rows:
        true = r["causes"][0] if r["causes"] else NO_CAUSE
        pred = "(error)" if r["error"] else r["predicted"]
        confusion.setdefault(true, {}).setdefault(pred, 0)
        confusion[true][pred] += 1
    return {
        "scenarios": len(rows), "errors": sum(1 for r in rows if r["error"]), "with_causes": len(caused),
        "ac@1": _mean([r["ac@1"] for r in caused]), "ac@2": _mean([r["ac@2"] for r in caused]),
        "ac@3": _mean([r["ac@3"] for r in caused]), "avg@3": _mean([r["avg@3"] for r in caused]),
        "no_regression_scenarios": len(clean),
        "no_regression_verdict_accuracy": _mean([float(r["verdict_ok"]) for r in clean]),
        "no_regression_max_score": max((r["max_score"] for r in clean), default=None),
        "regression_verdict_accuracy": _mean([float(r["verdict_ok"]) for r in regress]),
        "confusion": {t: dict(sorted(p.items())) for t, p in sorted(confusion.items())},
        "seconds": round(sum(r["seconds"] for r in rows), 1),
    }


def run_eval(suite: str | Path, out: Path, only: list[str] | None = None, budget_scale: float = 1.0) -> dict:
    """Load, run and score the suite; the result (also saved as out/eval.json)."""
    from collectors.environment import capture
    from diagnose.core.progress import Bar
    from diagnose.core.runfolder import make_dir, write_json
    from diagnose.core.times import utc_now

    scenarios = load_suite(suite, only)
    env = capture()
    machine = {"cpu_model": env["cpu_model"], "usable_cores": env["usable_cores"], "cpu_flags": env.get("cpu_flags")}
    out = make_dir(out)
    started_at, started = utc_now(), time.monotonic()
    rows = []
    with Bar(len(scenarios), "Evaluating", unit=" scenarios") as bar:
        for i, scenario in enumerate(scenarios):
            bar.update_to(i, scenario.name)
            rows.append(run_scenario(scenario, out, budget_scale))
        bar.update_to(len(scenarios), "done")
    result = {"suite": str(Path(suite).resolve()), "out": str(out), "started_at": started_at, "machine": machine,
              "elapsed_s": round(time.monotonic() - started, 1), "budget_scale": budget_scale,
              "metrics": summarize(rows), "scenarios": rows}
    write_json(out / RESULT_FILE, result)
    return result


# ---- rendering -------------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(result: dict) -> str:
    lines = []
    rows = result["scenarios"]
    width = max((len(r["name"]) for r in rows), default=8)
    for r in rows:
        if r["error"]:
            mark = "ERROR"
        elif r["causes"]:
            mark = "hit" if r["ac@1"] == 1 else ("top3" if r["ac@3"] > 0 else "MISS")
        else:
            mark = "ok" if r["verdict_ok"] else "FALSE+"
        verdict = f"{r['verdict'] or '-'} (want {r['expected_verdict']})" + ("" if r["verdict_ok"] else " !")
        lines.append(f"{r['name']:<{width}}  {mark:<6} {verdict:<42} {r['seconds']:6.1f}s")
        lines.append(f"{'':<{width}}    true: {', '.join(r['causes']) or NO_CAUSE}")
        if r["error"]:
            lines.append(f"{'':<{width}}    error: {r['error']}")
        else:
            top = " | ".join(f"{h['cause']} {h['score']:.2f}" for h in r["hypotheses"][:3]) or "(no hypotheses)"
            lines.append(f"{'':<{width}}    top3: {top}")
    m = result["metrics"]
    lines += [
        "",
        f"scenarios: {m['scenarios']} ({m['with_causes']} with causes, {m['no_regression_scenarios']} without), "
        f"errors: {m['errors']}",
        f"AC@1 {_pct(m['ac@1'])}  AC@3 {_pct(m['ac@3'])}  Avg@3 {_pct(m['avg@3'])}   (over the {m['with_causes']} "
        "scenarios with causes)",
        f"verdict accuracy: regressions {_pct(m['regression_verdict_accuracy'])}, no-regression "
        f"{_pct(m['no_regression_verdict_accuracy'])} (max hypothesis score there: {_pct(m['no_regression_max_score'])})",
        "",
        "('!': the verdict is not the one expected; hit/top3/MISS: a true cause ranked first, one in the top 3, "
        "none there)",
        "",
        "confusion (true first cause -> predicted top-1 cause: count):",
    ]
    for true, preds in m["confusion"].items():
        lines.append(f"  {true}: " + ", ".join(f"{p} {n}" for p, n in preds.items()))
    machine = result.get("machine") or {}
    lines += ["", f"total {result['elapsed_s']:.1f}s on {machine.get('cpu_model', 'an unknown CPU')} "
                  f"({machine.get('usable_cores', '?')} usable cores); results in {Path(result['out']) / RESULT_FILE}"]
    return "\n".join(lines) + "\n"


def eval_command(suite: str | Path | None, out: Path | None, only: list[str] | None, as_json: bool,
                 budget_scale: float = 1.0) -> str:
    from diagnose.core.runfolder import new_dir

    out = out or new_dir(Path("runs"), "eval")
    result = run_eval(suite or DEFAULT_SUITE, out, only, budget_scale)
    return json.dumps(result, indent=2) + "\n" if as_json else render_table(result)
