"""Optimized variants of one loaded model version: the candidate fixes for a latency regression.

Each variant is the same model served another way (Olive's passes, by hand): int8 or compiled torch,
ONNX Runtime at each graph-optimization level, the transformers fusion optimizer, dynamic and static int8
quantization, session tuning, OpenVINO fp32 and NNCF int8 on the same export, TensorRT where a GPU exists.
Building never stops at one failure: a variant that cannot be built says why, in one line, and the others go
on, because "int8 is 2x faster" and "the export failed on a data-dependent branch" are both answers the
on-call engineer needs.

ONNX files and OpenVINO IR (the export and everything derived from it) are cached under `$DIAGNOSE_CACHE/variants`, keyed
by the artifact's content, the step, the toolchain versions and the sample inputs' shapes, so a second
look at the same version skips the minutes an export and a quantization take on a large model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import statistics
import time
import uuid
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diagnose.core.quiet import every_line, quiet
from profilers import openvino_variants
from profilers.dtypes import SERVING_DTYPES
from profilers.ort_session import describe as describe_session
from profilers.ort_session import input_plan, ort_runner, session_options, to_numpy
from profilers.runners import LoadedVersion, input_signature

BUILD_VERSION = "1"  # bump when a build step changes what it writes: old cache entries are then ignored

VARIANTS: dict[str, str] = {
    "torch-eager": "the version as loaded (the baseline)",
    "torch-int8": "torch dynamic int8 quantization of nn.Linear (quantize_dynamic, qint8)",
    "torch-compile": "torch.compile (inductor, default mode), warmed on the sample inputs",
    "ort-disabled": "ONNX Runtime fp32, graph optimizations off (ORT_DISABLE_ALL)",
    "ort-basic": "ONNX Runtime fp32, basic graph optimizations (ORT_ENABLE_BASIC)",
    "ort-extended": "ONNX Runtime fp32, extended graph optimizations (ORT_ENABLE_EXTENDED)",
    "ort-all": "ONNX Runtime fp32, all graph optimizations (ORT_ENABLE_ALL)",
    "ort-transformers": "ONNX Runtime transformers optimizer (attention/LayerNorm/GELU fusion, BERT-like graphs)",
    "ort-int8": "ONNX Runtime dynamic int8 quantization of the weights (QInt8)",
    "ort-int8-static": "ONNX Runtime static int8 quantization (QDQ) calibrated on the sample inputs (CNNs)",
    "ort-tuned": "ONNX Runtime fp32 with the fastest thread count and execution mode on this machine",
    "openvino-fp32": "OpenVINO fp32 on the CPU (ov.convert_model of the ONNX export, else of the torch module), latency hint",
    "openvino-int8": "OpenVINO int8 by NNCF post-training quantization, calibrated on the version's requests",
    "tensorrt-fp16": "TensorRT engine with fp16 kernels allowed (CUDA GPU)",
    "tensorrt-int8": "TensorRT engine with int8 kernels, calibrated on the sample inputs (CUDA GPU)",
}

_FAMILIES = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
_LEVELS = {"ort-disabled": "ORT_DISABLE_ALL", "ort-basic": "ORT_ENABLE_BASIC", "ort-extended": "ORT_ENABLE_EXTENDED",
           "ort-all": "ORT_ENABLE_ALL"}
_ATTENTION_PATH = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity"}  # what sits between Q.K^T and its Softmax
_TUNING_CALLS = 20


@dataclass
class Variant:
    name: str
    family: str  # "torch" | "onnxruntime" | "openvino" | "tensorrt"
    status: str  # "ok" | "failed" | "unavailable"
    reason: str | None
    build_s: float
    cached: bool
    artifact: str | None
    details: dict
    runner: Callable | None = field(default=None, repr=False)  # test it with `is None`: a compiled module refuses bool()

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "status": self.status, "reason": self.reason,
                "build_s": self.build_s, "cached": self.cached, "artifact": self.artifact, "details": self.details}

    def as_loaded(self, base: LoadedVersion) -> LoadedVersion:
        """This variant in the harness's shape: the version's manifest and preprocessing, this runner."""
        if self.runner is None:
            raise ValueError(f"variant {self.name} has no runner ({self.status}: {self.reason})")
        weight_bytes = self.details.get("weight_bytes", base.weight_bytes)
        if self.artifact and Path(self.artifact).is_file():
            weight_bytes = sum(p.stat().st_size for p in _artifact_files(Path(self.artifact)))
        if self.family in ("onnxruntime", "openvino"):
            sync = _no_sync  # session.run and infer return host arrays: nothing is left in flight
        elif self.family == "tensorrt":
            import torch

            sync = torch.cuda.synchronize
        else:
            sync = base.sync
        return LoadedVersion(base.manifest, self.runner, base.preprocess, base.param_count, weight_bytes, sync)


def _no_sync() -> None:
    return None


def _artifact_files(path: Path) -> list[Path]:
    """The model file and its weights file beside it: ONNX external data, or an OpenVINO IR's .bin."""
    if path.suffix == ".xml":
        return openvino_variants.ir_files(path)
    return [p for p in (path, path.with_name(path.name + ".data")) if p.is_file()]


class Unavailable(Exception):
    """The variant does not apply to this model or machine (not an error in building it)."""


class _NeedsExport(Exception):
    pass


class _ExportError(RuntimeError):
    """An export failure whose message already names the cause (so no exception type is prefixed to it)."""


def _error_line(exc: BaseException) -> str:
    """The real error's first non-empty line, prefixed by its type, capped for a one-line report.

    Not `diagnose.core.errors.first_line`: torch.onnx colours its messages, so the colour codes go before a
    line is picked, and the type leads the line because a variant's reason is read without its traceback.
    """
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch.onnx colours its messages
    text = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:400]


def _installed(package: str) -> str:
    """A package's version for a cache key ("none" when absent: the OpenVINO variants build without ONNX Runtime)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def default_cache_dir() -> Path:
    explicit = os.environ.get("DIAGNOSE_CACHE")
    if explicit:
        return Path(explicit).expanduser() / "variants"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diagnose" / "variants"


def _dynamic_dims(samples: list[tuple]) -> list[list[int]]:
    """Per input: dim 0 (the batch) and every dim whose size differs across the samples."""
    dims = []
    for position, first in enumerate(samples[0]):
        shape = tuple(getattr(first, "shape", ()))
        varying = {d for d in range(len(shape)) if len({tuple(s[position].shape)[d] for s in samples}) > 1}
        dims.append(sorted(varying | ({0} if shape else set())))
    return dims


class _Context:
    """What the variants of one build share: the version, its samples, the cache and the (memoized) ONNX steps."""

    def __init__(self, base: LoadedVersion, samples: list[tuple], cache_dir: Path, calibration: list[tuple] | None = None):
        import torch

        self.base, self.samples, self.cache_dir = base, samples, cache_dir
        self.calibration = calibration  # one request each, from the version's log; None: the samples stand in
        self.threads = base.manifest.serving.threads
        self.torch_version = torch.__version__
        self.signature = " ".join(input_signature(s) for s in samples)
        self._steps: dict[str, Any] = {}
        self._reference = None
        self._artifact_key = None

    # ---------------------------------------------------------------- cache
    def artifact_key(self) -> str:
        """The artifact's content hash; a python-format model's file is only its code, so its weights count too."""
        if self._artifact_key is None:
            manifest = self.base.manifest
            digest = hashlib.sha256(manifest.artifact_sha256().encode())
            if manifest.format == "python" and hasattr(self.base.model, "state_dict"):
                for name, tensor in self.base.model.state_dict().items():
                    digest.update(name.encode())
                    digest.update(to_numpy(tensor).tobytes())
            self._artifact_key = digest.hexdigest()
        return self._artifact_key

    def cached(self, step: str, filename: str, build: Callable[[Path], dict], extra: str = "") -> tuple[Path, dict, bool]:
        """Run `build(path)` into a fresh folder and publish it atomically, unless a finished one is there."""
        parts = [self.artifact_key(), step, BUILD_VERSION, self.torch_version, _installed("onnxruntime"), self.signature,
                 self.base.manifest.serving.precision, self.base.manifest.serving.device, extra]
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
        folder = self.cache_dir / f"{step}-{key}"
        if (folder / "meta.json").is_file() and (folder / filename).is_file():
            return folder / filename, json.loads((folder / "meta.json").read_text()), True
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = self.cache_dir / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            details = build(staging / filename)
            (staging / "meta.json").write_text(json.dumps(details, sort_keys=True))
            try:
                os.rename(staging, folder)
            except OSError:  # another process published the same step first: theirs is as good
                if not (folder / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder / filename, details, False

    def step(self, name: str, run: Callable[[], Any]):
        """Memoize a shared step (its result or its failure) across the variants of this build."""
        if name not in self._steps:
            try:
                self._steps[name] = (True, run())
            except Exception as exc:  # noqa: BLE001 - every failure is reported on the variants that need it
                self._steps[name] = (False, exc)
        ok, value = self._steps[name]
        if not ok:
            raise value
        return value

    def reference(self) -> list:
        """The version's own outputs on the samples, for checking an export."""
        if self._reference is None:
            import torch

            with torch.inference_mode():
                self._reference = [self.base.model(*s) for s in self.samples]
        return self._reference

    # ---------------------------------------------------------------- ONNX steps
    def export(self) -> tuple[Path, dict, bool]:
        def run():
            import torch

            manifest = self.base.manifest
            dynamo = isinstance(self.base.model, torch.nn.Module) and not isinstance(self.base.model, torch.jit.ScriptModule)
            needed = ("onnxruntime", "onnx", "onnxscript") if dynamo else ("onnxruntime", "onnx")
            missing = [name for name in needed if importlib.util.find_spec(name) is None]
            if missing:
                raise Unavailable(f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})")
            if manifest.format == "onnx":
                return manifest.artifact_path, {"exporter": "none (the artifact is already ONNX)"}, False
            return self.cached("export", "model.onnx", self._export)

        try:
            return self.step("export", run)
        except Unavailable:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, _ExportError) else _error_line(exc)
            raise _NeedsExport(f"needs the ONNX export, which failed: {reason}") from exc

    def _export(self, path: Path) -> dict:
        """torch.onnx.export: the TorchScript exporter for a ScriptModule, the dynamo (torch.export) one otherwise.

        On torch >= 2.9 the dynamo exporter refuses a ScriptModule ("Exporting a ScriptModule is not supported"),
        so TorchScript artifacts go through the legacy exporter (dynamo=False), which still reads their graph.
        Everything else (eager nn.Modules, torch.export's unflattened modules) goes through torch.export, which
        fails loudly on data-dependent Python control flow instead of baking in the branch a trace happened to take.
        """
        import torch

        model, sample = self.base.model, self.samples[0]
        if isinstance(model, torch.jit.ScriptModule) and self.base.manifest.format == "torchscript":
            model = _fresh_script_module(self.base)
        if not isinstance(model, torch.nn.Module):
            raise Unavailable(f"the version's model is a {type(model).__name__}, not a torch module: nothing to export")
        names = [f"input_{i}" for i in range(len(sample))]
        dims = _dynamic_dims(self.samples)
        start = time.perf_counter()
        # The exporters print progress and, when torch.export fails, whole graphs: keep them off the user's terminal.
        with torch.no_grad(), _quiet():
            if isinstance(model, torch.jit.ScriptModule):
                exporter = "torchscript (torch.onnx.export dynamo=False)"
                axes = {n: {d: f"{n}_dim{d}" for d in ds} for n, ds in zip(names, dims, strict=True) if ds}
                torch.onnx.export(model, sample, str(path), dynamo=False, input_names=names, dynamic_axes=axes,
                                  opset_version=17, do_constant_folding=True)
            else:
                exporter = "dynamo (torch.onnx.export dynamo=True, torch.export)"
                shapes = tuple({d: torch.export.Dim.DYNAMIC for d in ds} or None for ds in dims)
                try:
                    torch.onnx.export(model, sample, str(path), dynamo=True, input_names=names, dynamic_shapes=shapes,
                                      external_data=False, optimize=True, verbose=False)
                except Exception as exc:
                    # The exporter's own message is a page of next steps; the cause says what torch.export tripped on.
                    raise _ExportError(f"torch.export could not capture the model: {_error_line(exc.__cause__ or exc)}") from exc
        export_s = time.perf_counter() - start
        session = _session(self, path, "ORT_ENABLE_ALL", self.threads)
        worst = _verify(session, self.samples, self.reference())
        dynamic = {n: ds for n, ds in zip(names, dims, strict=True) if ds}
        return {"exporter": exporter, "export_s": round(export_s, 3), "dynamic_axes": dynamic, "verify_max_abs": worst,
                "opset": _opset(path)}

    def graph_ops(self) -> dict:
        """Op counts of the exported graph, and whether it holds attention (Softmax over a product of activations)."""
        import onnx

        path, _, _ = self.export()

        def run():
            graph = onnx.load(str(path), load_external_data=False).graph
            constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
            producer = {o: n for n in graph.node for o in n.output}
            counts: dict[str, int] = {}
            for node in graph.node:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            attention = counts.get("Attention", 0) + counts.get("MultiHeadAttention", 0)
            for node in graph.node:
                if node.op_type != "Softmax":
                    continue
                current = producer.get(node.input[0])
                for _ in range(6):
                    if current is None or current.op_type not in _ATTENTION_PATH | {"MatMul"}:
                        break
                    if current.op_type == "MatMul":
                        attention += all(i not in constants for i in current.input)
                        break
                    current = next((producer[i] for i in current.input if i in producer and i not in constants), None)
            return {"ops": counts, "attention": attention}

        return self.step("graph", run)

    def transformers(self) -> tuple[Path, dict, bool]:
        """onnxruntime.transformers' BERT fusion pass; num_heads/hidden_size 0 let it read them off the graph."""
        path, _, _ = self.export()
        if not self.graph_ops()["attention"]:
            raise Unavailable("not a transformer (no attention in the graph)")

        def build(out: Path) -> dict:
            from onnxruntime.transformers.optimizer import optimize_model

            with _quiet():
                optimized = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0)
            optimized.save_model_to_file(str(out))
            fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items()}
            details: dict = {"model_type": "bert", "fusions": fusions}
            missing = [op for op in ("Attention", "SkipLayerNormalization") if not fusions.get(op)]
            if missing:
                details["note"] = (f"fusions did not match: no {' or '.join(missing)} fused; the exported subgraph is not a "
                                   "pattern the optimizer knows (SDPA-based exports, e.g. onnxruntime#21208); "
                                   "the other fusions still apply")
            return details

        return self.step("transformers", lambda: self.cached("ort-transformers", "model.onnx", build))

    # ---------------------------------------------------------------- OpenVINO
    def openvino_ir(self) -> tuple[Path, dict, bool]:
        """The model as fp32 OpenVINO IR, converted from the ONNX export (the graph the ORT variants run, so the two
        runtimes are compared on one graph), else from the torch module when there is no export (ONNX tooling
        absent, or the exporter failed). A model neither route converts is `Unavailable`, with both reasons."""
        def run():
            manifest = self.base.manifest
            if manifest.format == "onnx":
                source, how, export = manifest.artifact_path, "the ONNX artifact (ov.convert_model)", None
            else:
                try:
                    source, export, _ = self.export()
                    how = "the ONNX export (ov.convert_model)"
                except (Unavailable, _NeedsExport) as exc:
                    return self._openvino_from_torch(str(exc))
            openvino = _installed("openvino")

            def build(out: Path) -> dict:
                start = time.perf_counter()
                with _quiet():
                    openvino_variants.save(openvino_variants.convert_onnx(source), out)
                return {"source": how, "convert_s": round(time.perf_counter() - start, 3), "openvino": openvino,
                        **({"export": export} if export else {})}

            try:
                return self.cached("openvino-ir", "model.xml", build, extra=f"onnx {openvino}")
            except Exception as exc:
                reason = f"ov.convert_model failed on {how.split(' (')[0]}: {_error_line(exc)}"
                if manifest.format == "onnx":
                    raise Unavailable(f"the model does not convert to OpenVINO: {reason}") from exc
                return self._openvino_from_torch(reason)

        return self.step("openvino-ir", run)

    def _openvino_from_torch(self, onnx_reason: str) -> tuple[Path, dict, bool]:
        import torch

        model = self.base.model
        if not isinstance(model, torch.nn.Module):
            raise Unavailable(f"the model does not convert to OpenVINO: {onnx_reason}")
        if isinstance(model, torch.jit.ScriptModule) and self.base.manifest.format == "torchscript":
            model = _fresh_script_module(self.base)
        openvino = _installed("openvino")

        def build(out: Path) -> dict:
            start = time.perf_counter()
            with _quiet():
                converted, how = openvino_variants.convert_torch(model, self.samples[0], _dynamic_dims(self.samples))
                openvino_variants.save(converted, out)
            return {"source": how, "convert_s": round(time.perf_counter() - start, 3), "openvino": openvino,
                    "onnx": onnx_reason}

        try:
            return self.cached("openvino-ir", "model.xml", build, extra=f"torch {openvino}")
        except Exception as exc:
            direct = _error_line(exc)
            direct = "the same error" if direct.split(": ", 1)[-1] in onnx_reason else direct
            raise Unavailable(f"the model does not convert to OpenVINO: {onnx_reason}; converting the torch module "
                              f"directly failed too: {direct}"[:600]) from exc


@contextmanager
def _quiet():
    """Keep a build step's chatter off the terminal: the exporters' progress lines and graphs, TracerWarnings,
    torch.onnx's registry warnings, ONNX Runtime's quantizer and optimizer advice ("consider pre-processing ..."),
    whether Python prints or logs it or C++ writes it to fd 1/2 (`diagnose.core.quiet`). What fails still raises,
    and its reason goes into the variant's one line."""
    chatter = io.StringIO()
    with quiet(every_line, fds=(1, 2)), redirect_stdout(chatter), redirect_stderr(chatter):
        yield


def _fresh_script_module(base: LoadedVersion):
    """A second copy of a TorchScript artifact, for the exporter alone.

    The TorchScript exporter runs the module's graph executor with autograd on; the executor keeps what it
    profiled there, and the served module then fails under torch.inference_mode ("Inference tensors cannot be
    saved for backward"), which is how the harness calls it. A deepcopy shares the executor; a fresh load does not.
    """
    import torch

    model = torch.jit.load(str(base.manifest.artifact_path), map_location="cpu").eval()
    dtype = SERVING_DTYPES.get(base.manifest.serving.precision)
    if dtype:
        model = model.to(getattr(torch, dtype))
    return model.to("cuda") if base.manifest.serving.device == "cuda" else model


def _reduce_range() -> bool:
    """Quantize weights to 7 bits on x86 CPUs without VNNI.

    There ORT's u8 x s8 integer kernels (AVX2 vpmaddubsw) add pairs of products in int16 and saturate: a plain
    QInt8 MLP comes out at cosine ~0.97 against fp32 on this kind of machine, ~0.9999 with reduce_range.
    PyTorch's x86 engine reduces the range for the same reason.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _providers(ctx: _Context) -> list[str]:
    import onnxruntime

    if ctx.base.manifest.serving.device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(ctx: _Context, path: Path, level: str, threads: int, parallel: bool = False, inter_op: int = 1):
    import onnxruntime as ort

    options = session_options(threads, inter_op, ctx.base.manifest.serving.ort_session_config)  # as served
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the fusion chatter of a quantized graph is not news
    return ort.InferenceSession(str(path), options, providers=_providers(ctx))


def _file_plan(path: Path) -> list[tuple[str, int, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return input_plan(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))


def _verify(session, samples: list[tuple], reference: list) -> float:
    """Run the session on every sample; the first output must have eager's shape. Returns the worst |difference|."""
    from profilers.accuracy import outputs_to_arrays

    run, worst = ort_runner(session), 0.0
    for sample, want in zip(samples, reference, strict=True):
        got, expected = outputs_to_arrays(run(*sample)), outputs_to_arrays(want)
        if len(got) != len(expected) or got[0].shape != expected[0].shape:
            raise RuntimeError(f"the exported graph returns {[list(a.shape) for a in got]}, eager "
                               f"{[list(a.shape) for a in expected]}")
        worst = max(worst, float(np.max(np.abs(got[0] - expected[0]))) if got[0].size else 0.0)
    return worst


def _ort_details(ctx: _Context, session, level: str, threads: int, parallel: bool = False, inter_op: int = 1) -> dict:
    """The session options a variant was timed with, which are the ones it would be deployed with."""
    options = describe_session(threads, inter_op, ctx.base.manifest.serving.ort_session_config)
    return {"graph_optimization_level": level, "intra_op_num_threads": threads, "inter_op_num_threads": inter_op,
            "execution_mode": "parallel" if parallel else "sequential", "providers": session.get_providers(),
            "allow_spinning": options["allow_spinning"], "spinning_stops_after_run": options["spinning_stops_after_run"],
            "session_config": options["config"]}


def _module_bytes(module) -> int | None:
    """Bytes of a module's state (quantized weights count one byte each); None when it has no state_dict."""
    if not hasattr(module, "state_dict"):
        return None
    total = 0

    def add(value):
        nonlocal total
        if hasattr(value, "element_size") and hasattr(value, "numel"):
            total += value.numel() * value.element_size()
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)

    for value in module.state_dict().values():
        add(value)
    return total


# -------------------------------------------------------------------- the variants
def _ok(runner: Callable, details: dict, artifact: Path | str | None = None, cached: bool = False) -> dict:
    return {"status": "ok", "runner": runner, "details": details, "artifact": str(artifact) if artifact else None,
            "cached": cached}


def _torch_eager(ctx: _Context, name: str) -> dict:
    return _ok(ctx.base.model, {"format": ctx.base.manifest.format, "module": type(ctx.base.model).__name__})


def _torch_int8(ctx: _Context, name: str) -> dict:
    import torch

    model = ctx.base.model
    if not isinstance(model, torch.nn.Module):
        raise Unavailable(f"the version's model is a {type(model).__name__}, not a torch module")
    if ctx.base.manifest.serving.device == "cuda":
        raise Unavailable("torch dynamic quantization runs on CPU only; this version serves on cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    swapped = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    if not swapped:
        if isinstance(model, torch.jit.ScriptModule):
            why = "a TorchScript module's layers are compiled RecursiveScriptModules, not nn.Linear (quantize before scripting)"
        elif isinstance(model, torch.fx.GraphModule):
            why = "a torch.export module calls aten.linear in its graph and holds no nn.Linear module"
        else:
            why = "the model has no nn.Linear layer"
        raise RuntimeError(f"quantize_dynamic swapped no nn.Linear: {why}")
    return _ok(quantized, {"dtype": "qint8", "quantized_linear": swapped, "engine": torch.backends.quantized.engine,
                           "weight_bytes": _module_bytes(quantized)})


def _torch_compile(ctx: _Context, name: str) -> dict:
    import torch

    model = ctx.base.model
    if not isinstance(model, torch.nn.Module):
        raise Unavailable(f"the version's model is a {type(model).__name__}, not a torch module")
    try:
        compiled = torch.compile(model)
    except Exception as exc:
        if isinstance(model, torch.jit.ScriptModule):  # "torch.compile does not support compiling torch.jit.script ..."
            raise Unavailable(_error_line(exc)) from None
        raise
    with torch.inference_mode():  # the harness calls models under inference_mode: warm the same guards
        for sample in ctx.samples:
            compiled(*sample)
    return _ok(compiled, {"backend": "inductor", "mode": "default", "warm_calls": len(ctx.samples)})


def _ort_level(ctx: _Context, name: str) -> dict:
    path, export, cached = ctx.export()
    level = _LEVELS[name]
    session = _session(ctx, path, level, ctx.threads)
    return _ok(ort_runner(session), {**_ort_details(ctx, session, level, ctx.threads), "export": export}, path, cached)


def _ort_transformers(ctx: _Context, name: str) -> dict:
    path, details, cached = ctx.transformers()
    session = _session(ctx, path, "ORT_ENABLE_ALL", ctx.threads)
    return _ok(ort_runner(session), {**_ort_details(ctx, session, "ORT_ENABLE_ALL", ctx.threads), **details}, path, cached)


def _ort_int8(ctx: _Context, name: str) -> dict:
    """Dynamic int8 weights (activations quantized on the fly), per output channel; after the fusions when they matched.

    Per-channel because one scale per weight matrix lets a few outlier columns (BERT's FFN has them) crush the
    rest: on the MiniLM classifier per-tensor int8 keeps ~0.94 of top-1 answers, per-channel ~0.98.
    """
    path, _, _ = ctx.export()
    optimized, fusions = None, {}
    if ctx.graph_ops()["attention"]:
        try:
            candidate, transformers, _ = ctx.transformers()
            fusions = transformers["fusions"]
            if fusions.get("Attention") or fusions.get("SkipLayerNormalization"):
                optimized = candidate
        except Exception:  # noqa: BLE001 - the plain export is still a fine input to the quantizer
            optimized = None
    reduce = _reduce_range()

    def build(out: Path) -> dict:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        details = {"quantization": "dynamic", "weight_type": "QInt8", "per_channel": True, "reduce_range": reduce,
                   "source": "export"}
        if optimized is not None:
            try:  # fused contrib ops (BiasGelu ...) defeat the quantizer's type inference: DefaultTensorType fills in
                with _quiet():
                    quantize_dynamic(str(optimized), str(out), weight_type=QuantType.QInt8, per_channel=True,
                                     reduce_range=reduce, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                return {**details, "source": "ort-transformers", "fusions": fusions}
            except Exception as exc:  # noqa: BLE001 - fall back to the unfused export, and say so
                details["note"] = f"quantizing the fused graph failed ({_error_line(exc)}); quantized the plain export"
        with _quiet():
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce)
        return details

    out, details, cached = ctx.cached("ort-int8", "model.onnx", build, extra=f"{optimized is not None} {reduce}")
    session = _session(ctx, out, "ORT_ENABLE_ALL", ctx.threads)
    return _ok(ort_runner(session), {**_ort_details(ctx, session, "ORT_ENABLE_ALL", ctx.threads), **details}, out, cached)


def _ort_int8_static(ctx: _Context, name: str) -> dict:
    """QDQ static int8, activations calibrated (MinMax) on the sample inputs: the usual recipe for CNNs on CPU."""
    path, _, _ = ctx.export()
    if not ctx.graph_ops()["ops"].get("Conv"):
        raise Unavailable("static quantization is for convolutional models (no Conv in the graph)")
    values = hashlib.sha256(b"".join(to_numpy(x).tobytes() for s in ctx.samples for x in s)).hexdigest()

    def build(out: Path) -> dict:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

        prepared, note = out.with_name("prepared.onnx"), None
        try:  # shape inference and Conv+BatchNorm folding first, as ORT's quantization guide asks
            with _quiet():
                quant_pre_process(str(path), str(prepared))
        except Exception as exc:  # noqa: BLE001 - quantizing the raw export still works, only less well
            prepared, note = path, f"pre-processing skipped: {_error_line(exc)}"
        plan = _file_plan(path)
        feeds = [{n: to_numpy(sample[i], dt) for n, i, dt in plan} for sample in ctx.samples]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(feeds)

            def get_next(self):
                return next(self.items, None)

        with _quiet():
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        if prepared != path:
            prepared.unlink(missing_ok=True)
        details = {"quantization": "static", "format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                   "per_channel": True, "reduce_range": reduce, "calibration": "MinMax", "calibration_batches": len(feeds)}
        return {**details, **({"note": note} if note else {})}

    reduce = _reduce_range()
    out, details, cached = ctx.cached("ort-int8-static", "model.onnx", build, extra=f"{values} {reduce}")
    session = _session(ctx, out, "ORT_ENABLE_ALL", ctx.threads)
    return _ok(ort_runner(session), {**_ort_details(ctx, session, "ORT_ENABLE_ALL", ctx.threads), **details}, out, cached)


def _ort_tuned(ctx: _Context, name: str) -> dict:
    """Time each (threads, execution mode) on the samples and keep the fastest: session tuning, as Olive does it."""
    path, export, cached = ctx.export()
    cores = os.cpu_count() or 1
    grid, best = [], None
    for threads in sorted({ctx.threads, cores}):
        for parallel in (False, True):
            inter_op = cores if parallel else 1
            session = _session(ctx, path, "ORT_ENABLE_ALL", threads, parallel, inter_op)
            run = ort_runner(session)
            for sample in ctx.samples[:3]:
                run(*sample)
            times = []
            for i in range(_TUNING_CALLS):
                sample = ctx.samples[i % len(ctx.samples)]
                t0 = time.perf_counter()
                run(*sample)
                times.append((time.perf_counter() - t0) * 1e3)
            entry = {"intra_op_num_threads": threads, "execution_mode": "parallel" if parallel else "sequential",
                     "inter_op_num_threads": inter_op, "median_ms": round(statistics.median(times), 4)}
            grid.append(entry)
            if best is None or entry["median_ms"] < best[0]["median_ms"]:
                best = (entry, session)
    entry, session = best
    details = {**_ort_details(ctx, session, "ORT_ENABLE_ALL", entry["intra_op_num_threads"],
                              entry["execution_mode"] == "parallel", entry["inter_op_num_threads"]),
               "grid": grid, "pick": entry, "calls_per_setting": _TUNING_CALLS, "export": export}
    return _ok(ort_runner(session), details, path, cached)


def _openvino(ctx: _Context, name: str) -> dict:
    """OpenVINO on the CPU, compiled as served (latency hint, the version's threads); int8 by NNCF on the requests."""
    needed = ("openvino", "nncf") if name == "openvino-int8" else ("openvino",)
    missing = [package for package in needed if importlib.util.find_spec(package) is None]
    if missing:
        raise Unavailable(f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})")
    if ctx.base.manifest.serving.device == "cuda":
        raise Unavailable("OpenVINO serves this model on the CPU (its GPU plugin is for Intel GPUs); this version "
                          "serves on cuda")
    path, details, cached = ctx.openvino_ir()
    if name == "openvino-int8":
        path, quantized, cached = _openvino_int8(ctx, path)
        details = {**details, **quantized}
    with _quiet():
        runner, compiled = openvino_variants.compile_runner(path, ctx.threads)
    return _ok(runner, {**compiled, **details}, path, cached)


def _openvino_int8(ctx: _Context, source: Path) -> tuple[Path, dict, bool]:
    """NNCF post-training quantization of the fp32 IR, calibrated on up to 300 of the version's requests."""
    calibration = (ctx.calibration or ctx.samples)[:openvino_variants.CALIBRATION_SAMPLES]
    origin = "the version's requests" if ctx.calibration else "the sample inputs (no requests given)"
    values = hashlib.sha256(b"".join(to_numpy(x).tobytes() for s in calibration for x in s)).hexdigest()
    overflow_fix = _reduce_range()

    def build(out: Path) -> dict:
        with _quiet():
            details = openvino_variants.quantize(source, out, calibration, overflow_fix)
        return {**details, "calibration_source": origin}

    extra = f"{_installed('openvino')} {_installed('nncf')} {values} {overflow_fix} {source.parent.name}"
    return ctx.cached("openvino-int8", "model.xml", build, extra=extra)


def _tensorrt(ctx: _Context, name: str) -> dict:
    """A TensorRT engine built from the ONNX export (TensorRT 10's Python API; never imported on a CPU-only path)."""
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("no CUDA GPU on this machine")
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise Unavailable(f"tensorrt not installed ({_error_line(exc)})") from None
    precision = name.split("-", 1)[1]
    if getattr(trt.BuilderFlag, precision.upper(), None) is None:
        raise Unavailable(f"TensorRT {trt.__version__} has no BuilderFlag.{precision.upper()}: 11.x builds strongly typed "
                          "networks only (convert the ONNX model first: ModelOpt AutoCast, or Q/DQ nodes for int8)")
    path, _, _ = ctx.export()
    index = {n: i for n, i, _ in _file_plan(path)}
    extra = f"{trt.__version__} {torch.cuda.get_device_name()}"  # an engine is tied to the TensorRT build and the GPU
    engine, details, cached = ctx.cached(
        name, "model.plan", lambda out: _trt_build(trt, path, out, precision, index, ctx.samples), extra=extra)
    return _ok(_trt_runner(trt, engine, index), details, engine, cached)


_TRT_DTYPES = (("FLOAT", "float32"), ("HALF", "float16"), ("BF16", "bfloat16"), ("INT32", "int32"), ("INT64", "int64"),
               ("INT8", "int8"), ("UINT8", "uint8"), ("BOOL", "bool"))


def _trt_dtype(trt, dtype):
    import torch

    for trt_name, torch_name in _TRT_DTYPES:
        if getattr(trt.DataType, trt_name, None) == dtype:
            return getattr(torch, torch_name)
    raise TypeError(f"TensorRT tensor type {dtype} has no torch equivalent")


def _trt_build(trt, onnx_path: Path, out: Path, precision: str, index: dict[str, int], samples: list[tuple]) -> dict:
    """Parse the ONNX file, allow fp16 or int8 kernels, profile the dynamic axes over the samples' shapes, build."""
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch, the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_flag(getattr(trt.BuilderFlag, precision.upper()))
    inputs = [network.get_input(k) for k in range(network.num_inputs)]
    profile, ranges = builder.create_optimization_profile(), {}
    for tensor in inputs:
        shapes = [tuple(sample[index[tensor.name]].shape) for sample in samples]
        low, high = tuple(min(d) for d in zip(*shapes, strict=True)), tuple(max(d) for d in zip(*shapes, strict=True))
        profile.set_shape(tensor.name, low, high, high)
        ranges[tensor.name] = {"min": list(low), "opt": list(high), "max": list(high)}
    config.add_optimization_profile(profile)
    calibrator, calibration = None, 0
    if precision == "int8":
        # Calibration runs at one fixed shape (the calibration profile's), so it sees the samples shaped like the first.
        first = [tuple(x.shape) for x in samples[0]]
        batches = [s for s in samples if [tuple(x.shape) for x in s] == first]
        fixed = builder.create_optimization_profile()
        for tensor in inputs:
            shape = first[index[tensor.name]]
            fixed.set_shape(tensor.name, shape, shape, shape)
        config.set_calibration_profile(fixed)
        device = [{t.name: torch.as_tensor(s[index[t.name]]).to("cuda", _trt_dtype(trt, t.dtype)).contiguous() for t in inputs}
                  for s in batches]
        calibrator, calibration = _trt_calibrator(trt, device), len(device)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    out.write_bytes(bytes(serialized))
    del calibrator
    return {"precision": precision, "tensorrt": trt.__version__, "profile": ranges, "calibration_batches": calibration}


def _trt_calibrator(trt, batches: list[dict]):
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(batches)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            batch = next(self.pending, None)
            return None if batch is None else [int(batch[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return Calibrator()


def _trt_runner(trt, engine_path: Path, index: dict[str, int]) -> Callable:
    """Run the engine on torch CUDA tensors as its buffers (execute_async_v3 on torch's current stream)."""
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    dtypes = {n: _trt_dtype(trt, engine.get_tensor_dtype(n)) for n in names}

    def run(*args):
        held = []  # the input buffers must outlive the enqueue; after it, the caching allocator orders reuse on the stream
        for name in inputs:
            x = torch.as_tensor(args[index[name]]).to("cuda", dtypes[name]).contiguous()
            held.append(x)
            context.set_input_shape(name, tuple(x.shape))
            context.set_tensor_address(name, x.data_ptr())
        results = []
        for name in outputs:
            y = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtypes[name], device="cuda")
            context.set_tensor_address(name, y.data_ptr())
            results.append(y)
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return results

    return run


_BUILDERS: dict[str, Callable[[_Context, str], dict]] = {
    "torch-eager": _torch_eager, "torch-int8": _torch_int8, "torch-compile": _torch_compile,
    "ort-disabled": _ort_level, "ort-basic": _ort_level, "ort-extended": _ort_level, "ort-all": _ort_level,
    "ort-transformers": _ort_transformers, "ort-int8": _ort_int8, "ort-int8-static": _ort_int8_static,
    "ort-tuned": _ort_tuned, "openvino-fp32": _openvino, "openvino-int8": _openvino,
    "tensorrt-fp16": _tensorrt, "tensorrt-int8": _tensorrt,
}


def build_variants(base: LoadedVersion, sample_inputs: list[tuple], names: list[str] | None = None,
                   cache_dir: Path | None = None, on_progress: Callable[[str], None] | None = None,
                   calibration_inputs: list[tuple] | None = None) -> list[Variant]:
    """Build the named variants (all of VARIANTS by default), one Variant each, in VARIANTS order.

    `sample_inputs` are a few prepared batches (what `base.prepare(frame)` returns): the export's example
    arguments, the evidence for which dimensions are dynamic, the calibration data and the tuning workload.
    `calibration_inputs` are the version's requests prepared one per input (up to
    `openvino_variants.CALIBRATION_SAMPLES` are used): what openvino-int8 calibrates on; without them the sample
    inputs stand in, and the variant's details say so.
    """
    unknown = [n for n in names or () if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if not sample_inputs:
        raise ValueError("build_variants needs at least one sample input")
    wanted = [n for n in VARIANTS if names is None or n in names]
    ctx = _Context(base, [tuple(s) for s in sample_inputs], Path(cache_dir) if cache_dir else default_cache_dir(),
                   [tuple(s) for s in calibration_inputs] if calibration_inputs else None)
    variants = []
    for name in wanted:
        if on_progress:
            on_progress(f"building variant {name}")
        family = _FAMILIES[name.split("-", 1)[0]]
        start = time.perf_counter()
        try:
            built = _BUILDERS[name](ctx, name)
            variant = Variant(name, family, "ok", None, 0.0, built["cached"], built["artifact"], built["details"],
                              built["runner"])
        except Unavailable as exc:
            variant = Variant(name, family, "unavailable", str(exc), 0.0, False, None, {})
        except _NeedsExport as exc:
            variant = Variant(name, family, "failed", str(exc), 0.0, False, None, {})
        except Exception as exc:  # noqa: BLE001 - one variant's failure is its result, never the end of the others
            variant = Variant(name, family, "failed", _error_line(exc), 0.0, False, None, {})
        variant.build_s = round(time.perf_counter() - start, 4)
        variants.append(variant)
    return variants
