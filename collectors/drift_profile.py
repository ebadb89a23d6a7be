"""Drift's one pass over each column of a request log: its kind, nulls, values and size features (`Profile`).

Every column is analysed once; `schema()`, `size_features()` and the drift tests all read the same profile.
Number and bool columns are handled here; text and list columns by `drift_text` and `drift_lists`.
"""

from __future__ import annotations

import numbers
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa

from collectors.drift_column import Column, categorical_domain, wire_bytes
from collectors.drift_lists import analyse_arrow_lists, analyse_list_cells
from collectors.drift_text import analyse_text


class Profile:
    """Every column of one frame analysed once; schema(), size_features() and the drift tests all read it."""

    def __init__(self, frame: pd.DataFrame):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        self.frame = frame
        self.rows = int(len(frame))
        self.columns: dict[str, Column] = {}
        payload = np.zeros(self.rows)
        for position in range(frame.shape[1]):
            name = str(frame.columns[position])
            column = _analyse(name, frame.iloc[:, position])
            self.columns[name] = column
            payload += column.payload
        self.payload = payload

    def sizes(self) -> dict[str, tuple[str, np.ndarray]]:
        """Size feature name -> (source column, float64 per row), in column order, payload_bytes last."""
        out = {}
        for name, column in self.columns.items():
            for feature, values in column.sizes.items():
                out[feature] = (name, values)
        out["payload_bytes"] = ("*", self.payload)
        return out

    def schema(self) -> dict:
        return {"rows": self.rows, "columns": {name: column.schema() for name, column in self.columns.items()}}


def _cell_kind(cell) -> str:
    if isinstance(cell, (list, tuple, np.ndarray)):
        return "list"
    if isinstance(cell, str):
        return "text"
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(cell, (bool, np.bool_)):
        return "bool"
    if isinstance(cell, numbers.Number):
        return "number"
    return "other"


def _analyse(name: str, series: pd.Series) -> Column:
    rows = len(series)
    dtype = series.dtype
    column = Column(name=name, kind="empty", dtype=str(dtype), rows=rows, nulls=0)
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        dtype = series.dtype
    null = series.isna().to_numpy(dtype=bool)
    column.nulls = int(null.sum())
    if column.nulls == rows:
        return column
    arrow_type = dtype.pyarrow_dtype if isinstance(dtype, pd.ArrowDtype) else None
    if arrow_type is not None and (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        column.kind = "list"
        analyse_arrow_lists(column, _arrow(series), null)
        return column
    if pd.api.types.is_bool_dtype(dtype) or (pd.api.types.is_numeric_dtype(dtype) and dtype != np.dtype(object)):
        column.kind = "bool" if pd.api.types.is_bool_dtype(dtype) else "number"
        _number(column, series, null, wire_bytes(getattr(dtype, "numpy_dtype", dtype)))
        return column
    if isinstance(dtype, pd.StringDtype) or (arrow_type is not None and pa.types.is_string(arrow_type)):
        column.kind = "text"
        analyse_text(column, series, null)
        return column
    if dtype != np.dtype(object):  # datetimes, periods, intervals: recorded, never tested
        column.kind = "other"
        return column

    values = series.to_numpy()
    cells = values[~null]
    kinds = Counter(_cell_kind(cell) for cell in cells) if len(set(map(type, cells))) > 1 else None
    if kinds is None:
        kind = _cell_kind(cells[0])
    else:
        kind = kinds.most_common(1)[0][0]
        column.mixed = len(kinds) > 1
    column.kind = kind
    if column.mixed:  # keep the cells of the main kind; the others count as nulls for the size features
        keep = np.fromiter((_cell_kind(cell) == kind for cell in values), dtype=bool, count=rows) & ~null
        values = np.where(keep, values, None)
        null = ~keep
        series = pd.Series(values, index=series.index, dtype=object)
    if kind in ("number", "bool"):
        _number(column, series, null, 8)
    elif kind == "text":
        analyse_text(column, series, null)
    elif kind == "bytes":
        sizes = np.full(rows, np.nan)
        sizes[~null] = np.fromiter(map(len, values[~null]), dtype=np.float64, count=int((~null).sum()))
        column.sizes[f"{name}.bytes"] = sizes
        column.payload = np.nan_to_num(sizes)
        column.length = [int(np.nanmin(sizes)), int(np.nanmax(sizes))]
    elif kind == "list":
        analyse_list_cells(column, values, null)
    return column


def _number(column: Column, series: pd.Series, null: np.ndarray, leaf_bytes: int) -> None:
    any_null = bool(null.any())
    values = series[~null] if any_null else series
    array = values.to_numpy()
    if column.kind == "bool":
        numeric = array.astype(np.float64)
    elif array.dtype == np.float32:
        numeric = array  # float32 sorts faster; converted to float64 after sorting (exactly)
    elif array.dtype.kind in "iuf":
        numeric = array.astype(np.float64, copy=False)
    else:
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if column.kind == "number":
        # an infinite value is no model input: kept out of the tests like a null
        finite = np.isfinite(numeric)
        if not finite.all():
            numeric = numeric[finite]
    column.numeric = numeric
    column.labels = values
    column.domain = categorical_domain(values) if column.kind == "number" else sorted({bool(v) for v in np.unique(numeric)})
    column.payload = (~null) * float(leaf_bytes) if any_null else float(leaf_bytes)


def _arrow(series: pd.Series) -> pa.Array:
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array
