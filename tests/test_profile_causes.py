"""The profiler stage tells kinds of model change apart: more work, slower work, lower precision given up."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, requests_frame, run_cli, write_manifest

SCHEMA = json.loads((ROOT / "diagnose" / "schemas" / "report.schema.json").read_text())


def _mlp(width: int = 256):
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, 4)).eval()


class WithCasts:
    """The same MLP, computing in float64 with casts around it: the same FLOPs on slower operators."""

    @staticmethod
    def build():
        import torch

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = _mlp().double()

            def forward(self, x):
                return self.net(x.to(torch.float64).contiguous()).to(torch.float32)

        return Model().eval()


def registry(tmp_path: Path, old_model, new_model) -> Path:
    import torch

    root = tmp_path / "registry"
    for version, model in (("v1", old_model), ("v2", new_model)):
        folder = root / "mlp" / version
        write_manifest(folder, serving={"threads": 1})
        torch.jit.script(model).save(str(folder / "model.pt"))
        requests_frame(seed=1).to_parquet(folder / "requests.parquet")
    return root


def compare(root: Path, tmp_path: Path) -> dict:
    result = run_cli("compare", "--registry", str(root), "--old", "v1", "--new", "v2", "--budget", "4",
                     "--no-verify", "--out", str(tmp_path / "run"), "--json")  # the variants are test_verify's
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    return report


def test_quantized_model_replaced_by_fp32_is_a_precision_change(tmp_path):
    import torch

    quantized = torch.ao.quantization.quantize_dynamic(_mlp(512), {torch.nn.Linear}, dtype=torch.qint8)
    report = compare(registry(tmp_path, quantized, _mlp(512)), tmp_path)
    assert report["verdict"] == "regression", report["summary"]
    old_mix = report["profile"]["totals"]["old_precision"]["low_precision_share"]
    assert old_mix > 0.3 and report["profile"]["totals"]["new_precision"]["low_precision_share"] < 0.05
    top = report["hypotheses"][0]
    assert top["cause"] == "model.precision_change", report["hypotheses"]
    assert any("low-precision or quantized ops" in line for line in top["evidence"])


def test_same_work_on_slower_operators_is_an_operator_regression(tmp_path):
    report = compare(registry(tmp_path, _mlp(), WithCasts.build()), tmp_path)
    assert report["verdict"] == "regression", report["summary"]
    signals = report["profile"]["totals"]
    assert signals["new_flops_per_step"] == pytest.approx(signals["old_flops_per_step"], rel=0.01)
    top = report["hypotheses"][0]
    assert top["cause"] == "model.operator_regression", report["hypotheses"]
    assert any("aten::to" in line or "aten::_to_copy" in line or "copies and casts" in line for line in top["evidence"])


def test_wider_model_is_compute_increase_with_flops(tmp_path):
    report = compare(registry(tmp_path, _mlp(64), _mlp(1024)), tmp_path)
    top = report["hypotheses"][0]
    assert top["cause"] == "model.compute_increase"
    assert any("FLOPs per step" in line for line in top["evidence"])
    run = tmp_path / "run"
    assert (run / report["profile"]["traces"]["old"]).is_file() and (run / report["profile"]["traces"]["new"]).is_file()
    # the folder is a TensorBoard logdir: <logdir>/<run>/<worker>.<ts>.pt.trace.json.gz
    runs = sorted(p.name for p in (run / "profile").iterdir())
    assert runs == ["new-v2", "old-v1"]
    assert "## Where the time went" in (run / "report.md").read_text()


def test_profiler_failure_degrades_and_says_so(tmp_path, tiny_registry):
    """A profiling stage that fails becomes an error record in evidence_sources; the report is still made."""
    import pandas as pd

    from diagnose.core.manifest import load_manifest
    from profilers.profiling import profile_pair
    from profilers.runners import load_version

    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--out", str(out), "--no-profile", "--no-verify", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["evidence_sources"]["profile"] == {"status": "unavailable", "reason": "stage skipped"}
    versions = {side: load_version(load_manifest(tiny_registry / "mlp" / v / "manifest.yaml"))
                for side, v in (("old", "v1"), ("new", "v2"))}
    from diagnose.core.runfolder import RunFolder

    folder = RunFolder(out)
    evidence = folder.write_evidence("profile", profile_pair(folder.profile_dir, versions, pd.DataFrame(
        {"text": ["no preprocess can encode this"] * 8}), relative_to=folder.path))
    assert evidence["status"] == "error" and "holds text" in evidence["reason"]
    analyzed = run_cli("analyze", str(out), "--format", "json")
    assert analyzed.returncode == 0, analyzed.stderr
    report = json.loads(analyzed.stdout)
    profile = report["evidence_sources"]["profile"]
    assert profile["status"] == "error" and "holds text" in profile["reason"]
    assert report["profile"] is None and report["verdict"] == "regression"
