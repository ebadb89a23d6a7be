"""OpenVINO, the other CPU runtime a CPU-served model could move to: conversion, the compiled model as served,
and NNCF's post-training int8 quantization.

`profilers.variants` decides where the model comes from (its ONNX export, else the torch module) and caches
what this module writes; here is what OpenVINO itself needs to be told. Public reports of OpenVINO against ONNX
Runtime on CPU point both ways (it depends on the model, the CPU's instruction set and the thread count), so the
variants are timed beside the ONNX Runtime ones on the same export rather than assumed faster.

Everything imports `openvino` and `nncf` inside the functions: neither is a dependency of the toolkit, and
`import nncf` alone takes seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from profilers.ort_session import to_numpy

DEVICE = "CPU"
CALIBRATION_SAMPLES = 300  # NNCF's default subset_size: what its guide asks for, and what it calibrates on
_ATTENTION_PATH = {"Add", "Subtract", "Multiply", "Divide", "Select", "Convert"}  # between Q.K^T and its Softmax


def compile_config(threads: int) -> dict[str, Any]:
    """The compiled model as a latency-bound server runs it: one stream, the version's intra-op thread count, and
    fp32 arithmetic. OpenVINO's CPU plugin would otherwise run bf16 on CPUs that have it (AMX, AVX512_BF16): an
    `fp32` variant must compute in fp32, or its accuracy row would describe another precision."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}


def convert_onnx(path: Path):
    """ov.convert_model on an ONNX file; its dynamic axes stay dynamic dimensions."""
    import openvino as ov

    return ov.convert_model(str(path))


def convert_torch(model, sample: tuple, dynamic: list[list[int]]) -> tuple[Any, str]:
    """ov.convert_model on the torch module itself: (ov.Model, how).

    A TorchScript module is converted from its graph. Anything else goes through torch.export first, with the
    same dynamic dimensions as the ONNX export: OpenVINO would otherwise trace it with torch.jit.trace, which
    silently keeps the branch one example took where the model has data-dependent control flow.
    """
    import openvino as ov
    import torch

    with torch.no_grad():
        if isinstance(model, torch.jit.ScriptModule):
            return ov.convert_model(model, example_input=sample), "torchscript module (ov.convert_model)"
        shapes = tuple({d: torch.export.Dim.DYNAMIC for d in ds} or None for ds in dynamic)
        program = torch.export.export(model, sample, dynamic_shapes=shapes)
        return ov.convert_model(program), "torch.export program (ov.convert_model)"


def save(model, path: Path) -> None:
    """OpenVINO IR (model.xml + model.bin) with the weights as they are: save_model would halve them to fp16."""
    import openvino as ov

    ov.save_model(model, str(path), compress_to_fp16=False)


def ir_files(path: Path) -> list[Path]:
    """The IR's files: the graph and, beside it, its weights."""
    return [p for p in (path, path.with_suffix(".bin")) if p.is_file()]


def _feed_plan(ports) -> list[tuple[int, int, Any]]:
    """(port index, argument index, numpy dtype) per input; an input named input_<i> (the ONNX export's names) takes
    argument i, as in `profilers.ort_session.input_plan`, because an exporter may drop an input the graph never reads."""
    plan = []
    for position, port in enumerate(ports):
        index = position
        for name in port.get_names():
            suffix = name.removeprefix("input_")
            if name.startswith("input_") and suffix.isdigit():
                index = int(suffix)
        plan.append((position, index, port.get_element_type().to_dtype()))
    return plan


def feeder(ports) -> Callable[[tuple], dict]:
    """A model input tuple (torch tensors or arrays) -> OpenVINO's feed, in the graph's declared dtypes."""
    plan = _feed_plan(ports)
    return lambda args: {port: to_numpy(args[index], dtype) for port, index, dtype in plan}


def compile_runner(path: Path, threads: int) -> tuple[Callable, dict]:
    """Compile the IR for the CPU as served; (runner, details). The runner returns the outputs as numpy arrays.

    One infer request, reused, as a serving loop holds it; `infer` is synchronous and copies the outputs out, so
    nothing is left in flight when it returns.
    """
    import openvino as ov

    core = ov.Core()
    start = time.perf_counter()
    compiled = core.compile_model(core.read_model(str(path)), DEVICE, compile_config(threads))
    compile_s = time.perf_counter() - start
    request, feed, outputs = compiled.create_infer_request(), feeder(compiled.inputs), list(compiled.outputs)

    def run(*args):
        result = request.infer(feed(args))
        return [result[port] for port in outputs]

    details = {"runtime": "openvino", "openvino": ov.get_version(), "device": DEVICE, "performance_hint": "LATENCY",
               "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
               "num_streams": int(compiled.get_property("NUM_STREAMS")),
               "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
               "cpu_pinning": bool(compiled.get_property("ENABLE_CPU_PINNING")), "compile_s": round(compile_s, 3)}
    return run, details


def has_attention(model) -> bool:
    """Whether the graph holds attention: a Softmax over a MatMul of two activations (or a fused SDPA op), which is
    when NNCF's transformer scheme (SmoothQuant, the sensitive ops kept in fp32) is the right one."""
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "ScaledDotProductAttention":
            return True
        if kind not in ("Softmax", "SoftMax"):
            continue
        current = op.input_value(0).get_node()
        for _ in range(6):
            if current.get_type_name() == "MatMul":
                if all(current.input_value(i).get_node().get_type_name() != "Constant" for i in range(2)):
                    return True
                break
            if current.get_type_name() not in _ATTENTION_PATH:
                break
            upstream = [current.input_value(i).get_node() for i in range(current.get_input_size())]
            current = next((n for n in upstream if n.get_type_name() != "Constant"), None)
            if current is None:
                break
    return False


def quantize(source: Path, out: Path, calibration: list[tuple], overflow_fix: bool) -> dict:
    """nncf.quantize on the fp32 IR, calibrated on `calibration` (one request each), written to `out` as IR.

    `overflow_fix` widens NNCF's overflow fix from the first layer to all of them: weights in 7 bits on x86 CPUs
    without VNNI, whose u8 x s8 kernels add pairs of products in int16 and saturate (ONNX Runtime's reduce_range
    for the same reason). On a small MLP on such a CPU it moved the mean cosine against fp32 from 0.983 to 0.998.
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = ov.Core().read_model(str(source))
    transformer = has_attention(model)
    subset = min(CALIBRATION_SAMPLES, len(calibration))
    fix = OverflowFix.ENABLE if overflow_fix else OverflowFix.FIRST_LAYER
    start = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration, feeder(model.inputs)), subset_size=subset,
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
    quantize_s = time.perf_counter() - start
    save(quantized, out)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    if not fake_quantize:
        raise RuntimeError("nncf.quantize inserted no FakeQuantize op: nothing in the graph was quantized")
    return {"quantization": "nncf post-training (static int8: MinMax ranges, fast bias correction)",
            "nncf": nncf.__version__, "calibration_samples": subset,
            "model_type": "transformer" if transformer else "default", "overflow_fix": fix.value,
            "fake_quantize": fake_quantize, "quantize_s": round(quantize_s, 3)}
