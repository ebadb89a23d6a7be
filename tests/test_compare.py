"""`diagnose compare` end to end in a subprocess, on real TorchScript models; the run folder as contract."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import jsonschema
import pandas as pd
import pytest
from conftest import ROOT, make_tiny_registry, run_cli

SCHEMA = json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text())


def compare(registry: Path, out: Path, old="v1", new="v2", *extra: str):
    """The verify stage is test_verify's and test_optimize_cli's: off here (it would add ~10 s a compare)."""
    return run_cli("compare", "--registry", str(registry), "--model", "mlp", "--old", old, "--new", new,
                   "--budget", "4", "--no-verify", "--out", str(out), *extra)


@pytest.fixture(scope="module")
def shared_regression_run(tmp_path_factory):
    """One v1 -> v2 compare for the module's tests that read its run folder (each gets a copy of its own)."""
    root = tmp_path_factory.mktemp("compare")
    out = root / "run"
    result = compare(make_tiny_registry(root / "registry"), out, "v1", "v2", "--json")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


@pytest.fixture
def regression_run(shared_regression_run, tmp_path):
    """A copy of the shared run folder (tests may rewrite or delete its files) and the compare's report."""
    source, report = shared_regression_run
    copy = Path(shutil.copytree(source, tmp_path / "run"))
    # the report names its folder: as it reads from the copy's place (what `analyze` on the copy writes)
    moved = json.dumps(report).replace(str(source), str(copy))
    for name in ("report.json", "run.json"):  # run.json's command line names the folder too (report.json `reproduce`)
        (copy / name).write_text((copy / name).read_text().replace(str(source), str(copy)))
    return copy, json.loads(moved)


def test_regression_is_found_and_attributed_to_the_model(regression_run):
    out, report = regression_run
    jsonschema.validate(report, SCHEMA)
    assert report["verdict"] == "regression"
    delta = report["latency"]["delta"]
    assert delta["p50_pct"] > 25 and delta["p50_pct_ci"][0] > 1 and delta["p_value"] < 0.01
    assert report["latency"]["old"]["p50_ci"][0] <= report["latency"]["old"]["p50_ms"] <= report["latency"]["old"]["p50_ci"][1]
    model, inputs = report["attribution"]["model"], report["attribution"]["input"]
    assert model["significant"] and model["share"] > 0.8
    assert abs(inputs["share"]) < 0.2
    top = report["hypotheses"][0]
    assert top["cause"] == "model.compute_increase" and top["score"] > 0.5
    assert any("parameters" in line for line in top["evidence"])
    assert report["evidence_sources"]["benchmark"]["status"] == "ok"


def test_run_folder_holds_everything(regression_run):
    out, report = regression_run
    for name in ("run.json", "report.json", "report.md", "samples.parquet", "manifests/old.yaml", "manifests/new.yaml",
                 "evidence/versions.json", "evidence/requests.json", "evidence/environment.json", "evidence/benchmark.json",
                 "evidence/cgroup.json", "evidence/profile.json"):
        assert (out / name).is_file(), name
    assert not (out / "INCOMPLETE").exists()
    samples = pd.read_parquet(out / "samples.parquet")
    assert set(samples["cell"]) == {"old_model/old_requests", "new_model/new_requests",
                                    "new_model/old_requests", "old_model/new_requests"}
    assert (samples["latency_ms"] > 0).all()
    assert len(samples[samples["cell"] == "old_model/old_requests"]) == report["latency"]["old"]["n"]
    env = json.loads((out / "evidence" / "environment.json").read_text())
    assert env["old"]["cpu_model"] and env["old"]["libraries"]["torch"] and env["old"]["threads"] == 1
    assert json.loads((out / "report.json").read_text()) == report
    assert "## Likely causes" in (out / "report.md").read_text()
    cgroup = json.loads((out / "evidence" / "cgroup.json").read_text())
    assert cgroup["source"] == "cgroup" and cgroup["status"] in ("ok", "unavailable")
    assert report["evidence_sources"]["cgroup"]["status"] == cgroup["status"]
    assert not any("CPU-throttled" in w for w in report["warnings"])  # this machine's own cgroup has no quota
    gpu = report["evidence_sources"]["gpu"]  # sampled live around the benchmark; this machine has no GPU
    assert gpu["status"] in ("unavailable", "ok") and (gpu["status"] == "ok" or "NVML" in gpu["reason"] or "GPU" in gpu["reason"])
    assert report["evidence_sources"]["kubernetes"]["status"] == "unavailable"
    assert "has no deployment section" in report["evidence_sources"]["kubernetes"]["reason"]


def test_analyze_rebuilds_the_same_report_without_running_models(regression_run):
    out, report = regression_run
    (out / "report.json").unlink()
    result = run_cli("analyze", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == report
    assert json.loads((out / "report.json").read_text()) == report
    summary = run_cli("analyze", str(out))
    assert summary.stdout.startswith("REGRESSION:") and "model.compute_increase" in summary.stdout


def test_analyze_refuses_sample_sets_from_different_environments(regression_run):
    out, _ = regression_run
    path = out / "evidence" / "environment.json"
    env = json.loads(path.read_text())
    env["new"]["libraries"]["torch"] = "1.0.0"
    env["new"]["cpu_model"] = "Other CPU"
    path.write_text(json.dumps(env))
    refused = run_cli("analyze", str(out))
    assert refused.returncode == 2 and "different environments" in refused.stderr and "cpu_model" in refused.stderr
    allowed = run_cli("analyze", str(out), "--allow-env-mismatch", "--format", "json")
    assert allowed.returncode == 0, allowed.stderr
    report = json.loads(allowed.stdout)
    assert any("different environments" in w for w in report["warnings"])
    assert "runtime.library_change" in [h["cause"] for h in report["hypotheses"]]


def test_same_version_is_not_a_regression(tiny_registry, tmp_path):
    result = compare(tiny_registry, tmp_path / "aa", "v1", "v1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] != "regression"
    assert all(h["score"] <= 0.5 for h in report["hypotheses"])
    assert "same requests" in report["attribution"]["note"]


def test_serving_config_change_is_named(tiny_registry, tmp_path):
    manifest = tiny_registry / "mlp" / "v3" / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("batch_size: 1", "batch_size: 16"))
    result = compare(tiny_registry, tmp_path / "cfg", "v1", "v3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    causes = [h["cause"] for h in report["hypotheses"]]
    assert "serving.config_change" in causes
    assert any("serving.batch_size: 1 -> 16" in line for h in report["hypotheses"] for line in h["evidence"])


class WithOptionalFeature:
    """A new model that takes an optional second input: it serves old requests and new ones."""

    @staticmethod
    def save(path: Path) -> None:
        import torch

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = torch.nn.Sequential(torch.nn.Linear(32, 512), torch.nn.ReLU(), torch.nn.Linear(512, 4))
                self.extra = torch.nn.Linear(8, 4)

            def forward(self, x: torch.Tensor, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
                out = self.body(x)
                if extra is not None:
                    out = out + self.extra(extra)
                return out

        torch.jit.script(Model().eval()).save(str(path))


def test_cell_that_cannot_run_is_reported_and_compare_goes_on(tiny_registry, tmp_path):
    """New requests gained a column the old model does not take: that crossed cell is skipped, not fatal."""
    import numpy as np

    rng = np.random.default_rng(0)
    new_requests = tiny_registry / "mlp" / "v2" / "requests.parquet"
    pd.DataFrame({"x": [rng.normal(size=32).tolist() for _ in range(32)],
                  "extra": [rng.normal(size=8).tolist() for _ in range(32)]}).to_parquet(new_requests)
    WithOptionalFeature.save(tiny_registry / "mlp" / "v2" / "model.pt")
    result = compare(tiny_registry, tmp_path / "cells", "v1", "v2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    att = report["attribution"]
    assert set(att["unavailable"]) == {"old_model/new_requests"}
    assert "could not run" in att["note"]
    assert att["model"] is not None and att["input"] is not None and att["interaction"] is None
    schema = next(h for h in report["hypotheses"] if h["cause"] == "input.schema_change")
    assert any("column 'extra'" in line and "added" in line for line in schema["evidence"]), schema["evidence"]
    assert "extra" in schema["summary"]
    assert any("cannot serve the new requests" in line for line in schema["evidence"])


def test_no_factorial_runs_two_cells(tiny_registry, tmp_path):
    result = compare(tiny_registry, tmp_path / "nf", "v1", "v2", "--no-factorial", "--json")
    assert result.returncode == 0, result.stderr
    samples = pd.read_parquet(tmp_path / "nf" / "samples.parquet")
    assert set(samples["cell"]) == {"old_model/old_requests", "new_model/new_requests"}
    assert json.loads(result.stdout)["attribution"]["model"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_folder_marked_incomplete(tiny_registry, tmp_path, sig):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "diagnose", "compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2",
         "--budget", "60", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while not (out / "evidence" / "environment.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # inside the benchmark loop now
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert (out / "INCOMPLETE").read_text().startswith(f"interrupted by {sig.name}")
    assert not (out / "report.json").exists() and not (out / "samples.parquet").exists()
    assert not list(out.rglob(".*.tmp*")) and not [p for p in out.rglob(".*") if p.is_file()]
    analyzed = run_cli("analyze", str(out))
    assert analyzed.returncode == 2 and "incomplete" in analyzed.stderr
