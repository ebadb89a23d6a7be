"""`diagnose drift` through the real CLI, and the drift stage's evidence in a compare's run folder."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
from conftest import ROOT, run_cli, write_manifest


def _logs(tmp_path, rows=300):
    rng = np.random.default_rng(0)
    old = pd.DataFrame({
        "text": [" ".join(["word"] * int(n)) for n in rng.integers(5, 20, rows)],
        "price": rng.normal(10, 2, rows).astype(np.float32),
        "candidates": [rng.integers(0, 1000, 20).tolist() for _ in range(rows)],
    })
    new = pd.DataFrame({
        "text": [" ".join(["word"] * int(n)) for n in rng.integers(20, 80, rows)],
        "price": rng.normal(10, 2, rows).astype(np.float64),
        "candidates": [rng.integers(0, 1000, 80).tolist() for _ in range(rows)],
        "country": rng.choice(["de", "fr"], rows),
    })
    old.to_parquet(tmp_path / "old.parquet")
    new.to_parquet(tmp_path / "new.parquet")
    return tmp_path / "old.parquet", tmp_path / "new.parquet"


def test_drift_names_each_change(tmp_path):
    old, new = _logs(tmp_path)
    result = run_cli("drift", "--old-requests", str(old), "--new-requests", str(new), "--out", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "column 'country'" in out and "added" in out
    assert "column 'price': float32 -> float64" in out
    assert "candidates.len" in out and "text.words" in out
    report = json.loads((tmp_path / "d" / "evidence" / "drift.json").read_text())
    assert {"candidates.len", "text.chars", "text.words"} <= set(report["drifted"])
    assert "price" not in report["drifted"]  # same distribution, other dtype: a schema change, not drift
    sizes = pd.read_parquet(tmp_path / "d" / "evidence" / "request_sizes.parquet")
    assert len(sizes) == 600 and set(sizes["side"]) == {"old", "new"}
    assert (tmp_path / "d" / "drift.md").read_text().startswith("requests: ")


def test_identical_logs_report_no_drift(tmp_path):
    old, _ = _logs(tmp_path)
    result = run_cli("drift", "--old-requests", str(old), "--new-requests", str(old), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["identical"] and report["drifted"] == [] and report["schema_changes"] == []


def test_versions_take_their_manifests_requests_and_expected_schema(tiny_registry):
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1},
                   inputs={"requests": "requests.parquet", "schema": {"x": {"kind": "list", "rank": 1, "shape": [16]}}})
    result = run_cli("drift", "--registry", str(tiny_registry), "--model", "mlp", "--old", "v1", "--new", "v2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["paths"]["new"].endswith("v2/requests.parquet")
    assert [f["change"] for f in report["expected_schema"]] == ["shape"], report["expected_schema"]
    assert report["drifted"] == []  # v1 and v2 requests are one distribution with other seeds


def test_bad_input_is_one_line(tmp_path):
    old, _ = _logs(tmp_path)
    result = run_cli("drift", "--old-requests", str(old), "--new-requests", str(tmp_path / "missing.parquet"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing.parquet" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("drift", "--old-requests", str(old))
    assert result.returncode == 2 and "--new-requests" in result.stderr


def test_a_bad_inputs_schema_names_the_key(tiny_registry):
    write_manifest(tiny_registry / "mlp" / "v2", inputs={"requests": "requests.parquet", "schema": {"x": {"rank": "one"}}})
    result = run_cli("drift", "--registry", str(tiny_registry), "--model", "mlp", "--old", "v1", "--new", "v2")
    assert result.returncode == 2 and "inputs.schema.x.rank" in result.stderr and "Traceback" not in result.stderr


def _length_model(path):
    """A real TorchScript model whose cost grows with the length of its one list input."""
    import torch

    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(1, 256)
            self.out = torch.nn.Linear(256, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.up(x.unsqueeze(-1))).mean(1))

    torch.manual_seed(0)
    torch.jit.script(Pool().eval()).save(str(path))


def test_longer_requests_in_a_compare_are_tied_to_latency_and_analyze_remakes_it(tiny_registry, tmp_path):
    rng = np.random.default_rng(5)
    for version, (low, high) in (("v1", (20, 200)), ("v2", (600, 2000))):
        folder = tiny_registry / "mlp" / version
        _length_model(folder / "model.pt")
        pd.DataFrame({"x": [rng.normal(size=int(n)).astype(np.float32).tolist() for n in rng.integers(low, high, 80)]}
                     ).to_parquet(folder / "requests.parquet")
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--model", "mlp", "--old", "v1", "--new", "v2",
                     "--budget", "4", "--no-profile", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text()))
    assert report["verdict"] == "regression"
    assert "x.len" in [f["feature"] for f in report["drift"]["drifted"]]
    tie = report["drift"]["latency_tie"]
    assert tie["status"] == "ok" and tie["feature"] in ("x.len", "payload_bytes") and tie["significant"], tie
    assert 0.5 < tie["share"] < 1.5, tie["text"]
    top = report["hypotheses"][0]
    assert top["cause"] == "input.distribution_shift" and tie["feature"] in top["summary"]
    assert report["fix"] is None  # the inputs, not the model, lead: no verify stage by default
    assert report["evidence_sources"]["drift"]["status"] == "ok"
    again = run_cli("analyze", str(out), "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["drift"] == report["drift"]
