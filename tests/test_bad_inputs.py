"""A corpus of bad inputs: each ends with exit code 2 and one line on stderr naming the file or the option.

Every case fails before a model runs, so the corpus calls `diagnose.cli.main` in-process (the same exit code and
line as a subprocess: `test_in_process_matches_subprocess`). An argparse refusal prints its usage line before the
one error line (argparse's convention, kept); those cases check the error line.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, requests_frame, run_cli, save_mlp, write_manifest

from diagnose.cli import build_parser, main

RUN_FIXTURE = ROOT / "fixtures" / "runs" / "textclf-v1-vs-v2"


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory) -> Path:
    """The conftest `tiny_registry` (mlp v1, v2), built once for the module and copied per case: the models are the
    slow part, and no case runs them."""
    root = tmp_path_factory.mktemp("template") / "registry"
    for version, hidden in (("v1", (16,)), ("v2", (32,))):
        folder = root / "mlp" / version
        write_manifest(folder, serving={"threads": 1})
        save_mlp(folder / "model.pt", hidden)
        requests_frame(seed=1).to_parquet(folder / "requests.parquet")
    return root


@pytest.fixture
def env(tmp_path, monkeypatch, registry_template):
    """A fresh registry copy, the cwd in tmp (no ./models, no runs/ in the repository), no progress output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIAGNOSE_REGISTRY", raising=False)
    monkeypatch.setenv("DIAGNOSE_PROGRESS", "0")
    registry = tmp_path / "registry"
    shutil.copytree(registry_template, registry)
    return registry


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_line(code: int, lines: list[str], *needles: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("diagnose: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_usage_error(code: int, lines: list[str], *needles: str) -> None:
    """argparse: `usage: ...` (possibly wrapped), then one `error:` line naming the option."""
    assert code == 2, lines
    assert "error: " in lines[-1] and "Traceback" not in "\n".join(lines), lines
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def compare(registry: Path, *extra: str) -> list[str]:
    return ["compare", "--registry", registry, "--model", "mlp", "--old", "v1", "--new", "v2",
            "--budget", "1", "--out", registry.parent / "run", *extra]


# --- manifests -----------------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
MANIFEST_OVERRIDES = [
    ({"name": 3}, "name:"), ({"name": ""}, "name:"), ({"version": ["v2"]}, "version:"),
    ({"format": "keras"}, "format:"), ({"format": 1}, "format:"), ({"artifact": ""}, "artifact:"),
    ({"artifact": "/etc/passwd"}, "artifact:"), ({"artifact": "../v1/model.pt"}, "artifact:"),
    ({"artifact": "a\0b.pt"}, "artifact:"), ({"artifact": "gone.pt"}, "artifact:"), ({"artifact": ["model.pt"]}, "artifact:"),
    ({"inputs": "requests.parquet"}, "inputs:"), ({"inputs": None}, "inputs:"), ({"inputs": {"requests": 5}}, "inputs.requests:"),
    ({"inputs": {"requests": "../../x.parquet"}}, "inputs.requests:"),
    ({"inputs": {"requests": "a\0b.parquet"}}, "inputs.requests:"),
    ({"inputs": {"preprocess": "no_colon"}}, "inputs.preprocess:"), ({"inputs": {"preprocess": "a:b:c"}}, "inputs.preprocess:"),
    ({"inputs": {"preprocess": "mod:1fn"}}, "inputs.preprocess:"), ({"inputs": {"preprocess": "../up:fn"}}, "inputs.preprocess:"),
    ({"inputs": {"preprocess": 7}}, "inputs.preprocess:"),
    ({"inputs": {"schema": ["x"]}}, "inputs.schema:"), ({"inputs": {"schema": {"x": "list"}}}, "inputs.schema.x:"),
    ({"inputs": {"schema": {"x": {"colour": "red"}}}}, "inputs.schema.x:"),
    ({"inputs": {"schema": {"x": {"rank": "1"}}}}, "inputs.schema.x.rank:"),
    ({"inputs": {"schema": {"x": {"rank": True}}}}, "inputs.schema.x.rank:"),
    ({"inputs": {"schema": {"x": {"shape": [0]}}}}, "inputs.schema.x.shape:"),
    ({"inputs": {"schema": {"x": {"shape": ["a"]}}}}, "inputs.schema.x.shape:"),
    ({"inputs": {"schema": {"x": {"nullable": "no"}}}}, "inputs.schema.x.nullable:"),
    ({"serving": ["cpu"]}, "serving:"), ({"serving": {"device": "tpu"}}, "serving.device:"),
    ({"serving": {"precision": "fp8"}}, "serving.precision:"), ({"serving": {"threads": 0}}, "serving.threads:"),
    ({"serving": {"threads": -1}}, "serving.threads:"), ({"serving": {"threads": 100000}}, "serving.threads:"),
    ({"serving": {"threads": 1.5}}, "serving.threads:"), ({"serving": {"threads": True}}, "serving.threads:"),
    ({"serving": {"threads": "2"}}, "serving.threads:"), ({"serving": {"batch_size": 0}}, "serving.batch_size:"),
    ({"serving": {"batch_size": 70000}}, "serving.batch_size:"), ({"serving": {"batch_size": 2 ** 40}}, "serving.batch_size:"),
    ({"serving": {"cast_inputs": "yes"}}, "serving.cast_inputs:"), ({"serving": {"cast_inputs": 1}}, "serving.cast_inputs:"),
    ({"serving": {"ort_session_config": ["spin"]}}, "serving.ort_session_config:"),
    ({"serving": {"ort_session_config": {"allow_spinning": "0"}}}, "serving.ort_session_config:"),
    ({"serving": {"ort_session_config": {"session.intra_op.allow_spinning": 0.5}}},
     "serving.ort_session_config.session.intra_op.allow_spinning:"),
    ({"slo": ["p99"]}, "slo:"), ({"slo": {"p99_ms": NAN}}, "slo.p99_ms:"), ({"slo": {"p99_ms": INF}}, "slo.p99_ms:"),
    ({"slo": {"p99_ms": -INF}}, "slo.p99_ms:"), ({"slo": {"p99_ms": 0}}, "slo.p99_ms:"), ({"slo": {"p99_ms": -3}}, "slo.p99_ms:"),
    ({"slo": {"p99_ms": "fast"}}, "slo.p99_ms:"), ({"slo": {"p99_ms": True}}, "slo.p99_ms:"),
    ({"slo": {"max_accuracy_drop": 2}}, "slo.max_accuracy_drop:"), ({"slo": {"min_cosine": 1.5}}, "slo.min_cosine:"),
    ({"slo": {"min_cosine": NAN}}, "slo.min_cosine:"),
    ({"deployment": ["serving"]}, "deployment:"), ({"deployment": "serving"}, "deployment:"),
    ({"deployment": {"selector": ["app=textclf"]}}, "deployment.selector:"),
    ({"deployment": {"selector": {"app": "textclf"}}}, "deployment.selector:"),
    ({"deployment": {"namespace": 3}}, "deployment.namespace:"), ({"deployment": {"container": []}}, "deployment.container:"),
    ({"deployment": {"deployed_at": "yesterday"}}, "deployment.deployed_at:"),
    ({"deployment": {"deployed_at": 12345}}, "deployment.deployed_at:"),
    ({"deployment": {"deployed_at": ["2026-11-20"]}}, "deployment.deployed_at:"),
    ({"deployment": {"pod_regex": "intent-serving-("}}, "deployment.pod_regex: not a regular expression"),
    ({"deployment": {"pod_regex": "intent-(?!canary).*"}}, "deployment.pod_regex: Prometheus regexes (RE2)"),
    ({"deployment": {"pod_regex": ["intent-.*"]}}, "deployment.pod_regex:"),
]


@pytest.mark.parametrize("override, key", MANIFEST_OVERRIDES)
def test_bad_manifest_key(env, capsys, override, key):
    manifest = write_manifest(env / "mlp" / "v2", **override)
    assert_one_line(*cli(capsys, *compare(env)), str(manifest), key)


@pytest.mark.parametrize("content, needle", [
    (b"name: mlp\nversion: [v2\n", "not valid YAML"), (b"\xff\xfe\x00n\x00a", "not UTF-8"), (b"name: caf\xe9\n", "not UTF-8"),
    (b"- name\n- version\n", "YAML mapping"), (b"just text\n", "YAML mapping"), (b"", "YAML mapping"),
    (b"name: mlp\n\tversion: v2\n", "not valid YAML"), (b"name: !!python/object:os.system x\n", "not valid YAML"),
])
def test_unreadable_manifest(env, capsys, content, needle):
    manifest = env / "mlp" / "v2" / "manifest.yaml"
    manifest.write_bytes(content)
    assert_one_line(*cli(capsys, *compare(env)), str(manifest), needle)


def test_manifest_key_missing(env, capsys):
    manifest = env / "mlp" / "v2" / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("format: torchscript\n", ""))
    assert_one_line(*cli(capsys, *compare(env)), str(manifest), "format: is missing")


# --- registries ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content, needle", [
    (b"default_model: [mlp\n", "not valid YAML"), (b"- mlp\n", "YAML mapping"), (b"mlp\n", "YAML mapping"),
    (b"default_model: 3\n", "default_model:"), (b"default_model: [mlp]\n", "default_model:"),
    (b"default_model: {a: 1}\n", "default_model:"), (b"default_model: nope\n", "default_model:"),
    (b"default_model: caf\xe9\n", "not UTF-8"),
])
def test_bad_registry_index(env, capsys, content, needle):
    index = env / "registry.yaml"
    index.write_bytes(content)
    code, lines = cli(capsys, "compare", "--registry", env, "--old", "v1", "--new", "v2", "--out", env.parent / "run")
    assert_one_line(code, lines, str(index), needle)


def test_several_models_without_default(env, capsys):
    shutil.copytree(env / "mlp", env / "other")
    code, lines = cli(capsys, "compare", "--registry", env, "--old", "v1", "--new", "v2")
    assert_one_line(code, lines, "several models", "--model")


def test_empty_registry(tmp_path, capsys, env):
    (tmp_path / "empty").mkdir()
    assert_one_line(*cli(capsys, "compare", "--registry", tmp_path / "empty", "--old", "v1", "--new", "v2"), "no models")


@pytest.mark.parametrize("args, needle", [
    (("--registry", "nowhere"), "registry folder not found"), (("--registry", "registry/mlp/v1/model.pt"), "not found"),
    (("--registry", "a\0b"), "--registry: must not contain a NUL byte"), (("--model", "nope"), "unknown model 'nope'"),
    (("--model", "m\0"), "--model: must not contain a NUL byte"), (("--old", "v9"), "unknown version 'v9'"),
    (("--old", "v\0"), "--old: must not contain a NUL byte"), (("--new", "../mlp/v1"), "unknown version"),
])
def test_bad_registry_option(env, capsys, args, needle):
    argv = {"--registry": str(env), "--model": "mlp", "--old": "v1", "--new": "v2"} | dict([args])
    code, lines = cli(capsys, "compare", *[x for kv in argv.items() for x in kv], "--out", env.parent / "run")
    assert_one_line(code, lines, needle)


def test_registry_env_var_missing(env, capsys, monkeypatch):
    monkeypatch.setenv("DIAGNOSE_REGISTRY", str(env.parent / "gone"))
    assert_one_line(*cli(capsys, "compare", "--old", "v1", "--new", "v2"), "$DIAGNOSE_REGISTRY", "not found")


# --- request logs --------------------------------------------------------------------------------------------------
def _request_file(tmp: Path, kind: str) -> Path:
    path = tmp / {"dir": "folder.parquet", "txt": "requests.txt", "json": "requests.json", "none": "requests"}.get(
        kind, f"{kind}.parquet" if not kind.startswith("csv") else f"{kind}.csv")
    if kind == "dir":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"PAR1 not really parquet")
    elif kind == "rows0":
        pd.DataFrame({"x": pd.Series([], dtype=object)}).to_parquet(path)
    elif kind == "nocols":
        pd.DataFrame(index=[0, 1]).to_parquet(path)
    elif kind == "nan":
        pd.DataFrame({"x": [[0.1] * 32, [float("nan")] * 32]}).to_parquet(path)
    elif kind == "null":
        pd.DataFrame({"x": [[0.1] * 32, None]}).to_parquet(path)
    elif kind == "strings":
        pd.DataFrame({"x": [["a"] * 32, ["b"] * 32]}).to_parquet(path)
    elif kind == "csvempty":
        path.write_text("")
    elif kind == "csvheader":
        path.write_text("x\n")
    elif kind == "csvbinary":
        path.write_bytes(b"x\n\xff\xfe\x00\x01\n")
    elif kind in ("txt", "json", "none"):
        path.write_text("x\n1\n")
    return path


REQUEST_KINDS = ["missing", "dir", "empty", "corrupt", "rows0", "nocols", "nan", "null", "strings", "csvempty", "csvheader",
                 "csvbinary", "txt", "json", "none"]


@pytest.mark.parametrize("flag", ["--old-requests", "--new-requests"])
@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_bad_compare_requests(env, capsys, tmp_path, flag, kind):
    path = _request_file(tmp_path, kind)
    assert_one_line(*cli(capsys, *compare(env, flag, path)), str(path))


@pytest.mark.parametrize("kind", ["missing", "dir", "corrupt", "rows0", "csvheader", "txt"])
def test_bad_drift_requests(env, capsys, tmp_path, kind):
    path = _request_file(tmp_path, kind)
    good = env / "mlp" / "v1" / "requests.parquet"
    assert_one_line(*cli(capsys, "drift", "--old-requests", good, "--new-requests", path), str(path))


@pytest.mark.parametrize("command", ["profile", "optimize"])
@pytest.mark.parametrize("kind", ["missing", "dir", "corrupt", "nan", "txt"])
def test_bad_version_requests(env, capsys, tmp_path, command, kind):
    path = _request_file(tmp_path, kind)
    code, lines = cli(capsys, command, "v2", "--registry", env, "--model", "mlp", "--requests", path,
                      "--out", tmp_path / "out")
    assert_one_line(code, lines, str(path))


@pytest.mark.parametrize("flag", ["--old-requests", "--new-requests", "--out", "--signals"])
def test_nul_in_compare_path(env, capsys, flag):
    assert_one_line(*cli(capsys, *compare(env), flag, "a\0b"), f"{flag}: must not contain a NUL byte")


@pytest.mark.parametrize("argv, flag", [
    (("drift", "--old-requests", "a\0b", "--new-requests", "b.parquet"), "--old-requests"),
    (("drift", "--old-requests", "a.parquet", "--new-requests", "b.parquet", "--out", "o\0"), "--out"),
    (("profile", "v2", "--requests", "r\0.parquet"), "--requests"), (("optimize", "v\0"), "VERSION"),
    (("collect", "v2", "--out", "o\0"), "--out"), (("diff-traces", "a\0", "b"), "OLD"), (("analyze", "r\0"), "RUN_DIR"),
])
def test_nul_in_other_commands(env, capsys, argv, flag):
    assert_one_line(*cli(capsys, *argv), f"{flag}: must not contain a NUL byte")


# --- --out and --signals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "below_file", "not_empty"])
def test_bad_compare_out(env, capsys, tmp_path, where):
    (tmp_path / "taken").write_text("user data")
    out = {"file": tmp_path / "taken", "below_file": tmp_path / "taken" / "run", "not_empty": tmp_path}[where]
    code, lines = cli(capsys, *compare(env)[:-2], "--out", out)
    assert_one_line(code, lines, str(out))
    assert (tmp_path / "taken").read_text() == "user data"


@pytest.mark.parametrize("where", ["missing", "file"])
def test_bad_signals_folder(env, capsys, tmp_path, where):
    path = tmp_path / "signals"
    if where == "file":
        path.write_text("x")
    assert_one_line(*cli(capsys, *compare(env, "--signals", path)), "--signals", str(path))


@pytest.mark.parametrize("command", [
    ("drift", "--old", "v1", "--new", "v2", "--model", "mlp"),
    ("collect", "v2", "--model", "mlp"),
])
def test_other_out_is_a_file(env, capsys, tmp_path, command):
    (tmp_path / "taken").write_text("user data")
    code, lines = cli(capsys, *command, "--registry", env, "--out", tmp_path / "taken" / "below")
    assert_one_line(code, lines, "taken")


# --- options -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (("compare", "--old", "v1", "--new", "v2", "--budget", "-1"), "--budget"),
    (("compare", "--old", "v1", "--new", "v2", "--budget", "0"), "--budget"),
    (("compare", "--old", "v1", "--new", "v2", "--budget", "nan"), "--budget"),
    (("compare", "--old", "v1", "--new", "v2", "--budget", "soon"), "--budget"),
    (("compare", "--old", "v1", "--new", "v2", "--verify-budget", "0"), "--verify-budget"),
    (("compare", "--old", "v1", "--new", "v2", "--variants", "nope"), "--variants"),
    (("compare", "--old", "v1", "--new", "v2", "--variants", ","), "--variants"),
    (("compare", "--old", "v1", "--new", "v2", "--seed", "x"), "--seed"),
    (("compare", "--old", "v1", "--new", "v2", "--format", "docx"), "--format"),
    (("compare", "--old", "v1"), "--new"),
    (("analyze",), "RUN_DIR"), (("analyze", "r", "--format", "docx"), "--format"),
    (("profile",), "VERSION"), (("profile", "v1", "--steps", "x"), "--steps"),
    (("collect", "v1"), "--out"), (("collect", "v1", "--out", "o", "--gpu-seconds", "0"), "--gpu-seconds"),
    (("optimize", "v1", "--budget", "0"), "--budget"), (("optimize", "v1", "--variants", "nope"), "--variants"),
    (("drift", "--alpha", "1"), "--alpha"), (("drift", "--alpha", "x"), "--alpha"), (("drift", "--method", "t"), "--method"),
    (("drift", "--threshold", "-1"), "--threshold"), (("diff-traces", "a"), "NEW"),
    (("diff-traces", "a", "b", "--top", "x"), "--top"),
    (("frobnicate",), "invalid choice"),
    (("compare", "--old", "v1", "--new", "v2", "--budget", "inf"), "--budget"),
    (("compare", "--old", "v1", "--new", "v2", "--seed", "-1"), "--seed"),
    (("diff-traces", "a", "b", "--top", "-1"), "--top"),
    (("profile", "v1", "--top", "0"), "--top"), (("profile", "v2", "--steps", "0"), "--steps"),
])
def test_bad_option(capsys, tmp_path, monkeypatch, argv, needle):
    """Parsed only: these are refused by argparse (a case that parsed must not go on to run a command)."""
    monkeypatch.chdir(tmp_path)
    try:
        build_parser().parse_args(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert_usage_error(code, [line for line in capsys.readouterr().err.splitlines() if line.strip()], needle)


@pytest.mark.parametrize("argv, needle", [
    (("drift",), "--old-requests"), (("drift", "--old", "v1"), "--old and --new"),
])
def test_bad_option_combination(env, capsys, argv, needle):
    assert_one_line(*cli(capsys, *argv, "--registry", env), needle)


# --- traces --------------------------------------------------------------------------------------------------------
def _trace(tmp: Path, kind: str) -> Path:
    path = tmp / ("trace.pt.trace.json.gz" if kind.startswith("gz") else "trace.pt.trace.json")
    if kind == "dir_empty":
        path = tmp / "empty"
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "empty":
        path.write_text("")
    elif kind == "notjson":
        path.write_text("not json {")
    elif kind == "list":
        path.write_text("[1, 2]")
    elif kind == "noevents":
        path.write_text(json.dumps({"schemaVersion": 1}))
    elif kind == "badevents":
        path.write_text(json.dumps({"traceEvents": "nope"}))
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "gz_truncated":
        path.write_bytes(gzip.compress(json.dumps({"traceEvents": []}).encode())[:12])
    elif kind == "gz_notgzip":
        path.write_bytes(b"plain text, not gzip")
    elif kind == "gz_notjson":
        path.write_bytes(gzip.compress(b"not json"))
    return path


@pytest.mark.parametrize("kind", ["dir_empty", "missing", "empty", "notjson", "list", "noevents", "badevents", "binary",
                                  "gz_truncated", "gz_notgzip", "gz_notjson"])
def test_bad_trace(capsys, tmp_path, kind):
    bad = _trace(tmp_path, kind)
    assert_one_line(*cli(capsys, "diff-traces", bad, bad), str(bad))


# --- run folders for analyze ---------------------------------------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(RUN_FIXTURE, target)
    return target


def _spoil(run: Path, what: str) -> Path:
    """Break one file of a saved run folder; returns the file the error must name."""
    ev = run / "evidence"
    spoils = {
        "no_run_json": lambda: (run / "run.json").unlink(),
        "run_json_corrupt": lambda: (run / "run.json").write_text("{"),
        "run_json_list": lambda: (run / "run.json").write_text("[]"),
        "run_json_no_model": lambda: (run / "run.json").write_text(json.dumps({"old": "v1", "new": "v2"})),
        "run_json_binary": lambda: (run / "run.json").write_bytes(b"\xff\xfe{}"),
        "format_version": lambda: (run / "run.json").write_text(json.dumps(
            {**json.loads((run / "run.json").read_text()), "format_version": "two"})),
        "versions_corrupt": lambda: (ev / "versions.json").write_text('{"old": '),
        "versions_list": lambda: (ev / "versions.json").write_text("[]"),
        "versions_no_sides": lambda: (ev / "versions.json").write_text('{"status": "ok"}'),
        "versions_missing": lambda: (ev / "versions.json").unlink(),
        "versions_dir": lambda: ((ev / "versions.json").unlink(), (ev / "versions.json").mkdir()),
        "environment_no_sides": lambda: (ev / "environment.json").write_text("{}"),
        "benchmark_missing": lambda: (ev / "benchmark.json").unlink(),
        "profile_corrupt": lambda: (ev / "profile.json").write_text("nope"),
        "drift_list": lambda: (ev / "drift.json").write_text("[1]"),
        "samples_corrupt": lambda: (run / "samples.parquet").write_bytes(b"garbage"),
        "samples_missing": lambda: (run / "samples.parquet").unlink(),
        "samples_wrong_columns": lambda: pd.DataFrame({"a": [1]}).to_parquet(run / "samples.parquet"),
        "incomplete_no_samples": lambda: ((run / "INCOMPLETE").write_text("interrupted by SIGINT\n"),
                                          (run / "samples.parquet").unlink()),
        "incomplete": lambda: (run / "INCOMPLETE").write_text("interrupted by SIGTERM\n"),
    }
    named = {"no_run_json": "run.json", "run_json_corrupt": "run.json", "run_json_list": "run.json",
             "run_json_no_model": "run.json", "run_json_binary": "run.json", "format_version": "run.json",
             "environment_no_sides": "environment.json", "benchmark_missing": "benchmark.json",
             "profile_corrupt": "profile.json", "drift_list": "drift.json"}
    spoils[what]()
    name = named.get(what) or ("samples.parquet" if what.startswith("samples") else
                               "versions.json" if what.startswith("versions") else "")
    return next(run.rglob(name)) if name and list(run.rglob(name)) else run


@pytest.mark.parametrize("what", ["no_run_json", "run_json_corrupt", "run_json_list", "run_json_no_model", "run_json_binary",
                                  "format_version", "versions_corrupt", "versions_list", "versions_no_sides",
                                  "versions_missing", "versions_dir", "environment_no_sides", "benchmark_missing",
                                  "profile_corrupt", "drift_list", "samples_corrupt", "samples_missing",
                                  "samples_wrong_columns", "incomplete_no_samples", "incomplete"])
def test_bad_run_folder(capsys, run_dir, what):
    before = (run_dir / "report.json").read_text()
    named = _spoil(run_dir, what)
    assert_one_line(*cli(capsys, "analyze", run_dir), str(named))
    assert (run_dir / "report.json").read_text() == before  # nothing rewritten


@pytest.mark.parametrize("where", ["missing", "file"])
def test_analyze_not_a_folder(capsys, tmp_path, where):
    path = tmp_path / "run"
    if where == "file":
        path.write_text("x")
    assert_one_line(*cli(capsys, "analyze", path), str(path), "run folder not found")


# --- an interrupted run stays marked -------------------------------------------------------------------------------
def test_interrupted_run_needs_allow_incomplete(capsys, run_dir):
    (run_dir / "INCOMPLETE").write_text("interrupted by SIGTERM at 2026-11-28T10:16:00Z\n")
    (run_dir / "evidence" / "variants.json").unlink()
    assert_one_line(*cli(capsys, "analyze", run_dir), "interrupted by SIGTERM", "--allow-incomplete")
    assert (run_dir / "INCOMPLETE").exists()

    code, _ = cli(capsys, "analyze", run_dir, "--allow-incomplete")
    assert code == 0
    assert (run_dir / "INCOMPLETE").read_text().startswith("interrupted by SIGTERM")  # kept
    report = json.loads((run_dir / "report.json").read_text())
    assert report["incomplete"] == "interrupted by SIGTERM at 2026-11-28T10:16:00Z"
    warning = report["warnings"][0]
    assert "interrupted by SIGTERM" in warning and "variants" in warning.split("missing evidence: ")[1].split(", ")
    assert warning in (run_dir / "report.md").read_text()


def test_interrupted_run_terminal_warning(capsys, run_dir):
    (run_dir / "INCOMPLETE").write_text("interrupted by SIGINT\n")
    code = main(["analyze", str(run_dir), "--allow-incomplete"])
    out = capsys.readouterr().out
    assert code == 0 and "warning: the run was interrupted (interrupted by SIGINT)" in out


def test_complete_run_has_no_incomplete(capsys, run_dir):
    assert cli(capsys, "analyze", run_dir)[0] == 0
    assert json.loads((run_dir / "report.json").read_text())["incomplete"] is None
    assert not (run_dir / "INCOMPLETE").exists()


# --- in-process and subprocess agree -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["manifest", "option"])
def test_in_process_matches_subprocess(env, capsys, case):
    if case == "manifest":
        write_manifest(env / "mlp" / "v2", serving={"threads": 100000})
        argv = [str(a) for a in compare(env)]
    else:
        argv = ["analyze", str(env), "--allow-incomplete"]
    code, lines = cli(capsys, *argv)
    result = run_cli(*argv)
    assert (code, lines) == (result.returncode, result.stderr.strip().splitlines())
    assert code == 2 and len(lines) == 1

