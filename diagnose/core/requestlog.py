"""Request logs: one row per recorded request, one column per model input (in input order).

Cells are scalars, text, or (nested) lists of numbers. Loading validates every cell once, so that a NaN
or a stray string fails with the file, the column and the row, instead of deep inside a model.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from diagnose.core import feast_logs
from diagnose.core.errors import UserError, first_line

SUFFIXES = (".parquet", ".pq", ".csv")
# The frame attribute that says whether the columns carry the client's dtypes: a Parquet log does (a float64
# column is what the client sent), a CSV log does not (its float64 is only the CSV parser's default).
LOGGED_DTYPES = "diagnose_logged_dtypes"
# The frame attribute of a log read from a Feast log folder: what was read (window, rows, values not PRESENT)
FEAST = "diagnose_feast"


def _arrow_lists(arrow_type: pa.DataType):
    return pd.ArrowDtype(arrow_type) if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) else None


def _as_is(table: pa.Table) -> pd.DataFrame:
    """An Arrow table without the copies: float columns zero-copy (split_blocks), Arrow buffers freed as they convert
    (self_destruct), and list columns left Arrow-backed (pd.ArrowDtype): no Python object per cell, and the list
    analysis reads lengths straight from the offsets. `.to_numpy()` on such a column still gives one ndarray per row
    (pd.NA for a null)."""
    return table.to_pandas(split_blocks=True, self_destruct=True, types_mapper=_arrow_lists)


def _read_parquet_as_is(path: Path) -> pd.DataFrame:
    """Parquet memory-mapped (the decoder reads the page cache directly: no file-sized copy), then `_as_is`."""
    return _as_is(pq.read_table(path, memory_map=True))


def _read(path: Path, parquet, table_to_frame, feast=None) -> pd.DataFrame:
    """The one set of file checks: format, presence, a readable file, at least one column and one row. A folder is a
    Feast feature log (`diagnose.core.feast_logs`): the rows and columns `feast` (a FeastRows) chooses of it."""
    path = Path(path)
    if path.is_dir():
        table, summary = feast_logs.read_log(path, feast)
        frame = table_to_frame(table)
        frame.attrs.update({LOGGED_DTYPES: True, FEAST: summary})
        return frame
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"unsupported requests format {path.suffix!r}; use .parquet, .pq, .csv or a Feast log folder",
                        path)
    if not path.is_file():
        raise UserError("requests file not found", path)
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError("requests file is empty", path) from None
    except Exception as exc:  # pyarrow and pandas raise many types for a corrupt file
        raise UserError(f"cannot read requests file: {first_line(exc)}", path) from None
    if frame.shape[1] == 0:
        raise UserError("requests file has no columns", path)
    if frame.shape[0] == 0:
        raise UserError("requests file holds no requests (0 rows)", path)
    frame = frame.reset_index(drop=True)
    frame.attrs[LOGGED_DTYPES] = suffix != ".csv"
    return frame


def read_requests(path: Path, feast=None) -> pd.DataFrame:
    """A request log as it is, for drift (in `diagnose drift` and in a compare alike): nulls and odd cells kept,
    since drift reports them as findings; list columns left in Arrow, since at a million rows the read is most of
    drift's wall time. `feast`: the rows a Feast log folder gives this side (`feast_logs.rows_by_side`)."""
    return _read(path, _read_parquet_as_is, _as_is, feast)


def digest(path: Path) -> str:
    """sha256 of a request log: the file's bytes, or a Feast log folder's files (`feast_logs.digest`)."""
    path = Path(path)
    if path.is_dir():
        return feast_logs.digest(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def load_requests(path: Path, feast=None) -> pd.DataFrame:
    """A request log to replay through a model: read with the same checks as `read_requests` (the same rows of a
    Feast log folder, in the same order), then every cell validated (a null, a NaN or a stray string fails here,
    naming the column and row, not deep in a model)."""
    path = Path(path)
    return validate(_read(path, pd.read_parquet, pa.Table.to_pandas, feast), path)


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


def _cells_equal(x, y) -> bool:
    x_null, y_null = _is_null(x), _is_null(y)
    if x_null or y_null:
        return x_null and y_null
    if isinstance(x, (list, tuple, np.ndarray)) or isinstance(y, (list, tuple, np.ndarray)):
        if not (isinstance(x, (list, tuple, np.ndarray)) and isinstance(y, (list, tuple, np.ndarray))) or len(x) != len(y):
            return False
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype != object and y.dtype != object:
            return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f" and y.dtype.kind == "f"))
        return all(_cells_equal(i, j) for i, j in zip(x, y, strict=True))
    return type(x) is type(y) and bool(x == y)


def _is_null(cell) -> bool:
    return cell is None or cell is pd.NA or cell is pd.NaT or (isinstance(cell, float) and math.isnan(cell))


def identical(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """The one meaning of "both sides replay identical requests": the same columns in order, the same dtypes
    and the same cells in the same row order (cheap columns first). Then the input effect is nil by design."""
    if old.shape != new.shape or [str(c) for c in old.columns] != [str(c) for c in new.columns]:
        return False
    if [str(t) for t in old.dtypes] != [str(t) for t in new.dtypes]:
        return False
    positions = sorted(range(old.shape[1]), key=lambda i: old.dtypes.iloc[i] == np.dtype(object))
    for i in positions:
        x, y = old.iloc[:, i], new.iloc[:, i]
        if x.dtype != object:
            if not x.reset_index(drop=True).equals(y.reset_index(drop=True)):
                return False
            continue
        if not all(_cells_equal(p, q) for p, q in zip(x.to_numpy(), y.to_numpy(), strict=True)):
            return False
    return True
