"""How far an optimized variant's outputs are from the version it was built from.

A faster variant is only a fix if it still answers the same: int8 weights, fused kernels and fp16 all move
the numbers. The figures follow Polygraphy's output comparison (absolute and relative error, and the
`|a - b| <= atol + rtol * |ref|` check with its atol = rtol = 1e-5 defaults), plus what a classifier's owner
asks first: is the cosine of each score row still ~1, and does the top-1 class still agree?
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

ATOL = 1e-5  # Polygraphy's defaults
RTOL = 1e-5
_TINY = 1e-12  # the floor of |ref| in a relative error, so an exact 0 in the reference does not divide by zero


def outputs_to_arrays(outputs, floating_only: bool = False) -> list[np.ndarray]:
    """A model's output (tensor, numpy array, tuple/list, dict or HF ModelOutput, nested) -> float64 arrays, in order.

    Dicts keep their insertion order, which is the order a model returns them in (a ModelOutput is an ordered
    dict whose unset fields are absent); None entries (an output the model did not compute) are skipped.
    """
    arrays: list[np.ndarray] = []

    def walk(value) -> None:
        if value is None:
            return
        if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor; bf16/fp16 go through float32
            tensor = value.detach().cpu()
            if tensor.is_floating_point():
                tensor = tensor.float()
            elif floating_only:
                return
            arrays.append(np.asarray(tensor.numpy(), dtype=np.float64))
        elif isinstance(value, np.ndarray) or np.isscalar(value):
            if floating_only and np.asarray(value).dtype.kind != "f":
                return
            arrays.append(np.asarray(value, dtype=np.float64))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        else:
            raise TypeError(f"cannot turn a {type(value).__name__} model output into arrays")

    walk(outputs)
    return arrays


def _first(outputs, side: str, index: int) -> np.ndarray:
    """The scores: the first floating-point output (a recommender returning ids first, scores second is
    compared on its scores), else the first output of any type."""
    arrays = outputs_to_arrays(outputs, floating_only=True) or outputs_to_arrays(outputs)
    if not arrays:
        raise ValueError(f"{side} batch {index} has no output arrays")
    return arrays[0]


def _rows(array: np.ndarray) -> np.ndarray:
    """Rows along the last axis: [B, C] -> B rows of C; a 1-D output is one row; a scalar one row of one."""
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(-1, array.shape[-1])


def _row_cosines(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    cand_norm, ref_norm = np.linalg.norm(candidate, axis=1), np.linalg.norm(reference, axis=1)
    norms = cand_norm * ref_norm
    cosine = np.sum(candidate * reference, axis=1) / np.where(norms > 0, norms, 1.0)
    cosine = np.where(norms > 0, cosine, 0.0)
    return np.where((cand_norm == 0) & (ref_norm == 0), 1.0, cosine)  # two zero rows are the same answer


def _number(value: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite figure becomes None (null)."""
    value = float(value)
    return value if math.isfinite(value) else None


def compare_outputs(reference: list, candidate: list, atol: float = ATOL, rtol: float = RTOL) -> dict:
    """Compare a candidate's outputs with the reference's, batch by batch, pooled over all batches.

    `reference` and `candidate` hold one raw model output per batch (same batches, same order). Only the first
    floating-point output array of each batch is compared: by convention it is the logits or scores (HF models return logits
    first, torchvision and most serving code return the scores alone), while later outputs are auxiliaries
    (hidden states, attentions, indices) whose drift either follows the scores or does not matter to a caller.
    Relative error is Polygraphy's: |cand - ref| / |ref|, with |ref| floored at 1e-12.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} batches, candidate {len(candidate)}")
    if not reference:
        raise ValueError("no batches to compare")
    refs, cands = [], []
    for index, (ref_out, cand_out) in enumerate(zip(reference, candidate, strict=True)):
        ref, cand = _first(ref_out, "reference", index), _first(cand_out, "candidate", index)
        if ref.shape != cand.shape:
            raise ValueError(f"batch {index}: output shapes differ: reference {list(ref.shape)}, candidate {list(cand.shape)}")
        refs.append(ref)
        cands.append(cand)

    abs_diff = np.concatenate([np.abs(c - r).ravel() for c, r in zip(cands, refs, strict=True)])
    ref_abs = np.concatenate([np.abs(r).ravel() for r in refs])
    rel_diff = abs_diff / np.maximum(ref_abs, _TINY)
    with np.errstate(invalid="ignore"):
        within = bool(abs_diff.size == 0 or np.all(abs_diff <= atol + rtol * ref_abs))

    cosines, agree, rows = [], 0, 0
    classifier = all(r.ndim >= 2 and r.shape[-1] > 1 for r in refs)
    for c, r in zip(cands, refs, strict=True):
        c_rows, r_rows = _rows(c), _rows(r)
        rows += r_rows.shape[0]
        cosines.append(_row_cosines(c_rows, r_rows))
        if classifier:
            agree += int(np.sum(np.argmax(c_rows, axis=1) == np.argmax(r_rows, axis=1)))
    cosine = np.concatenate(cosines)
    empty = abs_diff.size == 0
    return {
        "batches": len(reference),
        "max_abs": _number(0.0 if empty else abs_diff.max()),
        "mean_abs": _number(0.0 if empty else abs_diff.mean()),
        "max_rel": _number(0.0 if empty else rel_diff.max()),
        "mean_rel": _number(0.0 if empty else rel_diff.mean()),
        "within_tolerance": within,
        "atol": atol,
        "rtol": rtol,
        "cosine": _number(cosine.mean()) if cosine.size else None,
        "cosine_min": _number(cosine.min()) if cosine.size else None,
        "top1_agreement": (agree / rows if rows else None) if classifier else None,
        "rows": rows,
    }
