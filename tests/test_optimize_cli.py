"""The verify stage end to end: `diagnose optimize` and compare's stage on real TorchScript models and ONNX Runtime."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import ROOT, run_cli, write_manifest

SCHEMA = json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text())


@pytest.fixture
def cache_env(tmp_path):
    return {"DIAGNOSE_CACHE": str(tmp_path / "cache")}


def test_optimize_prints_the_pareto_table_and_caches_variants(tiny_registry, tmp_path, cache_env):
    args = ("optimize", "v2", "--registry", str(tiny_registry), "--model", "mlp", "--variants",
            "torch-eager,torch-int8,ort-all,ort-int8,tensorrt-fp16", "--budget", "2")
    result = run_cli(*args, "--out", str(tmp_path / "o1"), env=cache_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0].startswith(("fix confirmed: ", "no variant meets", "partial fix: "))
    assert "| ort-all |" in out and "| v2 |" in out
    # a TorchScript module cannot be quantized by torch: reported for its variant, the others still ran
    assert "| torch-int8 | failed: " in out
    assert "| tensorrt-fp16 | unavailable: " in out
    fix = json.loads((tmp_path / "o1" / "fix.json").read_text())
    rows = {r["name"]: r for r in fix["variants"]}
    assert rows["ort-all"]["accuracy"]["cosine"] > 0.9999 and rows["ort-all"]["accuracy_ok"]
    assert rows["ort-int8"]["accuracy"]["cosine"] > 0.98
    assert any(r["pareto"] for r in fix["variants"])
    first = json.loads((tmp_path / "o1" / "evidence" / "variants.json").read_text())
    assert not any(v["cached"] for v in first["variants"] if v["name"].startswith("ort-"))

    again = run_cli(*args, "--out", str(tmp_path / "o2"), "--json", env=cache_env)
    assert again.returncode == 0, again.stderr
    second = json.loads((tmp_path / "o2" / "evidence" / "variants.json").read_text())
    assert all(v["cached"] for v in second["variants"] if v["name"] in ("ort-all", "ort-int8"))
    assert json.loads(again.stdout)["version"] == "v2"


def test_unknown_variant_is_refused_with_the_choices(tiny_registry):
    result = run_cli("optimize", "v2", "--registry", str(tiny_registry), "--model", "mlp", "--variants", "ort-all,fast")
    assert result.returncode == 2 and "fast" in result.stderr and "ort-int8" in result.stderr


def test_compare_verifies_a_model_side_regression_and_finds_the_config_fix(tiny_registry, tmp_path, cache_env):
    """v2 = v1's model served on 1 thread instead of 2 (a heavier MLP so threads matter): the old-threads
    config variant must be measured, and the report carries a fix section that analyze remakes."""
    from conftest import save_mlp

    for version, threads in (("v1", 2), ("v2", 1)):
        folder = tiny_registry / "mlp" / version
        write_manifest(folder, serving={"threads": threads})
        save_mlp(folder / "model.pt", (1024, 1024), inputs=32, seed=0)
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--model", "mlp", "--old", "v1", "--new", "v2",
                     "--budget", "4", "--no-profile", "--verify", "--variants", "ort-all", "--out", str(out), "--json",
                     env=cache_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    fix = report["fix"]
    names = {r["name"] for r in fix["variants"]}
    assert {"v2", "ort-all", "v1-threads"} <= names
    threads = next(r for r in fix["variants"] if r["name"] == "v1-threads")
    assert threads["family"] == "config" and threads["accuracy"]["top1_agreement"] == 1.0
    assert fix["status"] in ("confirmed", "partial", "none") and fix["verdict"]
    assert "## Fix" in (out / "report.md").read_text()
    again = run_cli("analyze", str(out), "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["fix"] == fix


def test_no_verify_leaves_no_fix_section(tiny_registry, tmp_path):
    result = run_cli("compare", "--registry", str(tiny_registry), "--model", "mlp", "--old", "v1", "--new", "v2",
                     "--budget", "2", "--no-profile", "--no-verify", "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fix"] is None and report["evidence_sources"]["variants"]["status"] == "unavailable"
    assert not (tmp_path / "run" / "variant_samples.parquet").exists()
