"""Load one model version and turn request rows into model calls, whatever the artifact's format.

The same `LoadedVersion` serves every cell of the benchmark: a model is fed old or new requests through its
own preprocessing, because the preprocessing belongs to the version (it changes with it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from diagnose.core.errors import CellUnavailable, UserError, first_line
from diagnose.core.manifest import Manifest
from profilers.dtypes import ONNX_NUMPY_DTYPES, SERVING_DTYPES
from profilers.ort_session import session_options


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
    """Default batching with no preprocess: one tensor per column, in column order."""
    import torch

    tensors = []
    for column in frame.columns:
        values = frame[column].tolist()
        if isinstance(values[0], str):
            raise CellUnavailable(f"column {column!r} holds text, and the model has no preprocess to encode it")
        array = _pad_stack(values) if isinstance(values[0], (list, tuple, np.ndarray)) else np.asarray(values)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iub":
            array = array.astype(np.int64)
        tensors.append(torch.from_numpy(np.ascontiguousarray(array)))
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

    def prepare(self, frame: pd.DataFrame) -> tuple:
        """Requests -> model inputs, on the serving device and in the serving precision."""
        raw = self.preprocess(frame) if self.preprocess else collate(frame)
        inputs = _as_tuple(raw)
        return tuple(self._place(x) for x in inputs)

    def _place(self, value):
        import torch

        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            if self.manifest.serving.device == "cuda":
                value = value.to("cuda", non_blocking=False)
            dtype = SERVING_DTYPES.get(self.manifest.serving.precision)
            if dtype and value.is_floating_point():
                value = value.to(getattr(torch, dtype))
        return value

    def __call__(self, inputs: tuple):
        out = self.model(*inputs)
        self.sync()
        return out


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
    options = session_options(manifest.serving.threads)  # no spinning: the old and new versions interleave on the same cores
    providers = ["CUDAExecutionProvider"] if manifest.serving.device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(manifest.artifact_path), options, providers=providers)
    names = [i.name for i in session.get_inputs()]

    def run(*inputs):
        feed = {n: (x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)) for n, x in zip(names, inputs, strict=False)}
        return session.run(None, feed)

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
    """Load artifact and preprocess; a file that does not load is the user's to fix (exit 2)."""
    import torch

    if manifest.serving.device == "cuda" and not torch.cuda.is_available():
        raise UserError("is 'cuda' but no CUDA device is available on this machine", manifest.path, "serving.device")
    preprocess = import_from_version(manifest, manifest.preprocess, "inputs.preprocess") if manifest.preprocess else None
    if manifest.format == "onnx":
        model, spec = _load_onnx(manifest)
        return LoadedVersion(manifest, model, preprocess, None, manifest.artifact_path.stat().st_size, lambda: None, spec)
    try:
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
