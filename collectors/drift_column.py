"""What drift's one pass learns about one column (`Column`), and the small cell helpers every pass shares.

The pass itself is `drift_profile` (which kind a column is, its nulls and values); the text and list columns'
structure and size features are `drift_text` and `drift_lists`, which fill in the same `Column`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

CATEGORICAL_MAX_UNIQUE = 20  # a number or text column with at most this many distinct values (both sides pooled) is categorical


@dataclass
class Column:
    """One column as drift's pass saw it; `schema()` is its entry in the log's schema."""
    name: str
    kind: str
    dtype: str
    rows: int
    nulls: int
    mixed: bool = False
    element_dtype: str | None = None
    rank: int = 0
    length: list | None = None
    shape: list | None = None
    domain: list | None = None
    numeric: np.ndarray | None = None  # non-null values as float64, or float32 as stored (number and bool columns)
    labels: pd.Series | None = None  # non-null values, for category counts (number, bool, text columns)
    sizes: dict = field(default_factory=dict)  # size feature name -> float64 per row, NaN on null cells
    payload: np.ndarray | float = 0.0  # estimated serialized bytes per row (0 on null cells), or one for all rows

    def schema(self) -> dict:
        return {"kind": self.kind, "dtype": self.dtype, "element_dtype": self.element_dtype, "nulls": int(self.nulls),
                "null_share": float(self.nulls / self.rows) if self.rows else 0.0, "rank": int(self.rank),
                "length": self.length, "shape": self.shape, "domain": self.domain, "mixed": bool(self.mixed)}


def wire_bytes(dtype) -> int:
    """Bytes a number takes on the wire: 8, or the dtype's own size when it is 32-bit or narrower."""
    try:
        size = np.dtype(dtype).itemsize
    except TypeError:
        return 8
    return int(size) if 0 < size <= 4 else 8


def json_scalar(value):
    """A JSON-able python scalar from a numpy/pandas scalar."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # Decimal, bytes, timestamps: shown, not computed with


def categorical_domain(labels: pd.Series) -> list | None:
    """Sorted distinct values when there are at most CATEGORICAL_MAX_UNIQUE of them, else None (cheap on
    continuous columns: a head of the values settles most of them)."""
    values = labels.to_numpy() if not isinstance(labels.dtype, pd.StringDtype) else labels.array
    if len(pd.unique(values[:4096])) > CATEGORICAL_MAX_UNIQUE:
        return None
    distinct = pd.unique(values)
    if len(distinct) > CATEGORICAL_MAX_UNIQUE:
        return None
    out = [json_scalar(v) for v in distinct]
    try:
        return sorted(out)
    except TypeError:
        return sorted(out, key=lambda v: (type(v).__name__, str(v)))


def is_null(cell) -> bool:
    """A missing cell, whichever way pandas, numpy or Arrow spells it."""
    return cell is None or cell is pd.NA or cell is pd.NaT or (isinstance(cell, float) and math.isnan(cell))
