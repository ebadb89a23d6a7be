"""Request logs: one row per recorded request, one column per model input (in input order).

Cells are scalars, text, or (nested) lists of numbers. Loading validates every cell once, so that a NaN
or a stray string fails with the file, the column and the row, instead of deep inside a model.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.core.errors import UserError, first_line

READERS = {".parquet": pd.read_parquet, ".pq": pd.read_parquet, ".csv": pd.read_csv}


def _kind(cell) -> str:
    if isinstance(cell, (list, tuple, np.ndarray)):
        return "list"
    if isinstance(cell, str):
        return "text"
    if isinstance(cell, (bytes, bytearray)):
        return "bytes"
    if isinstance(cell, (bool, np.bool_)):
        return "number"
    if isinstance(cell, numbers.Number):
        return "number"
    return type(cell).__name__


def _check_list(cell, where: str, path: Path) -> None:
    """Every leaf of a (nested) list cell must be a finite number."""
    stack = [cell]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray) and item.dtype != object:
            if item.dtype.kind not in "biuf":
                raise UserError(f"{where}: list holds {item.dtype} values, expected numbers", path)
            if item.dtype.kind == "f" and not np.isfinite(item).all():
                raise UserError(f"{where}: list holds NaN or infinite values", path)
        elif isinstance(item, (list, tuple, np.ndarray)):
            stack.extend(item)
        elif isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Number):
            raise UserError(f"{where}: list holds {item!r} ({type(item).__name__}), expected numbers", path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise UserError(f"{where}: list holds {item}", path)


def _leaves(cell) -> int:
    """Number of scalars in a (nested) list cell: the size a request puts on the model."""
    if isinstance(cell, np.ndarray) and cell.dtype != object:
        return int(cell.size)
    if isinstance(cell, (list, tuple, np.ndarray)):
        return sum(_leaves(item) for item in cell)
    return 1


def validate(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame.shape[1] == 0:
        raise UserError("requests file has no columns", path)
    if frame.shape[0] == 0:
        raise UserError("requests file holds no requests (0 rows)", path)
    for column in frame.columns:
        values = frame[column].tolist()
        first_kind = None
        for row, cell in enumerate(values):
            where = f"column {column!r} row {row}"
            if cell is None or (isinstance(cell, float) and math.isnan(cell)):
                raise UserError(f"{where}: empty cell (null or NaN)", path)
            kind = _kind(cell)
            if kind not in ("list", "text", "bytes", "number"):
                raise UserError(f"{where}: unsupported cell type {kind}", path)
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind:
                raise UserError(f"{where}: holds {kind}, but row 0 holds {first_kind}", path)
            if kind == "number" and isinstance(cell, float) and not math.isfinite(cell):
                raise UserError(f"{where}: {cell}", path)
            if kind == "list":
                _check_list(cell, where, path)
    return frame


def load_requests(path: Path) -> pd.DataFrame:
    """Read and validate a request log (.parquet or .csv)."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"unsupported requests format {path.suffix!r}; use .parquet or .csv", path)
    if not path.is_file():
        raise UserError("requests file not found", path)
    try:
        frame = reader(path)
    except pd.errors.EmptyDataError:
        raise UserError("requests file is empty", path) from None
    except Exception as exc:  # pyarrow and pandas raise many types for a corrupt file
        raise UserError(f"cannot read requests file: {first_line(exc)}", path) from None
    return validate(frame.reset_index(drop=True), path)


def describe(frame: pd.DataFrame) -> dict:
    """A compact schema of a request log: column kinds and the size of list and text cells."""
    columns = {}
    for column in frame.columns:
        values = frame[column].tolist()
        kind = _kind(values[0])
        entry: dict = {"kind": kind}
        if kind == "list":
            sizes = np.array([_leaves(v) for v in values])
            entry.update(mean_len=float(sizes.mean()), max_len=int(sizes.max()))
        elif kind == "text":
            sizes = np.array([len(v) for v in values])
            entry.update(mean_len=float(sizes.mean()), max_len=int(sizes.max()))
        elif kind == "number":
            entry.update(dtype=str(frame[column].dtype))
        columns[str(column)] = entry
    return {"rows": int(len(frame)), "columns": columns}
