"""Optimized variants built from real models with real torch and ONNX Runtime, checked against eager outputs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from conftest import save_mlp, write_manifest

from diagnose.core.manifest import load_manifest
from profilers import variants as variants_module
from profilers.accuracy import compare_outputs
from profilers.runners import LoadedVersion, load_version
from profilers.variants import VARIANTS, Variant, build_variants

ONNX_NAMES = ["ort-disabled", "ort-basic", "ort-extended", "ort-all", "ort-tuned", "ort-int8"]

MLP = """
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
"""

CNN = """
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()
"""

BRANCHY = """
import torch


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent Python control flow: torch.export cannot capture it
            return self.fc(x)
        return self.fc(-x)


def build():
    torch.manual_seed(0)
    return Branchy().eval()
"""

POOLED = """
import torch


class Pooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(100, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.embed(ids).mean(dim=1))


def build():
    torch.manual_seed(0)
    return Pooled().eval()
"""


def python_version(root: Path, name: str, code: str) -> LoadedVersion:
    folder = root / "models" / name
    write_manifest(folder, format="python", artifact="model:build")
    (folder / "model.py").write_text(code)
    return load_version(load_manifest(folder / "manifest.yaml"))


def by_name(variants: list[Variant]) -> dict[str, Variant]:
    return {v.name: v for v in variants}


def accuracy(base: LoadedVersion, variant: Variant, batches: list[tuple]) -> dict:
    with torch.inference_mode():
        return compare_outputs([base.model(*b) for b in batches], [variant.runner(*b) for b in batches])


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """Every variant of a small eager MLP, built once: (base, variants, cache_dir, seconds)."""
    root = tmp_path_factory.mktemp("mlp")
    base = python_version(root, "mlp", MLP)
    generator = torch.Generator().manual_seed(1)
    samples = [(torch.randn(batch, 32, generator=generator),) for batch in (1, 3, 2)]
    progress: list[str] = []
    start = time.perf_counter()
    built = build_variants(base, samples, cache_dir=root / "cache", on_progress=progress.append)
    return base, samples, built, root / "cache", time.perf_counter() - start, progress


@pytest.fixture(scope="module")
def mlp_eval():
    generator = torch.Generator().manual_seed(2)
    return [(torch.randn(batch, 32, generator=generator),) for batch in (5, 1, 7)]


def test_every_variant_is_built_once_in_registry_order(mlp):
    _, _, built, _, _, progress = mlp
    assert [v.name for v in built] == list(VARIANTS)
    assert len(progress) == len(VARIANTS) and all(name in line for name, line in zip(VARIANTS, progress, strict=True))
    for variant in built:
        record = variant.to_dict()
        assert "runner" not in record and record["name"] == variant.name
        json.dumps(record, allow_nan=False)
        assert variant.status in ("ok", "failed", "unavailable")
        assert (variant.status == "ok") == (variant.reason is None) == (variant.runner is not None), variant
        assert variant.family == {"torch": "torch", "ort": "onnxruntime", "tensorrt": "tensorrt",
                                  "openvino": "openvino"}[variant.name.split("-")[0]]


def test_ort_fp32_variants_match_eager(mlp, mlp_eval):
    base, _, built, _, _, _ = mlp
    variants = by_name(built)
    levels = {"ort-disabled": "ORT_DISABLE_ALL", "ort-basic": "ORT_ENABLE_BASIC", "ort-extended": "ORT_ENABLE_EXTENDED",
              "ort-all": "ORT_ENABLE_ALL"}
    for name in [*levels, "ort-tuned"]:
        variant = variants[name]
        assert variant.status == "ok", variant.reason
        result = accuracy(base, variant, mlp_eval)  # batch sizes the export never saw: batch is a dynamic axis
        assert result["cosine"] > 0.999 and result["within_tolerance"], (name, result)
        assert Path(variant.artifact).is_file() and variant.details["providers"] == ["CPUExecutionProvider"]
    for name, level in levels.items():
        details = variants[name].details
        assert details["graph_optimization_level"] == level
        assert details["intra_op_num_threads"] == base.manifest.serving.threads == 1  # the serving setting
        assert details["inter_op_num_threads"] == 1
        assert details["export"]["exporter"].startswith("dynamo")
        assert details["export"]["dynamic_axes"] == {"input_0": [0]}  # batch; the feature width never varied
    tuned = variants["ort-tuned"].details
    assert tuned["pick"] in tuned["grid"] and len(tuned["grid"]) >= 2
    assert min(tuned["grid"], key=lambda g: g["median_ms"]) == tuned["pick"]


def test_int8_variants_stay_close(mlp, mlp_eval):
    base, _, built, _, _, _ = mlp
    variants = by_name(built)
    for name in ("ort-int8", "torch-int8"):
        assert variants[name].status == "ok", variants[name].reason
        result = accuracy(base, variants[name], mlp_eval)
        # > 0.98 is the bar; > 0.995 also catches int16 saturation of u8 x s8 kernels on AVX2 without VNNI (~0.985)
        assert result["cosine"] > 0.995 and result["cosine_min"] > 0.99, (name, result)
        assert not result["within_tolerance"]  # int8 really changed the numbers: this is not the fp32 graph
    assert variants["torch-int8"].details["quantized_linear"] == 2
    ops = {n.op_type for n in onnx.load(variants["ort-int8"].artifact).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops


def test_torch_compile_and_eager(mlp, mlp_eval):
    base, _, built, _, _, _ = mlp
    variants = by_name(built)
    assert variants["torch-eager"].runner is base.model
    assert variants["torch-compile"].status == "ok", variants["torch-compile"].reason
    result = accuracy(base, variants["torch-compile"], mlp_eval)
    assert result["cosine"] > 0.9999 and result["top1_agreement"] == 1.0


def test_inapplicable_variants_say_why(mlp):
    variants = by_name(mlp[2])
    assert variants["ort-transformers"].status == "unavailable"
    assert variants["ort-transformers"].reason == "not a transformer (no attention in the graph)"
    assert variants["ort-int8-static"].status == "unavailable"
    assert variants["ort-int8-static"].reason.startswith("static quantization is for convolutional models")
    if not torch.cuda.is_available():
        for name in ("tensorrt-fp16", "tensorrt-int8"):
            assert variants[name].status == "unavailable" and variants[name].reason == "no CUDA GPU on this machine"


def test_as_loaded_runs_like_the_version(mlp):
    base, _, built, _, _, _ = mlp
    variant = by_name(built)["ort-int8"]
    loaded = variant.as_loaded(base)
    assert loaded.manifest is base.manifest and loaded.preprocess is base.preprocess and loaded.model is variant.runner
    assert loaded.weight_bytes == Path(variant.artifact).stat().st_size
    frame = pd.DataFrame({"x": [np.linspace(-1, 1, 32).astype(np.float32).tolist()] * 2})
    out = loaded(loaded.prepare(frame))
    assert np.asarray(out[0]).shape == (2, 4)
    with pytest.raises(ValueError, match="no runner"):
        by_name(built)["ort-transformers"].as_loaded(base)


def test_second_build_comes_from_the_cache(mlp):
    base, samples, built, cache_dir, _, _ = mlp
    first = by_name(built)
    start = time.perf_counter()
    again = by_name(build_variants(base, samples, names=["torch-eager", *ONNX_NAMES], cache_dir=cache_dir))
    elapsed = time.perf_counter() - start
    for name in ONNX_NAMES:
        assert again[name].status == "ok" and again[name].cached, name
        assert again[name].artifact == first[name].artifact
    assert not first["ort-all"].cached and not again["torch-eager"].cached
    # The first build exported and quantized; the second only opened sessions (ort-tuned still times its grid).
    first_cost = sum(first[name].build_s for name in ONNX_NAMES if name != "ort-tuned")
    assert sum(again[name].build_s for name in ONNX_NAMES if name != "ort-tuned") < 0.5 * first_cost
    assert elapsed < first_cost + first["ort-tuned"].build_s
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    # Other sample shapes are another export: the key holds the sample signature.
    other = build_variants(base, [(torch.randn(4, 32), )], names=["ort-all"], cache_dir=cache_dir)
    assert other[0].status == "ok" and not other[0].cached and other[0].artifact != first["ort-all"].artifact


def test_one_failing_variant_does_not_stop_the_others(mlp, monkeypatch):
    base, samples, _, cache_dir, _, _ = mlp

    def boom(ctx, name):
        raise MemoryError("out of memory while building\nsecond line")

    monkeypatch.setitem(variants_module._BUILDERS, "ort-basic", boom)
    built = by_name(build_variants(base, samples, names=["ort-disabled", "ort-basic", "ort-all"], cache_dir=cache_dir))
    assert built["ort-basic"].status == "failed"
    assert built["ort-basic"].reason == "MemoryError: out of memory while building"
    assert built["ort-disabled"].status == built["ort-all"].status == "ok"
    with pytest.raises(ValueError, match="unknown variant"):
        build_variants(base, samples, names=["ort-fastest"], cache_dir=cache_dir)


def test_torchscript_mlp_exports_through_the_torchscript_exporter(tmp_path):
    folder = tmp_path / "models" / "ts"
    write_manifest(folder)
    save_mlp(folder / "model.pt", (16,))
    base = load_version(load_manifest(folder / "manifest.yaml"))
    samples = [(torch.randn(batch, 32),) for batch in (1, 2)]
    names = ["torch-eager", "torch-int8", "torch-compile", "ort-all", "ort-int8"]
    built = by_name(build_variants(base, samples, names=names, cache_dir=tmp_path / "cache"))
    assert built["ort-all"].status == "ok" and built["ort-all"].details["export"]["exporter"].startswith("torchscript")
    assert built["ort-int8"].status == "ok"
    assert built["torch-int8"].status == "failed" and "TorchScript" in built["torch-int8"].reason
    assert built["torch-compile"].status == "unavailable" and "torch.jit.script" in built["torch-compile"].reason
    assert accuracy(base, built["ort-all"], [(torch.randn(6, 32),)])["within_tolerance"]
    # The export must leave the served module usable the way the harness calls it (under inference_mode).
    with torch.inference_mode():
        assert base.model(torch.randn(3, 32)).shape == (3, 4)


def test_static_int8_for_a_cnn(tmp_path):
    base = python_version(tmp_path, "cnn", CNN)
    generator = torch.Generator().manual_seed(1)
    samples = [(torch.rand(1, 3, 16, 16, generator=generator),) for _ in range(4)]
    built = by_name(build_variants(base, samples, names=["ort-all", "ort-int8-static", "ort-transformers"],
                                   cache_dir=tmp_path / "cache"))
    static = built["ort-int8-static"]
    assert static.status == "ok", static.reason
    assert static.details["format"] == "QDQ" and static.details["calibration_batches"] == 4
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(static.artifact).graph.node}
    result = accuracy(base, static, [(torch.rand(2, 3, 16, 16, generator=generator),) for _ in range(6)])
    assert result["cosine"] > 0.98 and result["max_abs"] > 0  # quantized, and still close
    assert built["ort-transformers"].status == "unavailable"


def test_export_failure_fails_onnx_variants_only(tmp_path):
    base = python_version(tmp_path, "branchy", BRANCHY)
    samples = [(torch.randn(1, 8),), (torch.randn(2, 8),)]
    names = ["torch-eager", "torch-int8", "ort-all", "ort-transformers", "ort-int8", "ort-tuned"]
    built = by_name(build_variants(base, samples, names=names, cache_dir=tmp_path / "cache"))
    assert built["torch-eager"].status == built["torch-int8"].status == "ok"
    for name in ("ort-all", "ort-transformers", "ort-int8", "ort-tuned"):
        assert built[name].status == "failed", name
        assert built[name].reason.startswith("needs the ONNX export, which failed: torch.export could not capture the model")
        assert "data-dependent" in built[name].reason and "\n" not in built[name].reason
    assert not (tmp_path / "cache").exists() or not [p for p in (tmp_path / "cache").iterdir()]


@pytest.mark.parametrize("fmt", ["python", "torchscript"])
def test_dynamic_axes_follow_the_samples(tmp_path, fmt):
    base = python_version(tmp_path, "pooled", POOLED)
    if fmt == "torchscript":
        folder = tmp_path / "models" / "pooled-ts"
        write_manifest(folder)
        torch.jit.script(base.model).save(str(folder / "model.pt"))
        base = load_version(load_manifest(folder / "manifest.yaml"))
    samples = [(torch.randint(1, 100, (1, 10)),), (torch.randint(1, 100, (1, 20)),)]
    variant = build_variants(base, samples, names=["ort-all"], cache_dir=tmp_path / "cache")[0]
    assert variant.status == "ok", variant.reason
    assert variant.details["export"]["dynamic_axes"] == {"input_0": [0, 1]}
    longer = [(torch.randint(1, 100, (1, 37)),), (torch.randint(1, 100, (3, 37)),)]
    result = accuracy(base, variant, longer)
    assert result["within_tolerance"], result
    assert np.asarray(variant.runner(*longer[1])[0]).shape == (3, 3)


@pytest.mark.slow
def test_textclf_minilm_variants(tmp_path):
    """The real MiniLM classifier (TorchScript): ONNX export, fusion statistics, int8 accuracy on 32 requests."""
    from diagnose.registry import Registry
    from fixtures.embedded import embedded_registry_root

    manifest = Registry(embedded_registry_root(), embedded=True).manifest("textclf", "v2")
    base = load_version(manifest)
    requests = pd.read_parquet(manifest.requests_path)
    samples = [base.prepare(requests.iloc[i : i + 1]) for i in range(8)]
    evaluation = [base.prepare(requests.iloc[i : i + 1]) for i in range(8, 40)]
    names = ["torch-eager", "ort-all", "ort-transformers", "ort-int8"]
    built = by_name(build_variants(base, samples, names=names, cache_dir=tmp_path / "cache"))
    for name in names:
        assert built[name].status == "ok", (name, built[name].reason)
    assert built["ort-all"].details["export"]["exporter"].startswith("torchscript")
    assert accuracy(base, built["ort-all"], evaluation[:8])["cosine"] > 0.9999

    fusions = built["ort-transformers"].details["fusions"]
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= set(fusions)
    assert fusions["SkipLayerNormalization"] > 0  # the residual LayerNorms of the 6 layers fuse
    if not fusions["Attention"]:
        assert "did not match" in built["ort-transformers"].details["note"]

    int8 = built["ort-int8"]
    with torch.inference_mode():
        reference = [base.model(*b) for b in evaluation]
        candidate = [int8.runner(*b) for b in evaluation]
    result = compare_outputs(reference, candidate)
    assert result["rows"] == 32 and result["cosine"] >= 0.99, result
    # The head's logits are 20 x cosine similarities, and some requests sit within 0.1 logit of the runner-up:
    # int8 may flip those. Every flip must be such a borderline request, and nearly all answers must stay.
    assert result["top1_agreement"] >= 0.9, result
    for ref, cand in zip(reference, candidate, strict=True):
        ref, cand = ref.numpy()[0], np.asarray(cand[0])[0]
        if ref.argmax() != cand.argmax():
            top_two = np.sort(ref)[-2:]
            assert top_two[1] - top_two[0] < 1.0, (ref, cand)


def test_onnx_artifact_is_used_as_is(mlp, tmp_path):
    """A version already in ONNX skips the export; the torch variants have no torch module to work on."""
    base, samples, built, _, _, _ = mlp
    folder = tmp_path / "models" / "onnx"
    write_manifest(folder, format="onnx", artifact="model.onnx")
    shutil.copyfile(by_name(built)["ort-all"].artifact, folder / "model.onnx")
    version = load_version(load_manifest(folder / "manifest.yaml"))
    result = by_name(build_variants(version, samples, names=["torch-int8", "torch-compile", "ort-all", "ort-int8"],
                                    cache_dir=tmp_path / "cache"))
    assert result["ort-all"].status == "ok" and result["ort-all"].artifact == str(folder / "model.onnx")
    assert result["ort-all"].details["export"]["exporter"].startswith("none")
    assert result["ort-int8"].status == "ok"
    assert accuracy(base, result["ort-all"], samples)["within_tolerance"]
    for name in ("torch-int8", "torch-compile"):
        assert result[name].status == "unavailable" and "not a torch module" in result[name].reason


def test_missing_onnxruntime_makes_onnx_variants_unavailable(mlp, monkeypatch, tmp_path):
    base, samples, _, _, _, _ = mlp
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = by_name(build_variants(base, samples, names=["torch-eager", "ort-all"], cache_dir=tmp_path / "cache"))
    assert result["torch-eager"].status == "ok"
    assert result["ort-all"].status == "unavailable" and result["ort-all"].reason.startswith("onnxruntime not installed")


def test_ort_variants_are_timed_with_the_session_options_they_are_served_with(mlp):
    """ORT's defaults (pools spin inside a run) unless the manifest sets its own; the benchmark adds only that the
    spinning stops when a run returns, and the details (the variant table's `runs as`) say so."""
    import dataclasses

    from profilers.ort_session import NO_SPINNING, session_options

    base, samples, built, cache, _, _ = mlp
    details = by_name(built)["ort-all"].details
    assert details["allow_spinning"] and details["spinning_stops_after_run"], details
    options = session_options(2)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # left to ORT's default: spinning
        options.get_session_config_entry("session.intra_op.allow_spinning")
    serving = dataclasses.replace(base.manifest.serving, ort_session_config=NO_SPINNING)
    configured = dataclasses.replace(base, manifest=dataclasses.replace(base.manifest, serving=serving))
    variant = by_name(build_variants(configured, samples, ["ort-all"], cache_dir=cache))["ort-all"]
    assert variant.status == "ok" and not variant.details["allow_spinning"]
    assert variant.details["session_config"]["session.intra_op.allow_spinning"] == "0"
    assert session_options(2, config=NO_SPINNING).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    from diagnose.verify import _runs_as

    assert _runs_as({"family": "onnxruntime", "details": details}, 2).endswith("pools spin in a run")
    assert _runs_as({"family": "onnxruntime", "details": variant.details}, 2).endswith("no spinning")
