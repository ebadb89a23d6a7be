"""OpenVINO variants built with real OpenVINO and NNCF from the test registry's real TorchScript MLP (and, slow, the
real MiniLM classifier), checked against the torch outputs, calibrated on the version's requests, cached, timed
side by side with ONNX Runtime, and reported unavailable with the reason where they cannot be built."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_registry, requests_frame, write_manifest
from test_variants import BRANCHY, by_name

from diagnose.core.manifest import load_manifest
from diagnose.core.runfolder import RunFolder
from diagnose.verify import _runs_as, fix_section, measure_variants
from profilers.accuracy import compare_outputs
from profilers.runners import load_version
from profilers.variant_samples import calibration_inputs, sample_inputs
from profilers.variants import _reduce_range, build_variants
from reports.sections import render_fix

HAVE_OPENVINO = all(importlib.util.find_spec(p) is not None for p in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino and nncf not installed (pip install openvino nncf)")
NAMES = ["ort-all", "ort-int8", "openvino-fp32", "openvino-int8"]


def hide(monkeypatch, *packages: str) -> None:
    """Make `packages` look uninstalled to the variant builders, which look them up with find_spec."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a))


def outputs(model, batches: list[tuple]) -> list:
    with torch.inference_mode():
        return [model(*b) for b in batches]


def first_input_range(xml: str) -> float:
    """The upper bound of the FakeQuantize on the model's input: the activation range NNCF calibrated."""
    import openvino as ov

    for op in ov.Core().read_model(xml).get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() == "Parameter":
            return float(np.max(op.input_value(2).get_node().get_data()))
    raise AssertionError("no FakeQuantize on the model input")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The tiny registry's mlp v1 (TorchScript, 1 serving thread, 64 logged requests), built once with the sample
    inputs and calibration requests the verify stage takes from its log."""
    root = tmp_path_factory.mktemp("openvino")
    manifest = load_manifest(make_tiny_registry(root / "registry") / "mlp" / "v1" / "manifest.yaml")
    base = load_version(manifest)
    requests = pd.read_parquet(manifest.requests_path)
    samples = sample_inputs(base, requests, manifest.serving.batch_size)
    calibration = calibration_inputs(base, requests)
    built = by_name(build_variants(base, samples, NAMES, cache_dir=root / "cache", calibration_inputs=calibration))
    generator = torch.Generator().manual_seed(5)
    evaluation = [(torch.randn(n, 32, generator=generator),) for n in (5, 1, 7, 16)]  # batch sizes never seen
    return SimpleNamespace(root=root, base=base, requests=requests, samples=samples, calibration=calibration,
                           built=built, cache=root / "cache", evaluation=evaluation)


@needs_openvino
def test_openvino_fp32_matches_torch_and_runs_as_served(mlp):
    variant = mlp.built["openvino-fp32"]
    assert variant.status == "ok" and variant.family == "openvino", variant.reason
    result = compare_outputs(outputs(mlp.base.model, mlp.evaluation), outputs(variant.runner, mlp.evaluation))
    assert result["within_tolerance"] and result["cosine"] > 0.9999 and result["top1_agreement"] == 1.0, result
    details = variant.details
    assert details["source"].startswith("the ONNX export")  # the graph the ORT variants run
    assert details["export"]["exporter"].startswith("torchscript")
    assert details["inference_num_threads"] == mlp.base.manifest.serving.threads == 1  # the serving setting
    assert (details["performance_hint"], details["num_streams"], details["inference_precision"]) == ("LATENCY", 1, "f32")
    xml = Path(variant.artifact)
    assert xml.suffix == ".xml" and xml.parent.parent == mlp.cache and xml.with_suffix(".bin").is_file()
    loaded = variant.as_loaded(mlp.base)
    assert loaded.weight_bytes == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    out = loaded(loaded.prepare(mlp.requests.iloc[:3]))
    assert np.asarray(out[0]).shape == (3, 4)
    assert _runs_as(variant.to_dict(), 1) == "OpenVINO CPU 1 threads, LATENCY hint, 1 stream, f32"


@needs_openvino
def test_openvino_int8_calibrates_on_the_versions_requests(mlp):
    variant = mlp.built["openvino-int8"]
    assert variant.status == "ok", variant.reason
    details = variant.details
    # NNCF asks for 300 samples; this version logged 64 requests, so all 64, one request each
    assert len(mlp.requests) == 64 and len(mlp.calibration) == 64
    assert all(tuple(x.shape) == (1, 32) for (x,) in mlp.calibration)
    assert details["calibration_samples"] == 64 and details["calibration_source"] == "the version's requests"
    assert details["fake_quantize"] > 0 and details["model_type"] == "default"  # an MLP: no attention
    assert 'type="FakeQuantize"' in Path(variant.artifact).read_text()
    # weights in 7 bits where u8 x s8 kernels saturate (no VNNI), as ort-int8's reduce_range
    assert details["overflow_fix"] == ("enable" if _reduce_range() else "first_layer_only")
    result = compare_outputs(outputs(mlp.base.model, mlp.evaluation), outputs(variant.runner, mlp.evaluation))
    # Static int8 of a 4-logit toy whose logits sit close together: close, and not always the same argmax (the
    # verify stage's accuracy limits then rule it out, which is its job); MiniLM's figures are in docs/verify.md.
    assert result["cosine"] > 0.98 and result["cosine_min"] > 0.8, result
    assert not result["within_tolerance"]  # int8 really changed the numbers: this is not the fp32 graph

    # The ranges come from those requests: the same requests ten times larger give a ten times wider input range,
    # and another quantized model (the calibration data is part of the cache key).
    scaled = [tuple(x * 10 for x in inputs) for inputs in mlp.calibration]
    again = build_variants(mlp.base, mlp.samples, ["openvino-int8"], cache_dir=mlp.cache, calibration_inputs=scaled)[0]
    assert again.status == "ok" and not again.cached and again.artifact != variant.artifact
    assert first_input_range(again.artifact) == pytest.approx(10 * first_input_range(variant.artifact), rel=1e-3)


def test_calibration_takes_up_to_300_requests_spread_over_the_log(mlp):
    log = requests_frame(rows=1000, seed=7)
    picked = calibration_inputs(mlp.base, log)
    assert len(picked) == 300 and all(tuple(x.shape) == (1, 32) for (x,) in picked)
    first, last = picked[0][0][0].numpy(), picked[-1][0][0].numpy()
    assert np.array_equal(first, log["x"].iloc[0]) and np.array_equal(last, log["x"].iloc[999])  # spread to the end
    assert len(calibration_inputs(mlp.base, log.iloc[:40])) == 40


@needs_openvino
def test_second_build_comes_from_the_cache(mlp):
    first = mlp.built
    again = by_name(build_variants(mlp.base, mlp.samples, NAMES, cache_dir=mlp.cache, calibration_inputs=mlp.calibration))
    for name in ("openvino-fp32", "openvino-int8"):
        assert again[name].status == "ok" and again[name].cached, name
        assert again[name].artifact == first[name].artifact
    assert not first["openvino-fp32"].cached and not first["openvino-int8"].cached
    assert again["openvino-int8"].build_s < 0.5 * first["openvino-int8"].build_s  # no calibration, no quantization
    assert not [p for p in mlp.cache.iterdir() if p.name.startswith(".")]  # no staging folder left behind


@needs_openvino
def test_the_table_says_which_runtime_wins_on_this_cpu(mlp, tmp_path):
    """measure_variants times OpenVINO beside ONNX Runtime (from the cache the fixture filled) and the table says,
    per OpenVINO row, which of the two was faster here, against the same precision."""
    folder = RunFolder.create(tmp_path / "run")
    evidence = measure_variants(folder, mlp.base, mlp.requests, NAMES, budget_s=2.0, cache_dir=mlp.cache)
    entries = {v["name"]: v for v in evidence["variants"]}
    assert all(entries[n]["cached"] for n in NAMES) and evidence["cpu"]
    fix = fix_section(folder, {"p99_ms": 50})
    rows = {r["name"]: r for r in fix.variants}
    assert rows["openvino-fp32"]["vs_onnxruntime"]["against"] == "ort-all"
    assert rows["openvino-int8"]["vs_onnxruntime"]["against"] == "ort-int8"
    table = render_fix(fix)
    for name in ("openvino-fp32", "openvino-int8"):
        duel = rows[name]["vs_onnxruntime"]
        low, high = duel["p50_pct_ci"]
        expected = "openvino" if high < 0 and duel["p50_pct"] <= -1 else "onnxruntime" if low > 0 and duel["p50_pct"] >= 1 \
            else "tie"
        assert duel["winner"] == expected, duel
        assert duel["summary"].startswith(f"OpenVINO against ONNX Runtime on {evidence['cpu']}: {name} p50 ")
        assert duel["summary"] in table
        assert f"| {name} | OpenVINO CPU 1 threads, LATENCY hint" in table


def _write_timings(run_dir: Path, medians: dict[str, float], accuracy: dict[str, float]) -> RunFolder:
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"cell": "new_model/new_requests" if name == "v2" else f"{name}_model/new_requests",
                            "latency_ms": median * (1 + rng.gamma(2.0, 0.02, 300))}) for name, median in medians.items()]
    folder = RunFolder(run_dir)
    folder.write_variant_samples(pd.concat(frames, ignore_index=True))
    family = {"ort": "onnxruntime", "openvino": "openvino"}
    variants = [{"name": n, "family": family[n.split("-")[0]], "status": "ok", "reason": None, "build_s": 1.0, "cached": False,
                 "artifact": None, "details": {}, "accuracy": {"cosine": accuracy.get(n, 0.9999), "top1_agreement": 1.0,
                                                                "max_abs": 1e-3}} for n in medians if n != "v2"]
    folder.write_evidence("variants", {"status": "ok", "version": "v2", "old": None, "rounds": 300, "variants": variants,
                                       "cpu": "Test CPU, 2 cores"})
    return folder


@pytest.mark.parametrize(("ov_ms", "winner"), [(6.0, "openvino"), (10.0, "onnxruntime"), (8.0, "tie")])
def test_the_winner_is_the_faster_runtime_at_the_same_precision(tmp_path, ov_ms, winner):
    """Against the fastest ORT variant of its precision (ort-tuned, not ort-int8, for fp32), past the noise."""
    folder = _write_timings(tmp_path, {"v2": 20.0, "ort-all": 9.0, "ort-tuned": 8.0, "ort-int8": 4.0,
                                       "openvino-fp32": ov_ms, "openvino-int8": 5.0}, {"ort-int8": 0.95})
    rows = {r["name"]: r for r in fix_section(folder, {}).variants}
    duel = rows["openvino-fp32"]["vs_onnxruntime"]
    assert duel["against"] == "ort-tuned" and duel["winner"] == winner, duel
    assert duel["summary"].startswith("OpenVINO against ONNX Runtime on Test CPU, 2 cores: openvino-fp32 p50 ")
    int8 = rows["openvino-int8"]["vs_onnxruntime"]
    assert int8["against"] == "ort-int8" and int8["winner"] == "onnxruntime"
    assert "ort-int8 is outside the accuracy limits (cosine 0.9500" in int8["summary"]  # the faster one, not usable


def test_without_an_onnxruntime_peer_the_table_says_so(tmp_path):
    folder = _write_timings(tmp_path, {"v2": 20.0, "openvino-fp32": 6.0}, {})
    fix = fix_section(folder, {})
    duel = {r["name"]: r for r in fix.variants}["openvino-fp32"]["vs_onnxruntime"]
    assert duel["winner"] is None and "no ONNX Runtime fp32 variant was measured beside openvino-fp32" in duel["summary"]
    assert duel["summary"] in render_fix(fix)


def test_missing_openvino_or_nncf_is_an_unavailable_row_with_the_reason(mlp, monkeypatch, tmp_path):
    hide(monkeypatch, "openvino")
    folder = RunFolder.create(tmp_path / "run")
    measure_variants(folder, mlp.base, mlp.requests, ["ort-all", "openvino-fp32", "openvino-int8"], budget_s=1.0,
                     cache_dir=mlp.cache)
    fix = fix_section(folder, {"p99_ms": 50})
    table = render_fix(fix)
    assert "| openvino-fp32 | unavailable: openvino not installed (pip install openvino) |" in table
    assert "| openvino-int8 | unavailable: openvino not installed (pip install openvino) |" in table
    assert "| ort-all |" in table  # the others were still built and timed
    if HAVE_OPENVINO:
        monkeypatch.undo()
        hide(monkeypatch, "nncf")
        built = by_name(build_variants(mlp.base, mlp.samples, ["openvino-fp32", "openvino-int8"], cache_dir=mlp.cache))
        assert built["openvino-fp32"].status == "ok"
        assert built["openvino-int8"].status == "unavailable"
        assert built["openvino-int8"].reason == "nncf not installed (pip install nncf)"


@needs_openvino
def test_unconvertible_model_is_unavailable_with_its_reason(tmp_path):
    folder = tmp_path / "models" / "branchy"
    write_manifest(folder, format="python", artifact="model:build")
    (folder / "model.py").write_text(BRANCHY)
    base = load_version(load_manifest(folder / "manifest.yaml"))
    samples = [(torch.randn(1, 8),), (torch.randn(2, 8),)]
    built = by_name(build_variants(base, samples, ["openvino-fp32", "openvino-int8"], cache_dir=tmp_path / "cache"))
    for name in ("openvino-fp32", "openvino-int8"):
        reason = built[name].reason
        assert built[name].status == "unavailable", name
        assert reason.startswith("the model does not convert to OpenVINO: needs the ONNX export, which failed: "
                                 "torch.export could not capture the model"), reason
        assert "converting the torch module directly failed too" in reason and "\n" not in reason


@needs_openvino
def test_without_onnx_tooling_the_torch_module_is_converted(mlp, monkeypatch):
    hide(monkeypatch, "onnxruntime")
    built = by_name(build_variants(mlp.base, mlp.samples, ["ort-all", "openvino-fp32"], cache_dir=mlp.cache))
    assert built["ort-all"].status == "unavailable"
    variant = built["openvino-fp32"]
    assert variant.status == "ok" and variant.details["source"].startswith("torchscript module"), variant.reason
    assert variant.details["onnx"].startswith("onnxruntime not installed")  # why the ONNX route was not taken
    assert variant.artifact != mlp.built["openvino-fp32"].artifact  # another route, another cache entry
    result = compare_outputs(outputs(mlp.base.model, mlp.evaluation), outputs(variant.runner, mlp.evaluation))
    assert result["within_tolerance"], result


@pytest.mark.slow
@needs_openvino
def test_minilm_classifier_converts_and_matches(monkeypatch, tmp_path):
    """The real MiniLM classifier (TorchScript) in OpenVINO fp32, from the TorchScript module: the ONNX route is the
    MLP's above, and the MiniLM export takes 15 s (tests/test_variants.py times it)."""
    import openvino as ov

    from diagnose.registry import Registry
    from fixtures.embedded import embedded_registry_root
    from profilers.openvino_variants import has_attention

    manifest = Registry(embedded_registry_root(), embedded=True).manifest("textclf", "v2")
    base = load_version(manifest)
    requests = pd.read_parquet(manifest.requests_path)
    hide(monkeypatch, "onnxruntime")
    start = time.perf_counter()
    variant = build_variants(base, [base.prepare(requests.iloc[:1])], ["openvino-fp32"], cache_dir=tmp_path / "cache")[0]
    assert variant.status == "ok", variant.reason
    assert time.perf_counter() - start < 60
    assert variant.details["inference_num_threads"] == manifest.serving.threads == 2
    evaluation = [base.prepare(requests.iloc[i : i + 1]) for i in range(0, 400, 50)]
    result = compare_outputs(outputs(base.model, evaluation), outputs(variant.runner, evaluation))
    assert result["rows"] == 8 and result["cosine"] > 0.9999 and result["top1_agreement"] == 1.0, result
    assert result["max_abs"] < 1e-3, result
    assert has_attention(ov.Core().read_model(variant.artifact))  # NNCF's transformer scheme would apply
