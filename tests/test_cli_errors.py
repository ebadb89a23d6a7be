"""Bad input ends with one clear line naming the file (and key) and exit code 2, never a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, write_manifest


def assert_user_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def compare(registry: Path, *extra: str):
    return run_cli("compare", "--registry", str(registry), "--model", "mlp", "--old", "v1", "--new", "v2",
                   "--budget", "1", "--out", str(registry.parent / "run"), *extra)


def test_malformed_yaml(tiny_registry):
    manifest = tiny_registry / "mlp" / "v2" / "manifest.yaml"
    manifest.write_text("name: mlp\nversion: [v2\n")
    assert_user_error(compare(tiny_registry), str(manifest), "not valid YAML")


@pytest.mark.parametrize("override, key", [
    ({"format": "keras"}, "format"),
    ({"serving": {"threads": 0}}, "serving.threads"),
    ({"serving": {"device": "tpu"}}, "serving.device"),
    ({"inputs": "requests.parquet"}, "inputs"),
    ({"slo": {"p99_ms": -3}}, "slo.p99_ms"),
    ({"inputs": {"requests": "requests.parquet", "preprocess": "no_colon"}}, "inputs.preprocess"),
])
def test_invalid_key(tiny_registry, override, key):
    manifest = write_manifest(tiny_registry / "mlp" / "v2", **override)
    assert_user_error(compare(tiny_registry), str(manifest), f"{key}:")


def test_missing_key(tiny_registry):
    manifest = tiny_registry / "mlp" / "v2" / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("format: torchscript\n", ""))
    assert_user_error(compare(tiny_registry), str(manifest), "format: is missing")


def test_missing_artifact(tiny_registry):
    (tiny_registry / "mlp" / "v2" / "model.pt").unlink()
    assert_user_error(compare(tiny_registry), "artifact: artifact not found", "model.pt")


def test_corrupt_artifact(tiny_registry):
    (tiny_registry / "mlp" / "v2" / "model.pt").write_bytes(b"not a torchscript archive")
    assert_user_error(compare(tiny_registry), "artifact: cannot load torchscript artifact model.pt")


@pytest.mark.parametrize("field, value", [("artifact", "../v1/model.pt"), ("artifact", "/etc/passwd"),
                                          ("inputs", {"requests": "../../secrets.parquet"})])
def test_path_escaping_version_folder(tiny_registry, field, value):
    manifest = write_manifest(tiny_registry / "mlp" / "v2", **{field: value})
    assert_user_error(compare(tiny_registry), str(manifest), "leaves the version folder")


def test_unknown_model(tiny_registry):
    result = run_cli("compare", "--registry", str(tiny_registry), "--model", "nope", "--old", "v1", "--new", "v2")
    assert_user_error(result, "unknown model 'nope'", "mlp")


def test_unknown_version(tiny_registry):
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v9")
    assert_user_error(result, "unknown version 'v9'", "v1, v2, v3")


def test_missing_registry(tmp_path):
    assert_user_error(run_cli("compare", "--registry", str(tmp_path / "none"), "--old", "v1", "--new", "v2"),
                      "registry folder not found")


def test_empty_requests_file(tiny_registry):
    path = tiny_registry / "mlp" / "v2" / "requests.parquet"
    pd.DataFrame({"x": pd.Series([], dtype=object)}).to_parquet(path)
    assert_user_error(compare(tiny_registry), str(path), "no requests (0 rows)")


def test_zero_byte_csv(tiny_registry, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert_user_error(compare(tiny_registry, "--new-requests", str(path)), str(path), "empty")


def test_nan_cell(tiny_registry, tmp_path):
    path = tmp_path / "nan.parquet"
    pd.DataFrame({"x": [[0.1] * 32, [0.2] * 31 + [math.nan]]}).to_parquet(path)
    assert_user_error(compare(tiny_registry, "--new-requests", str(path)), str(path), "column 'x' row 1", "NaN")


def test_null_cell(tiny_registry, tmp_path):
    path = tmp_path / "null.parquet"
    pd.DataFrame({"x": [[0.1] * 32, None]}).to_parquet(path)
    assert_user_error(compare(tiny_registry, "--new-requests", str(path)), "column 'x' row 1: empty cell")


def test_wrongly_typed_cell(tiny_registry, tmp_path):
    path = tmp_path / "typed.parquet"
    pd.DataFrame({"x": [["0.1"] * 32, ["oops"] * 32]}).to_parquet(path)
    assert_user_error(compare(tiny_registry, "--new-requests", str(path)), "column 'x' row 0", "expected numbers")


def test_text_column_without_preprocess(tiny_registry, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("x\n1.5\nhello\n")
    assert_user_error(compare(tiny_registry, "--new-requests", str(path)), str(path), "column 'x' holds text",
                      "no preprocess")


def test_requests_missing(tiny_registry, tmp_path):
    assert_user_error(compare(tiny_registry, "--old-requests", str(tmp_path / "gone.parquet")), "requests file not found")


def test_out_folder_not_empty(tiny_registry):
    out = tiny_registry.parent / "run"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert_user_error(compare(tiny_registry), "--out folder exists and is not empty")
    assert (out / "keep.txt").read_text() == "user data"


def test_analyze_not_a_run_folder(tmp_path):
    assert_user_error(run_cli("analyze", str(tmp_path)), "not a diagnose run folder")


def test_bad_budget():
    result = run_cli("compare", "--old", "v1", "--new", "v2", "--budget", "-1")
    assert result.returncode == 2 and "must be > 0" in result.stderr
