"""Load one model version and turn request rows into model calls, whatever the artifact's format.

The same `LoadedVersion` serves every cell of the benchmark: a model is fed old or new requests through its
own preprocessing, because the preprocessing belongs to the version (it changes with it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from diagnose.core.errors import CellUnavailable, UserError, first_line
from diagnose.core.manifest import Manifest
from diagnose.core.quiet import quiet_libraries
from diagnose.core.requestlog import LOGGED_DTYPES
from profilers.dtypes import ONNX_NUMPY_DTYPES, SERVING_DTYPES
from profilers.ort_session import ort_runner, session_options


def import_from_version(manifest: Manifest, ref: str, key: str) -> Any:
    """Import "module:attr" from a .py file in the version folder, under a name unique to that file.

    v1 and v2 both ship a `preprocess.py`; a plain import would hand v2 the module v1 loaded first.
    """
    module_name, attr = ref.split(":")
    file = manifest.version_dir / (module_name.replace(".", "/") + ".py")
    if not file.is_file():
        raise UserError(f"module file not found: {file}", manifest.path, key)
    unique = "diagnose_registry_" + hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    module = sys.modules.get(unique)
    if module is None:
        spec = importlib.util.spec_from_file_location(unique, file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UserError(f"importing {file.name} failed: {type(exc).__name__}: {exc}", manifest.path, key) from None
        sys.modules[unique] = module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{file.name} has no {attr!r}", manifest.path, key) from None


def _to_dense(cell) -> np.ndarray:
    """A (nested, maybe ragged) list cell -> one dense array, ragged dimensions padded with 0."""
    if isinstance(cell, np.ndarray) and cell.dtype != object:
        return cell
    items = list(cell)
    if items and isinstance(items[0], (list, tuple, np.ndarray)):
        return _pad_stack(items)
    return np.asarray(items)


def _pad_stack(cells: list) -> np.ndarray:
    """Stack list cells into one array with a leading batch dimension, padding each dimension to the longest."""
    arrays = [_to_dense(c) for c in cells]
    ndim = max(a.ndim for a in arrays)
    arrays = [a.reshape(a.shape + (1,) * (ndim - a.ndim)) for a in arrays]
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(ndim))
    out = np.zeros((len(arrays),) + shape, dtype=np.result_type(*[a.dtype for a in arrays]))
    for i, a in enumerate(arrays):
        out[(i,) + tuple(slice(0, s) for s in a.shape)] = a
    return out


def collate(frame: pd.DataFrame) -> tuple:
    """Default batching with no preprocess: one tensor per column, in column order, in the dtype the log holds.

    Production feeds the model what the client sent: a client that starts sending float64 features makes a
    model that computes in its input's dtype slower, and a replay cast to float32 would hide it. A log with no
    dtypes of its own (CSV: `LOGGED_DTYPES` is False in the frame's attrs) is batched as float32 and int64.
    """
    import torch

    logged = frame.attrs.get(LOGGED_DTYPES, True)
    tensors = []
    for column in frame.columns:
        series = frame[column]
        first = series.iloc[0]
        if isinstance(first, str):
            raise CellUnavailable(f"column {column!r} holds text, and the model has no preprocess to encode it")
        array = _pad_stack(series.tolist()) if isinstance(first, (list, tuple, np.ndarray)) else series.to_numpy()
        if not logged and array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif not logged and array.dtype.kind in "iu":
            array = array.astype(np.int64)
        array = np.ascontiguousarray(array)
        tensors.append(torch.from_numpy(array if array.flags.writeable else array.copy()))  # torch refuses read-only
    return tuple(tensors)


def _as_tuple(inputs) -> tuple:
    if isinstance(inputs, dict):
        return tuple(inputs.values())
    if isinstance(inputs, (list, tuple)):
        return tuple(inputs)
    return (inputs,)


@dataclass
class LoadedVersion:
    manifest: Manifest
    model: Callable
    preprocess: Callable | None
    param_count: int | None
    weight_bytes: int | None
    sync: Callable[[], None]
    # what the artifact declares of each input: [{"name", "dtype", "shape" (None for a dynamic dim)}], or None when
    # the format declares nothing (TorchScript, python)
    input_spec: list[dict] | None = None
    # set when the model refused its inputs in the logged float dtype and the replay casts them, as the server that
    # serves it must: "float64 -> float32"; None while inputs go in as logged
    input_cast: str | None = None

    def prepare(self, frame: pd.DataFrame) -> tuple:
        """Requests -> model inputs on the serving device, in the dtype they were logged in (or the serving precision
        where `serving.cast_inputs` says the server casts them)."""
        raw = self.preprocess(frame) if self.preprocess else collate(frame)
        inputs = _as_tuple(raw)
        return tuple(self._place(x) for x in inputs)

    def _served_float(self):
        """The torch float dtype the version is served in (float32 unless fp16 or bf16)."""
        import torch

        return getattr(torch, SERVING_DTYPES.get(self.manifest.serving.precision, "float32"))

    def _float_dtype(self):
        """The float dtype inputs are cast to: the served one where the manifest (or the model) asks; else None."""
        if self.input_cast is None and not self.manifest.serving.cast_inputs:
            return None
        return self._served_float()

    def _place(self, value):
        import torch

        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            if self.manifest.serving.device == "cuda":
                value = value.to("cuda", non_blocking=False)
            dtype = self._float_dtype()
            if dtype is not None and value.is_floating_point() and value.dtype != dtype:
                value = value.to(dtype)
        return value

    def __call__(self, inputs: tuple):
        try:
            out = self.model(*inputs)
        except RuntimeError:
            retry = self._cast_after_refusal(inputs)
            if retry is None:
                raise
            out = self.model(*retry)
        self.sync()
        return out

    def _cast_after_refusal(self, inputs: tuple) -> tuple | None:
        """The model raised on float inputs in a dtype other than the one it is served in: a server could not have
        fed it those either, so it casts. Cast from now on (recorded in `input_cast`); None when that is not it."""
        import torch

        target = self._served_float()
        floats = {x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()}
        if self.input_cast is not None or not floats - {target}:
            return None
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in floats - {target}))
        self.input_cast = f"{names} -> {str(target).replace('torch.', '')}"
        return tuple(self._place(x) for x in inputs)


def input_elements(inputs: tuple) -> int:
    """How many scalars a batch puts on the model: the size evidence for preprocessing and input changes."""
    return int(sum(x.numel() if hasattr(x, "numel") else np.asarray(x).size for x in inputs))


def input_signature(inputs: tuple) -> str:
    """The inputs' dtypes and shapes, e.g. "(int64[1, 14], int64[1, 14])"."""
    return "(" + ", ".join(
        f"{str(getattr(x, 'dtype', type(x).__name__)).replace('torch.', '')}{list(getattr(x, 'shape', []))}" for x in inputs
    ) + ")"


def _load_torch(manifest: Manifest):
    import torch

    path = manifest.artifact_path
    if manifest.format == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if manifest.format == "exported":
        return torch.export.load(str(path)).module()
    factory = import_from_version(manifest, manifest.artifact, "artifact")
    return factory()


def _load_onnx(manifest: Manifest):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("format 'onnx' needs onnxruntime: pip install 'diagnose[onnx]'", manifest.path, "format") from None
    options = session_options(manifest.serving.threads, config=manifest.serving.ort_session_config)  # as served
    providers = ["CUDAExecutionProvider"] if manifest.serving.device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(manifest.artifact_path), options, providers=providers)
    run = ort_runner(session)  # fed in the graph's declared types, converted in the timed call as a server converts

    spec = [{"name": i.name, "dtype": np.dtype(ONNX_NUMPY_DTYPES[i.type]).name if i.type in ONNX_NUMPY_DTYPES else i.type,
             "shape": [d if isinstance(d, int) and d > 0 else None for d in i.shape]} for i in session.get_inputs()]
    return run, spec


def _exported_spec(module) -> list[dict] | None:
    """Placeholders of an exported program's module: their example dtypes and shapes, symbolic dims as None."""
    import torch

    spec = []
    for node in getattr(getattr(module, "graph", None), "nodes", []):
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, torch.Tensor):
            spec.append({"name": node.name, "dtype": str(value.dtype).replace("torch.", ""),
                         "shape": [d if isinstance(d, int) else None for d in value.shape]})
    return spec or None


def load_version(manifest: Manifest) -> LoadedVersion:
    """Load artifact and preprocess; a file that does not load is the user's to fix (exit 2). A version served on
    cuda loads on CPU where there is no CUDA device: its `manifest.serving.device` is then the replay's, "cpu"."""
    import torch

    if manifest.serving.device == "cuda" and not torch.cuda.is_available():
        # The on-call laptop has no GPU, the production signals do: replay on CPU, and say so (`replayed_on`)
        manifest = dataclasses.replace(manifest, serving=dataclasses.replace(manifest.serving, device="cpu"))
    with quiet_libraries():  # libraries' warnings, logging and bars while a version loads are not the tool's words
        preprocess = import_from_version(manifest, manifest.preprocess, "inputs.preprocess") if manifest.preprocess else None
    if manifest.format == "onnx":
        model, spec = _load_onnx(manifest)
        return LoadedVersion(manifest, model, preprocess, None, manifest.artifact_path.stat().st_size, lambda: None, spec)
    try:
        with quiet_libraries():
            model = _load_torch(manifest)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot load {manifest.format} artifact {manifest.artifact_path.name}: {first_line(exc)}",
                        manifest.path, "artifact") from None
    params = weight_bytes = None
    if isinstance(model, torch.nn.Module):
        if manifest.format != "exported":  # an exported program is traced in eval mode and refuses .eval()
            model.eval()
        params = sum(p.numel() for p in model.parameters())
        weight_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        dtype = SERVING_DTYPES.get(manifest.serving.precision)
        try:
            if dtype:
                model = model.to(getattr(torch, dtype))
            if manifest.serving.device == "cuda":
                model = model.to("cuda")
        except Exception as exc:
            raise UserError(f"cannot serve this {manifest.format} artifact as {manifest.serving.precision} on "
                            f"{manifest.serving.device}: {exc}", manifest.path, "serving") from None
    sync = torch.cuda.synchronize if manifest.serving.device == "cuda" else (lambda: None)
    spec = _exported_spec(model) if manifest.format == "exported" else None
    return LoadedVersion(manifest, model, preprocess, params, weight_bytes, sync, spec)
