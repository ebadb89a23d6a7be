"""Feature-schema and distribution drift between two request logs (pure functions: no model, no latency).

A model update often ships with new inputs: longer texts, more recommender candidates, bigger images, a new
column, float64 where float32 was. Any of these can make serving slower with an innocent model, so this module
says what changed in the requests themselves, in two layers:

- the schema (TFDV-style): kinds, dtypes, nulls, list rank and shape, categorical domains; `schema_diff` names
  each change in one sentence, and `check_expected` holds a log against the manifest's optional `inputs.schema`;
- the distributions (Evidently's default test selection): every number, bool and categorical column and every
  size feature (text length, list length, image dims, payload bytes) gets a two-sample test or a distance.

Unlike `diagnose.core.requestlog.load_requests`, nothing here refuses nulls or odd cells: a null appearing or a
column turning all-null is a finding, never a crash (Evidently#1480), and identical samples give exactly no
drift, ties included (Evidently#171), because every statistic is exactly zero on equal inputs.

Everything is vectorized over rows (numpy kernels on Arrow buffers: text lengths and word counts from the UTF-8
bytes, list shapes from the offsets). Object columns cost a few C-level passes over their cells (type, len,
dtype); only irregular nested lists (ragged depth, odd leaves) are walked value by value.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diagnose.core.errors import UserError

ALPHA = 0.05  # family-wise, Holm-corrected over all p-value tests of one report
SMALL_SAMPLE = 1000  # Evidently: <= 1000 rows in the reference -> statistical tests, above -> distances
DISTANCE_THRESHOLD = 0.1  # normed Wasserstein (numeric) / Jensen-Shannon distance (categorical), large samples
PSI_THRESHOLD = 0.2
CATEGORICAL_MAX_UNIQUE = 20  # a number or text column with at most this many distinct values (both sides pooled) is categorical

PSI_BINS = 10
PSI_EPSILON = 1e-4
NULLS_POINTS = 0.05  # a null share moving by more than 5 points is a finding
WORD_CHUNK = 1 << 19  # bytes of text per step of the word counter (cache-sized)
LENGTH_MOVE = 0.5  # a length bound moving by more than 50% (of the old maximum) is a finding
PARALLEL_VALUES = 2_000_000  # values in all features together above which features are tested on threads
METHODS = ("auto", "ks", "chisquare", "wasserstein", "jensenshannon", "psi")
P_VALUE_METHODS = ("ks", "chisquare")
TEXT_DTYPES = {"object", "str", "string", "string[python]", "string[pyarrow]", "large_string[pyarrow]", "string[pyarrow_numpy]"}
SUFFIXES = (".parquet", ".pq", ".csv")

# Python's str.split() splits on exactly these characters; the word counter works on UTF-8 bytes, so the
# non-ASCII ones are matched as byte sequences.
_SPACE_BYTE = np.zeros(256, dtype=bool)
_SPACE_BYTE[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_WIDE_SPACES = [chr(c).encode() for c in range(0x80, 0x3001) if chr(c).isspace()]


def _arrow_lists(arrow_type: pa.DataType):
    return pd.ArrowDtype(arrow_type) if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) else None


def _read_parquet(path: Path) -> pd.DataFrame:
    """Parquet without the copies: the file memory-mapped, float columns zero-copy (split_blocks), Arrow
    buffers freed as they convert (self_destruct), and list columns left Arrow-backed (pd.ArrowDtype): no
    Python object per cell, and the list analysis reads lengths straight from the offsets. `.to_numpy()` on
    such a column still gives one ndarray per row (pd.NA for a null)."""
    table = pq.read_table(path, memory_map=True)  # the decoder reads the page cache directly: no file-sized copy
    return table.to_pandas(split_blocks=True, self_destruct=True, types_mapper=_arrow_lists)


def read_requests(path) -> pd.DataFrame:
    """Read a request log (.parquet/.pq/.csv) as it is: nulls and odd cells are kept, for drift to report."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserError("requests file not found", path)
    if suffix not in SUFFIXES:
        raise UserError(f"unsupported requests format {path.suffix!r}; use .parquet, .pq or .csv", path)
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else _read_parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError("requests file is empty", path) from None
    except Exception as exc:  # pyarrow and pandas raise many types for a corrupt file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read requests file: {first}", path) from None
    if frame.shape[1] == 0:
        raise UserError("requests file has no columns", path)
    if frame.shape[0] == 0:
        raise UserError("requests file holds no requests (0 rows)", path)
    return frame.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# One pass over each column: kind, nulls, values, list structure and size features.


@dataclass
class _Column:
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


class _Profile:
    """Every column of one frame analysed once; schema(), size_features() and the drift tests all read it."""

    def __init__(self, frame: pd.DataFrame):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        self.frame = frame
        self.rows = int(len(frame))
        self.columns: dict[str, _Column] = {}
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


def _cores() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _profiles(old: pd.DataFrame, new: pd.DataFrame) -> tuple[_Profile, _Profile]:
    """Both frames analysed, side by side on two threads when they are large (the work is mostly numpy and
    Arrow kernels, which release the GIL)."""
    if old.size + new.size < PARALLEL_VALUES or _cores() < 2:
        return _Profile(old), _Profile(new)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(_Profile, old), pool.submit(_Profile, new)
        return a.result(), b.result()


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


def _leaf_bytes(dtype) -> int:
    """Bytes a number takes on the wire: 8, or the dtype's own size when it is 32-bit or narrower."""
    try:
        size = np.dtype(dtype).itemsize
    except TypeError:
        return 8
    return int(size) if 0 < size <= 4 else 8


def _py(value):
    """A JSON-able python scalar from a numpy/pandas scalar."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # Decimal, bytes, timestamps: shown, not computed with


def _domain(labels: pd.Series) -> list | None:
    """Sorted distinct values when there are at most CATEGORICAL_MAX_UNIQUE of them, else None (cheap on
    continuous columns: a head of the values settles most of them)."""
    values = labels.to_numpy() if not isinstance(labels.dtype, pd.StringDtype) else labels.array
    if len(pd.unique(values[:4096])) > CATEGORICAL_MAX_UNIQUE:
        return None
    distinct = pd.unique(values)
    if len(distinct) > CATEGORICAL_MAX_UNIQUE:
        return None
    out = [_py(v) for v in distinct]
    try:
        return sorted(out)
    except TypeError:
        return sorted(out, key=lambda v: (type(v).__name__, str(v)))


def _analyse(name: str, series: pd.Series) -> _Column:
    rows = len(series)
    dtype = series.dtype
    column = _Column(name=name, kind="empty", dtype=str(dtype), rows=rows, nulls=0)
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
        _list_arrow(column, _arrow(series), null)
        return column
    if pd.api.types.is_bool_dtype(dtype) or (pd.api.types.is_numeric_dtype(dtype) and dtype != np.dtype(object)):
        column.kind = "bool" if pd.api.types.is_bool_dtype(dtype) else "number"
        _number(column, series, null, _leaf_bytes(getattr(dtype, "numpy_dtype", dtype)))
        return column
    if isinstance(dtype, pd.StringDtype) or (arrow_type is not None and pa.types.is_string(arrow_type)):
        column.kind = "text"
        _text(column, series, null)
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
        _text(column, series, null)
    elif kind == "bytes":
        sizes = np.full(rows, np.nan)
        sizes[~null] = np.fromiter(map(len, values[~null]), dtype=np.float64, count=int((~null).sum()))
        column.sizes[f"{name}.bytes"] = sizes
        column.payload = np.nan_to_num(sizes)
        column.length = [int(np.nanmin(sizes)), int(np.nanmax(sizes))]
    elif kind == "list":
        _list_cells(column, values, null)
    return column


def _number(column: _Column, series: pd.Series, null: np.ndarray, leaf_bytes: int) -> None:
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
    column.domain = _domain(values) if column.kind == "number" else sorted({bool(v) for v in np.unique(numeric)})
    column.payload = (~null) * float(leaf_bytes) if any_null else float(leaf_bytes)


# ---- text


def _arrow(series: pd.Series) -> pa.Array:
    array = pa.array(series, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


def _text(column: _Column, series: pd.Series, null: np.ndarray) -> None:
    if series.dtype == np.dtype(object):
        array = pa.array(series.to_numpy(), type=pa.large_string(), from_pandas=True)
    else:
        array = pa.array(series, from_pandas=True)  # Arrow-backed strings: no copy
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    chunks = [chunk if pa.types.is_large_string(chunk.type) else chunk.cast(pa.large_string()) for chunk in chunks]

    def joined(compute) -> np.ndarray:
        return np.concatenate([np.asarray(compute(chunk), dtype=np.float64) for chunk in chunks])

    chars = joined(lambda chunk: pc.utf8_length(chunk).to_numpy(zero_copy_only=False))
    nbytes = joined(lambda chunk: pc.binary_length(chunk).to_numpy(zero_copy_only=False))
    words = joined(_word_counts)
    chars[null] = np.nan
    words[null] = np.nan
    column.sizes[f"{column.name}.chars"] = chars
    column.sizes[f"{column.name}.words"] = words
    column.payload = np.nan_to_num(nbytes)
    column.labels = series[~null] if null.any() else series
    column.domain = _domain(column.labels)
    column.length = [int(np.nanmin(chars)), int(np.nanmax(chars))]


def _word_counts(array: pa.LargeStringArray) -> np.ndarray:
    """len(s.split()) for every string, on the UTF-8 bytes: a word starts at a non-space after a space.

    Works through the bytes in chunks of whole rows (WORD_CHUNK bytes), so the flags stay in cache and
    memory stays flat however long the texts are."""
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + n + 1]
    counts = np.zeros(n, dtype=np.int64)
    if n == 0 or offsets[-1] == offsets[0] or array.buffers()[2] is None:
        return counts
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    row = 0
    while row < n:
        stop = int(np.searchsorted(offsets, offsets[row] + WORD_CHUNK, side="right")) - 1
        stop = min(max(stop, row + 1), n)
        lo, hi = int(offsets[row]), int(offsets[stop])
        if hi > lo:
            space = _spaces(data[lo:hi])
            size = hi - lo
            # the word-start flags, in a buffer padded to whole 8-byte words for _prefix_counts
            start = np.zeros((size // 8 + 1) * 8, dtype=bool)
            np.invert(space, out=start[:size])
            start[1:size] &= space[:-1]
            bounds = offsets[row: stop + 1] - lo
            firsts = bounds[:-1][bounds[:-1] < size]
            start[firsts] = ~space[firsts]
            counts[row:stop] = np.diff(_prefix_counts(start, bounds))
        row = stop
    return counts


_BYTE_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)], dtype=np.uint64)
_POPCOUNT = hasattr(np, "bitwise_count") and np.little_endian


def _prefix_counts(flags: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """How many of `flags` are set before each position. `flags` is padded to a multiple of 8 beyond the last
    position: read as uint64 words, a popcount counts 8 flags at once, and a masked word covers the partial
    word before each position (a plain cumulative sum costs several times more)."""
    if not _POPCOUNT:
        return np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])[positions]
    words = flags.view(np.uint64)
    before = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.bitwise_count(words), out=before[1:])
    group, rest = np.divmod(positions, 8)
    return before[group] + np.bitwise_count(words[group] & _BYTE_MASKS[rest])


def _spaces(data: np.ndarray) -> np.ndarray:
    """Which bytes belong to a character that str.split() splits on (cheap tests first, exact fix-ups after)."""
    space = data <= 0x20
    controls = np.flatnonzero(data < 0x1C)  # of the bytes below 0x1C only \t \n \v \f \r are whitespace
    if len(controls):
        space[controls] = _SPACE_BYTE[data[controls]]
    if data.max() >= 0xC2:  # multi-byte whitespace: U+0085, U+00A0, U+1680, U+2000.., U+3000
        leads = np.flatnonzero(data >= 0xC2)
        for seq in _WIDE_SPACES:
            at = leads[data[leads] == seq[0]]
            at = at[at + len(seq) <= len(data)]
            for k in range(1, len(seq)):
                at = at[data[at + k] == seq[k]]
            for k in range(len(seq)):
                space[at + k] = True
    return space


# ---- lists


_DTYPE_NDIM = operator.attrgetter("dtype", "ndim")


def _list_cells(column: _Column, values: np.ndarray, null: np.ndarray) -> None:
    cells = values[~null]
    if set(map(type, cells)) == {np.ndarray}:
        layouts = set(map(_DTYPE_NDIM, cells))
        dtypes = {dtype for dtype, _ in layouts}
        ndims = {ndim for _, ndim in layouts}
        if all(d.kind in "biuf" for d in dtypes) and len(ndims) == 1 and min(ndims) >= 1:
            _list_numpy(column, cells, null, dtypes, ndims.pop())
            return
    try:
        array = pa.array(cells, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        leaf = array.type
        while pa.types.is_list(leaf) or pa.types.is_large_list(leaf):
            leaf = leaf.value_type
        ok = pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
        ok = ok and (pa.types.is_integer(leaf) or pa.types.is_floating(leaf) or pa.types.is_boolean(leaf)
                     or pa.types.is_null(leaf) or pa.types.is_string(leaf) or pa.types.is_large_string(leaf))
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        ok = False
    if ok:
        _list_arrow(column, array, null, compact=True)
    else:
        _list_python(column, cells, null)


def _put(null: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Per non-null cell values -> per row, NaN on null rows."""
    out = np.full(len(null), np.nan)
    out[~null] = dense
    return out


def _set_list(column: _Column, null: np.ndarray, lens, dims: list, elements, payload, shape: list, element_dtype) -> None:
    name = column.name
    column.rank = 1 + len(dims)
    column.element_dtype = element_dtype
    column.sizes[f"{name}.len"] = _put(null, lens)
    for i, dim in enumerate(dims, start=1):
        column.sizes[f"{name}.dim{i}"] = _put(null, dim)
    if dims:
        column.sizes[f"{name}.elements"] = _put(null, elements)
    column.payload = np.nan_to_num(_put(null, payload))
    column.length = [int(np.min(lens)), int(np.max(lens))] if len(lens) else None
    column.shape = shape if dims else None


def _list_numpy(column: _Column, cells: np.ndarray, null: np.ndarray, dtypes: set, ndim: int) -> None:
    """Cells that are numeric ndarrays of one rank (parquet's flat lists, in-memory tensors): shapes only."""
    count = len(cells)
    if ndim == 1:
        shapes = np.fromiter(map(len, cells), dtype=np.int64, count=count).reshape(count, 1)
    else:
        shapes = np.array([cell.shape for cell in cells], dtype=np.int64).reshape(count, ndim)
    elements = shapes.prod(axis=1)
    if len(dtypes) == 1:
        element_dtype = next(iter(dtypes))
        payload = elements * _leaf_bytes(element_dtype)
    else:
        element_dtype = np.result_type(*dtypes)
        payload = elements * np.fromiter((_leaf_bytes(cell.dtype) for cell in cells), dtype=np.int64, count=count)
    dims = [shapes[:, i] for i in range(1, ndim)]
    shape = [[int(shapes[:, i].min()), int(shapes[:, i].max())] for i in range(1, ndim)]
    _set_list(column, null, shapes[:, 0], dims, elements, payload, shape, str(np.dtype(element_dtype)))


def _list_arrow(column: _Column, array: pa.Array, null: np.ndarray, compact: bool = False) -> None:
    """Nested lists as an Arrow array: lengths at every depth come straight from the offsets buffers.

    `compact`: the array holds the non-null cells only; otherwise one entry per row (nulls included)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    if not compact:  # one entry per row: keep the non-null ones (their offsets ranges stay right)
        keep = ~null
        starts, ends = offsets[:-1][keep], offsets[1:][keep]
    else:
        starts, ends = offsets[:-1], offsets[1:]
    lens = ends - starts
    dims, shape = [], []
    # row ranges at the current depth, as [lo, hi) index ranges into that depth's lists
    lo, hi = starts, ends
    child = array.values
    while pa.types.is_list(child.type) or pa.types.is_large_list(child.type):
        inner = child.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        inner_lens = np.diff(inner)
        dims.append(_ranged_max(inner_lens, lo, hi))
        # the rows' lists at this depth are one contiguous span (null rows hold no lists)
        span = inner_lens[lo[0]: hi[-1]] if len(lo) else inner_lens[:0]
        shape.append([int(span.min()), int(span.max())] if len(span) else [0, 0])
        lo, hi = inner[lo], inner[hi]
        child = child.values
    elements = hi - lo
    leaf = child.type
    if pa.types.is_string(leaf) or pa.types.is_large_string(leaf):
        leaf_sizes = pc.binary_length(child).to_numpy(zero_copy_only=False)
        cumulative = np.concatenate([[0], np.cumsum(np.nan_to_num(leaf_sizes.astype(np.float64)))])
        payload = cumulative[hi] - cumulative[lo]
        element_dtype = "str"
    elif pa.types.is_null(leaf):
        payload = elements * 8
        element_dtype = None
    else:
        element_dtype = str(np.dtype(leaf.to_pandas_dtype()))
        payload = elements * _leaf_bytes(element_dtype)
    _set_list(column, null, lens, dims, elements, payload, shape, element_dtype)


def _ranged_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo[i]:hi[i]]) per i, 0 for an empty range (ranges are sorted and do not overlap)."""
    out = np.zeros(len(lo), dtype=np.int64)
    filled = hi > lo
    if not filled.any():
        return out
    lo_f, hi_f = lo[filled], hi[filled]
    # reduceat runs from each start to the next one: put the gaps between ranges in as separate segments
    bounds = np.empty(2 * len(lo_f), dtype=np.int64)
    bounds[0::2], bounds[1::2] = lo_f, hi_f
    bounds = bounds[bounds < len(values)]
    reduced = np.maximum.reduceat(values, bounds)
    out[filled] = reduced[0::2][: filled.sum()]
    return out


def _list_python(column: _Column, cells: np.ndarray, null: np.ndarray) -> None:
    """Irregular nested lists (ragged depth, odd leaves): walk every cell level by level."""
    count = len(cells)
    lens = np.zeros(count, dtype=np.int64)
    elements = np.zeros(count, dtype=np.int64)
    payload = np.zeros(count, dtype=np.int64)
    per_row_dims: list[list[int]] = []
    level_ranges: list[list[int]] = []
    leaf_types: set[str] = set()
    for i, cell in enumerate(cells):
        level, depth, leaves, nbytes = [cell], 0, 0, 0
        row_dims = []
        while level:
            nxt, widths = [], []
            for item in level:
                if isinstance(item, np.ndarray) and item.dtype != object:
                    leaf_types.add(str(item.dtype))
                    size = _leaf_bytes(item.dtype)
                    shape = item.shape
                    if item.ndim == 0:
                        leaves, nbytes = leaves + 1, nbytes + size
                        continue
                    widths.append(shape[0])
                    if item.ndim == 1:
                        leaves, nbytes = leaves + item.size, nbytes + item.size * size
                    else:
                        nxt.extend(item)
                elif isinstance(item, (list, tuple, np.ndarray)):
                    widths.append(len(item))
                    nxt.extend(item)
                elif _is_null(item):
                    leaves += 1
                elif isinstance(item, str):
                    leaf_types.add("str")
                    leaves, nbytes = leaves + 1, nbytes + len(item.encode("utf-8"))
                else:
                    leaf_types.add("bool" if isinstance(item, (bool, np.bool_)) else
                                   "int64" if isinstance(item, numbers.Integral) else
                                   "float64" if isinstance(item, numbers.Real) else type(item).__name__)
                    leaves, nbytes = leaves + 1, nbytes + 8
            if widths:
                if depth == 0:
                    lens[i] = widths[0]
                else:
                    row_dims.append(max(widths))
                while len(level_ranges) <= depth:
                    level_ranges.append([min(widths), max(widths)])
                level_ranges[depth] = [min(level_ranges[depth][0], min(widths)), max(level_ranges[depth][1], max(widths))]
                depth += 1
            level = nxt
        elements[i], payload[i] = leaves, nbytes
        per_row_dims.append(row_dims)
    rank = max(1, len(level_ranges))
    dims = [np.array([row[d] if d < len(row) else 0 for row in per_row_dims], dtype=np.int64) for d in range(rank - 1)]
    numeric = {t for t in leaf_types if t not in ("str", "bool")}
    if not leaf_types:
        element_dtype = None
    elif len(leaf_types) == 1:
        element_dtype = next(iter(leaf_types))
    elif leaf_types <= {"bool", "int64", "float64"} or all(_is_dtype(t) for t in numeric) and "str" not in leaf_types:
        element_dtype = str(np.result_type(*[np.dtype(t) for t in leaf_types]))
    else:
        element_dtype = "object"
    _set_list(column, null, lens, dims, elements, payload, level_ranges[1:rank], element_dtype)


def _is_dtype(name: str) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Public: size features and schema.


def size_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Per request, how big it is: text chars/words, list len/dims/elements, bytes, and payload_bytes."""
    profile = _Profile(frame)
    return pd.DataFrame({name: values for name, (_, values) in profile.sizes().items()}, index=frame.index, dtype=np.float64)


def schema(frame: pd.DataFrame) -> dict:
    """A JSON-able schema of a request log: kind, dtype, nulls, rank, length, shape and domain per column."""
    return _Profile(frame).schema()


def _jsonc(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _share(share: float) -> str:
    return f"{share * 100:.3g}%"


def _finding(column: str, change: str, old, new, text: str) -> dict:
    return {"column": column, "change": change, "old": old, "new": new, "text": text}


def _range_moved(old: list, new: list) -> bool:
    """Ranges that do not overlap, or a bound that moved by more than half the old maximum."""
    if old[1] < new[0] or new[1] < old[0]:
        return True
    scale = max(abs(old[1]), 1)
    return abs(new[0] - old[0]) > LENGTH_MOVE * scale or abs(new[1] - old[1]) > LENGTH_MOVE * scale


def _nulls_finding(name: str, old_share: float, new_share: float) -> dict | None:
    crossed = (old_share == 0) != (new_share == 0)
    if not crossed and abs(new_share - old_share) <= NULLS_POINTS:
        return None
    if old_share == 0:
        what = "nulls appeared"
    elif new_share == 0:
        what = "nulls disappeared"
    else:
        what = "null share changed"
    text = f"column {name!r}: {what} ({_share(old_share)} -> {_share(new_share)} of rows)"
    return _finding(name, "nulls", old_share, new_share, text)


def _list_text(values: list, limit: int = 10) -> str:
    shown = [v[:37] + "..." if isinstance(v, str) and len(v) > 40 else v for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return repr(shown) + more


def schema_diff(old: dict, new: dict) -> list[dict]:
    """Every schema change between two `schema()` results, one finding per (column, change)."""
    findings = []
    old_cols, new_cols = old.get("columns", {}), new.get("columns", {})
    for name in sorted(set(old_cols) | set(new_cols)):
        a, b = old_cols.get(name), new_cols.get(name)
        if a is None:
            findings.append(_finding(name, "added", None, b["kind"], f"column {name!r} added ({b['kind']}, {b['dtype']})"))
            continue
        if b is None:
            text = f"column {name!r} removed (was {a['kind']}, {a['dtype']})"
            findings.append(_finding(name, "removed", a["kind"], None, text))
            continue
        nulls = _nulls_finding(name, a["null_share"], b["null_share"])
        if nulls:
            findings.append(nulls)
        if a["kind"] != b["kind"]:
            findings.append(_finding(name, "kind", a["kind"], b["kind"], f"column {name!r}: kind {a['kind']} -> {b['kind']}"))
            continue
        kind = a["kind"]
        if kind == "empty":
            continue
        # text, list and bytes dtypes only say how pandas stores the cells (object, str, Arrow); list elements
        # are compared through element_dtype
        if a["dtype"] != b["dtype"] and kind not in ("text", "list", "bytes"):
            findings.append(_finding(name, "dtype", a["dtype"], b["dtype"], f"column {name!r}: {a['dtype']} -> {b['dtype']}"))
        if a["element_dtype"] and b["element_dtype"] and a["element_dtype"] != b["element_dtype"]:
            findings.append(_finding(name, "element_dtype", a["element_dtype"], b["element_dtype"],
                                     f"column {name!r}: list elements {a['element_dtype']} -> {b['element_dtype']}"))
        if a["rank"] != b["rank"]:
            findings.append(_finding(name, "rank", a["rank"], b["rank"],
                                     f"column {name!r}: list nesting depth (rank) {a['rank']} -> {b['rank']}"))
        elif a["shape"] and b["shape"] and a["shape"] != b["shape"]:
            pairs = zip(a["shape"], b["shape"], strict=False)
            moved = any((oa[0] == oa[1] and ob[0] == ob[1]) or _range_moved(oa, ob) for oa, ob in pairs)
            if moved:
                findings.append(_finding(name, "shape", a["shape"], b["shape"],
                                         f"column {name!r}: shape {_jsonc(a['shape'])} -> {_jsonc(b['shape'])}"))
        if a["length"] and b["length"] and _range_moved(a["length"], b["length"]):
            findings.append(_finding(name, "length", a["length"], b["length"],
                                     f"column {name!r}: length range {a['length']} -> {b['length']}"))
        if a["domain"] is not None and a["domain"] != b["domain"]:
            if b["domain"] is None:
                text = f"column {name!r}: {len(a['domain'])} distinct values -> more than {CATEGORICAL_MAX_UNIQUE}"
            else:
                added = [v for v in b["domain"] if v not in a["domain"]]
                removed = [v for v in a["domain"] if v not in b["domain"]]
                text = f"column {name!r}: values added {_list_text(added)}, removed {_list_text(removed)}"
            findings.append(_finding(name, "domain", a["domain"], b["domain"], text))
    return sorted(findings, key=lambda f: (f["column"], f["change"]))


def _canonical_dtype(name) -> str:
    try:
        return str(pd.api.types.pandas_dtype(name))
    except (TypeError, ValueError):
        return str(name)


def check_expected(expected: dict, frame_schema: dict) -> list[dict]:
    """Hold a request log's schema against the manifest's `inputs.schema` (every key optional)."""
    if not expected:  # well formed: the manifest validates inputs.schema when it is read
        return []
    columns = frame_schema.get("columns", {})
    findings = []
    for name, spec in expected.items():
        name = str(name)
        spec = spec or {}
        got = columns.get(name)
        if got is None:
            text = f"column {name!r}: expected by inputs.schema, missing from the requests"
            findings.append(_finding(name, "missing", spec, None, text))
            continue
        if "kind" in spec and spec["kind"] != got["kind"]:
            text = f"column {name!r}: expected {spec['kind']}, requests hold {got['kind']}"
            findings.append(_finding(name, "kind", spec["kind"], got["kind"], text))
        if spec.get("dtype"):
            want = str(spec["dtype"])
            have = got["element_dtype"] if got["kind"] == "list" else got["dtype"]
            text_ok = got["kind"] == "text" and want in TEXT_DTYPES
            if have is not None and got["kind"] != "empty" and not text_ok and _canonical_dtype(want) != _canonical_dtype(have):
                findings.append(_finding(name, "dtype", want, have, f"column {name!r}: expected {want}, requests hold {have}"))
        if "rank" in spec and spec["rank"] is not None and int(spec["rank"]) != got["rank"]:
            findings.append(_finding(name, "rank", int(spec["rank"]), got["rank"],
                                     f"column {name!r}: expected rank {spec['rank']}, requests hold rank {got['rank']}"))
        elif spec.get("shape") is not None and got["kind"] == "list":
            finding = _shape_check(name, list(spec["shape"]), got)
            if finding:
                findings.append(finding)
        if spec.get("nullable") is False and got["nulls"] > 0:
            text = f"column {name!r}: expected no nulls, requests hold {got['nulls']} ({_share(got['null_share'])} of rows)"
            findings.append(_finding(name, "nulls", False, got["nulls"], text))
    for name in columns:
        if name not in {str(k) for k in expected}:
            findings.append(_finding(name, "unexpected", None, columns[name]["kind"],
                                     f"column {name!r}: in the requests, not in inputs.schema"))
    return sorted(findings, key=lambda f: (f["column"], f["change"]))


def _shape_check(name: str, want: list, got: dict) -> dict | None:
    """`want` lists every dim (outer length first, len == rank) or the inner dims only (len == rank - 1)."""
    ranges = ([got["length"]] if got["length"] else [[0, 0]]) + (got["shape"] or [])
    if len(want) == got["rank"] - 1:
        ranges = ranges[1:]
    if len(want) != len(ranges):
        return _finding(name, "shape", want, ranges, f"column {name!r}: expected shape {_jsonc(want)} ({len(want)} dims), "
                        f"requests hold rank {got['rank']} lists")
    bad = any(w is not None and (r[0] != int(w) or r[1] != int(w)) for w, r in zip(want, ranges, strict=True))
    if bad:
        text = f"column {name!r}: expected shape {_jsonc(want)}, requests hold {_jsonc(ranges)}"
        return _finding(name, "shape", want, ranges, text)
    return None


# ----------------------------------------------------------------------------------------------------------
# Distribution drift.


@dataclass
class _Feature:
    name: str
    source: str
    type: str  # numeric | categorical
    derived: bool
    old: object  # numeric: float64 values; categorical: pd.Series of labels
    new: object
    old_nulls: int
    new_nulls: int
    skip: str | None = None


def _features(a: _Profile, b: _Profile) -> list[_Feature]:
    features = []
    for name, ca in a.columns.items():
        cb = b.columns.get(name)
        if cb is None:
            continue
        kinds = {ca.kind, cb.kind} - {"empty"}
        if not kinds:
            features.append(_Feature(name, name, "numeric", False, None, None, ca.nulls, cb.nulls,
                                     "no values in old or new"))
            continue
        if len(kinds) > 1:
            if kinds & {"number", "bool", "text"}:
                features.append(_Feature(name, name, "categorical", False, None, None, ca.nulls, cb.nulls,
                                         f"kind changed: {ca.kind} -> {cb.kind}"))
            continue
        kind = kinds.pop()
        if kind not in ("number", "bool", "text"):
            continue
        if ca.mixed or cb.mixed:
            features.append(_Feature(name, name, "categorical", False, None, None, ca.nulls, cb.nulls,
                                     "mixed kinds in one column"))
            continue
        domains = [c.domain for c in (ca, cb) if c.kind != "empty"]
        categorical = kind == "bool" or (all(d is not None for d in domains)
                                         and len({json.dumps(v) for d in domains for v in d}) <= CATEGORICAL_MAX_UNIQUE)
        if kind == "text" and not categorical:
            continue  # free text: tested through its size features
        if categorical:
            old = ca.labels if ca.labels is not None else pd.Series([], dtype=object)
            new = cb.labels if cb.labels is not None else pd.Series([], dtype=object)
            features.append(_Feature(name, name, "categorical", False, old, new, ca.nulls, cb.nulls))
        else:
            old = ca.numeric if ca.numeric is not None else np.empty(0)
            new = cb.numeric if cb.numeric is not None else np.empty(0)
            features.append(_Feature(name, name, "numeric", False, old, new, ca.nulls, cb.nulls))
    changed = {name for name, ca in a.columns.items() if name in b.columns
               and len({ca.kind, b.columns[name].kind} - {"empty"}) > 1}
    sizes_a, sizes_b = a.sizes(), b.sizes()
    for name in list(sizes_a) + [n for n in sizes_b if n not in sizes_a]:
        source = (sizes_a.get(name) or sizes_b.get(name))[0]
        if source != "*" and (source not in a.columns or source not in b.columns or source in changed):
            continue  # schema_diff names the added or removed column, or its change of kind
        sides = []
        for sizes, profile in ((sizes_a, a), (sizes_b, b)):
            values = sizes[name][1] if name in sizes else np.full(profile.rows, np.nan)
            nulls = np.isnan(values)
            sides.append((values[~nulls], int(nulls.sum())))
        features.append(_Feature(name, source, "numeric", True, sides[0][0], sides[1][0], sides[0][1], sides[1][1]))
    return features


def _method_for(method: str, type_: str, old_n: int) -> str:
    if method == "auto":
        if type_ == "numeric":
            return "ks" if old_n <= SMALL_SAMPLE else "wasserstein"
        return "chisquare" if old_n <= SMALL_SAMPLE else "jensenshannon"
    # an explicit method applies to the features of its type; the other type gets its counterpart
    if type_ == "numeric":
        return {"chisquare": "ks", "jensenshannon": "wasserstein"}.get(method, method)
    return {"ks": "chisquare", "wasserstein": "jensenshannon"}.get(method, method)


def _wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between two samples given sorted: the integral of |F_u^-1(t) - F_v^-1(t)| over t (exact)."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.abs(u - v).mean())
    # quantile breakpoints i/n and j/m on the common grid of n*m
    grid = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    widths = np.diff(grid, prepend=0) / (n * m)
    iu = -(-grid // m) - 1
    iv = -(-grid // n) - 1
    return float(np.sum(widths * np.abs(u[iu] - v[iv])))


def _counts(old: pd.Series, new: pd.Series) -> tuple[list, np.ndarray, np.ndarray]:
    ca = old.value_counts(dropna=True, sort=False)
    cb = new.value_counts(dropna=True, sort=False)
    table: dict = {}
    for side, counts in enumerate((ca, cb)):
        for key, count in counts.items():
            key = _py(key)
            table.setdefault(key, [0, 0])[side] += int(count)
    keys = list(table)
    try:
        order = sorted(range(len(keys)), key=lambda i: keys[i])
    except TypeError:
        order = sorted(range(len(keys)), key=lambda i: (type(keys[i]).__name__, str(keys[i])))
    keys = [keys[i] for i in order]
    counts = np.array([table[k] for k in keys], dtype=np.float64).reshape(-1, 2)
    return keys, counts[:, 0], counts[:, 1]


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.where(p == 0, PSI_EPSILON, p)
    q = np.where(q == 0, PSI_EPSILON, q)
    return float(np.sum((q - p) * np.log(q / p)))


class _Sorted:
    """One sample in sorted order. Integer data (every size feature) is kept as counts per value, a counting
    sort in O(n); anything else is sorted. Both answer the same questions exactly."""

    def __init__(self, values: np.ndarray | None = None, lo: float = 0.0, counts: np.ndarray | None = None):
        self.values, self.lo = values, lo
        self.cum = np.cumsum(counts) if counts is not None else None
        self.n = len(values) if values is not None else int(self.cum[-1])

    def at(self, index):
        """The values at these positions of the sorted sample."""
        if self.values is not None:
            return self.values[index]
        return self.lo + np.searchsorted(self.cum, np.asarray(index) + 1)

    def median(self) -> float:
        n = self.n
        return float(self.at(n // 2)) if n % 2 else float((self.at(n // 2 - 1) + self.at(n // 2)) / 2)

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Linear interpolation between order statistics (numpy's default method)."""
        h = (self.n - 1) * np.asarray(q, dtype=np.float64)
        low = np.floor(h).astype(np.int64)
        below, above = self.at(low), self.at(np.minimum(low + 1, self.n - 1))
        return below + (h - low) * (above - below)

    def count_le(self, edges: np.ndarray) -> np.ndarray:
        if self.values is not None:
            return np.searchsorted(self.values, edges, side="right")
        index = np.floor(edges).astype(np.int64) - int(self.lo)
        return np.where(index < 0, 0, self.cum[np.clip(index, 0, len(self.cum) - 1)])


def _sorted_pair(old: np.ndarray, new: np.ndarray, integer: bool) -> tuple[_Sorted, _Sorted]:
    if integer:
        lo, hi = min(old.min(), new.min()), max(old.max(), new.max())
        span = int(hi - lo) + 1
        if span <= max(1 << 16, 4 * (len(old) + len(new))):
            counts = [np.bincount((side - lo).astype(np.int64), minlength=span) for side in (old, new)]
            return _Sorted(lo=lo, counts=counts[0]), _Sorted(lo=lo, counts=counts[1])
    return _Sorted(np.sort(old).astype(np.float64, copy=False)), _Sorted(np.sort(new).astype(np.float64, copy=False))


def _wasserstein(a: _Sorted, b: _Sorted) -> float:
    if a.values is not None:
        return _wasserstein_sorted(a.values, b.values)
    # integers a unit apart: the integral of |F_a - F_b| is a plain sum over the support
    return float(np.abs(a.cum[:-1] / a.n - b.cum[:-1] / b.n).sum())


def _numeric_test(method: str, old: np.ndarray, new: np.ndarray, a: _Sorted, b: _Sorted) -> tuple[float, float | None]:
    """(statistic, p-value or None): the raw samples for KS, their sorted forms for the rest."""
    if method == "ks":
        if (a.values is not None and np.array_equal(a.values, b.values)) or (a.values is None and np.array_equal(a.cum, b.cum)):
            return 0.0, 1.0
        from scipy import stats as sps  # imported on first use: a second of start-up that large samples never need

        result = sps.ks_2samp(old, new)
        return float(result.statistic), float(result.pvalue)
    if method == "wasserstein":
        std = float(np.std(old, dtype=np.float64))
        if std == 0 or not math.isfinite(std):
            same = b.at(0) == b.at(b.n - 1) == a.at(0)
            return (0.0 if same else math.inf), None
        return _wasserstein(a, b) / std, None
    if method == "psi":
        edges = np.unique(a.quantiles(np.arange(1, PSI_BINS) / PSI_BINS))
        cuts_a = np.concatenate([[0], a.count_le(edges), [a.n]])
        cuts_b = np.concatenate([[0], b.count_le(edges), [b.n]])
        return _psi(np.diff(cuts_a) / a.n, np.diff(cuts_b) / b.n), None
    raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")


def _categorical_test(method: str, a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    if method == "chisquare":
        if len(a) < 2 or np.array_equal(a / a.sum(), b / b.sum()):
            return 0.0, 1.0
        from scipy import stats as sps

        result = sps.chi2_contingency(np.vstack([a, b]))
        return float(result.statistic), float(result.pvalue)
    p, q = a / a.sum(), b / b.sum()
    if method == "jensenshannon":
        return (0.0 if np.array_equal(p, q) else _jensenshannon(p, q)), None
    if method == "psi":
        return _psi(p, q), None
    raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (as scipy.spatial.distance.jensenshannon(p, q, base=2)), in [0, 1]."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        right = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max(0.0, (left + right) / (2 * math.log(2)))))


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, (m - j) * p_j, capped at 1, cumulative max."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for j, index in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def _fmt_p(p: float) -> str:
    return "p < 1e-300" if p == 0 else f"p = {p:.2g}"


LABELS = {"ks": "KS", "chisquare": "chi-square", "wasserstein": "Wasserstein (normed)", "jensenshannon": "Jensen-Shannon",
          "psi": "PSI"}


def _run_feature(feature: _Feature, method: str, threshold: float | None) -> dict:
    entry = {"feature": feature.name, "source": feature.source, "type": feature.type, "derived": feature.derived,
             "status": "ok", "reason": None, "method": None, "statistic": None, "p_value": None, "p_adjusted": None,
             "threshold": None, "drift": False, "old_n": 0, "new_n": 0, "old_nulls": feature.old_nulls,
             "new_nulls": feature.new_nulls, "old_mean": None, "new_mean": None, "old_p50": None, "new_p50": None,
             "ratio_mean": None, "text": ""}
    if feature.skip is None:
        entry["old_n"], entry["new_n"] = len(feature.old), len(feature.new)
        if entry["old_n"] == 0 and entry["new_n"] == 0:
            feature.skip = "no values in old or new"
        elif entry["old_n"] == 0:
            feature.skip = "no values in old"
        elif entry["new_n"] == 0:
            feature.skip = "no values in new"
    if feature.skip is not None:
        entry.update(status="skipped", reason=feature.skip, text=f"{feature.name}: skipped ({feature.skip})")
        return entry
    chosen = _method_for(method, feature.type, entry["old_n"])
    entry["method"] = chosen
    if chosen not in P_VALUE_METHODS:
        default = PSI_THRESHOLD if chosen == "psi" else DISTANCE_THRESHOLD
        entry["threshold"] = float(threshold) if threshold is not None else default
    if feature.type == "numeric":
        a, b = _sorted_pair(feature.old, feature.new, integer=feature.derived)
        statistic, p_value = _numeric_test(chosen, feature.old, feature.new, a, b)
        entry.update(old_mean=_num(feature.old.mean(dtype=np.float64)), new_mean=_num(feature.new.mean(dtype=np.float64)),
                     old_p50=_num(a.median()),
                     new_p50=_num(b.median()))
        entry["_detail"] = ""
    else:
        keys, a, b = _counts(feature.old, feature.new)
        statistic, p_value = _categorical_test(chosen, a, b)
        if all(isinstance(k, (int, float)) for k in keys):
            values_a, values_b = np.asarray(keys, dtype=np.float64), np.asarray(keys, dtype=np.float64)
            entry.update(old_mean=_num(np.dot(values_a, a) / a.sum()), new_mean=_num(np.dot(values_b, b) / b.sum()),
                         old_p50=_num(_weighted_median(values_a, a)), new_p50=_num(_weighted_median(values_b, b)))
        shares_a, shares_b = a / a.sum(), b / b.sum()
        top = int(np.argmax(np.abs(shares_b - shares_a)))
        entry["_detail"] = f"share of {keys[top]!r} {_share(shares_a[top])} -> {_share(shares_b[top])}"
    entry["statistic"] = _num(statistic)
    entry["p_value"] = _num(p_value)
    if entry["old_mean"] not in (None, 0.0) and entry["new_mean"] is not None:
        entry["ratio_mean"] = _num(entry["new_mean"] / entry["old_mean"])
    if entry["threshold"] is not None:
        entry["drift"] = bool(statistic > entry["threshold"])
    return entry


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(counts[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _describe(entry: dict) -> str:
    if entry["status"] != "ok":
        return entry["text"]
    parts = []
    if entry["type"] == "numeric" or entry["_detail"] == "":
        if entry["old_mean"] is not None:
            ratio = f" ({entry['ratio_mean']:.3g}x)" if entry["ratio_mean"] is not None else ""
            parts.append(f"mean {_fmt(entry['old_mean'])} -> {_fmt(entry['new_mean'])}{ratio}")
    else:
        parts.append(entry["_detail"])
    label = LABELS[entry["method"]]
    statistic = "inf" if entry["statistic"] is None else f"{entry['statistic']:.3g}"
    verdict = "drift" if entry["drift"] else "no drift"
    if entry["method"] in P_VALUE_METHODS:
        test = f"{label} {statistic}, {_fmt_p(entry['p_adjusted'])} (Holm) -> {verdict}"
    else:
        sign = ">" if entry["drift"] else "<="
        test = f"{label} {statistic} {sign} {entry['threshold']:.3g} -> {verdict}"
    return f"{entry['feature']}: {'; '.join(parts + [test])}"


def _feature_drift(a: _Profile, b: _Profile, method: str, alpha: float, threshold: float | None) -> list[dict]:
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; use one of {', '.join(METHODS)}")
    features = _features(a, b)
    values = sum(len(f.old) + len(f.new) for f in features if f.old is not None and f.new is not None)
    if values >= PARALLEL_VALUES and _cores() > 1:
        # sorting dominates at scale and numpy releases the GIL while it sorts
        with ThreadPoolExecutor(min(4, _cores())) as pool:
            entries = list(pool.map(lambda feature: _run_feature(feature, method, threshold), features))
    else:
        entries = [_run_feature(feature, method, threshold) for feature in features]
    tested = [e for e in entries if e["status"] == "ok" and e["method"] in P_VALUE_METHODS]
    adjusted_all = _holm([e["p_value"] if e["p_value"] is not None else 1.0 for e in tested])
    for entry, adjusted in zip(tested, adjusted_all, strict=True):
        entry["p_adjusted"] = _num(adjusted)
        entry["drift"] = bool(adjusted <= alpha)
    for entry in entries:
        entry["text"] = _describe(entry)
        entry.pop("_detail", None)
    return sorted(entries, key=lambda e: (not e["drift"], e["feature"]))


def feature_drift(old: pd.DataFrame, new: pd.DataFrame, method: str = "auto", alpha: float = ALPHA,
                  threshold: float | None = None) -> list[dict]:
    """Test every number, bool and categorical column and every size feature; drifted first, then by name."""
    return _feature_drift(*_profiles(old, new), method, alpha, threshold)


# ----------------------------------------------------------------------------------------------------------
# The report.


def _is_null(cell) -> bool:
    return cell is None or cell is pd.NA or cell is pd.NaT or (isinstance(cell, float) and math.isnan(cell))


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


def _identical(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """Equal frames: same columns in order, dtypes and cells in the same row order (cheap columns first)."""
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


def drift_report(old: pd.DataFrame, new: pd.DataFrame, method: str = "auto", alpha: float = ALPHA,
                 threshold: float | None = None, expected: dict | None = None) -> dict:
    """Schema changes, expected-schema findings and feature drift between two request logs, JSON-able."""
    a, b = _profiles(old, new)
    schema_old, schema_new = a.schema(), b.schema()
    changes = schema_diff(schema_old, schema_new)
    expected_findings = check_expected(expected, schema_new) if expected else []
    features = _feature_drift(a, b, method, alpha, threshold)
    drifted = [f["feature"] for f in features if f["drift"]]
    tested = sum(1 for f in features if f["status"] == "ok")
    skipped = len(features) - tested
    summary = []
    if drifted:
        summary.append(f"drift in {len(drifted)} of {tested} features")
        summary.extend(f["text"] for f in features if f["drift"])
    else:
        summary.append(f"no drift in {tested} features")
    if skipped:
        reasons = "; ".join(f"{f['feature']} ({f['reason']})" for f in features if f["status"] == "skipped")
        summary.append(f"{skipped} feature{'s' if skipped > 1 else ''} skipped: {reasons}")
    summary.extend(f["text"] for f in changes)
    summary.extend(f["text"] for f in expected_findings)
    return {
        "status": "ok",
        "identical": _identical(old, new),
        "rows": {"old": a.rows, "new": b.rows},
        "schema": {"old": schema_old, "new": schema_new},
        "schema_changes": changes,
        "expected_schema": expected_findings,
        "features": features,
        "drifted": drifted,
        "settings": {"method": method, "alpha": float(alpha), "threshold": None if threshold is None else float(threshold),
                     "small_sample": SMALL_SAMPLE, "correction": "holm"},
        "summary": summary,
    }
