"""List columns in drift's column pass: nesting depth (rank), length and shape, element dtype, payload bytes.

Three ways in, fastest first, all giving the same `Column` fields: numeric ndarray cells of one rank (shapes
only), anything Arrow can hold as nested lists (lengths at every depth from the offsets buffers), and
irregular nesting (ragged depth, odd leaves), walked cell by cell.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from collectors.drift_column import Column, is_null, wire_bytes

_DTYPE_NDIM = operator.attrgetter("dtype", "ndim")


def analyse_list_cells(column: Column, values: np.ndarray, null: np.ndarray) -> None:
    """A list column held as Python or numpy cells, by the fastest way its cells allow."""
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
        analyse_arrow_lists(column, array, null, compact=True)
    else:
        _list_python(column, cells, null)


def _put(null: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Per non-null cell values -> per row, NaN on null rows."""
    out = np.full(len(null), np.nan)
    out[~null] = dense
    return out


def _set_list(column: Column, null: np.ndarray, lens, dims: list, elements, payload, shape: list, element_dtype) -> None:
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


def _list_numpy(column: Column, cells: np.ndarray, null: np.ndarray, dtypes: set, ndim: int) -> None:
    """Cells that are numeric ndarrays of one rank (parquet's flat lists, in-memory tensors): shapes only."""
    count = len(cells)
    if ndim == 1:
        shapes = np.fromiter(map(len, cells), dtype=np.int64, count=count).reshape(count, 1)
    else:
        shapes = np.array([cell.shape for cell in cells], dtype=np.int64).reshape(count, ndim)
    elements = shapes.prod(axis=1)
    if len(dtypes) == 1:
        element_dtype = next(iter(dtypes))
        payload = elements * wire_bytes(element_dtype)
    else:
        element_dtype = np.result_type(*dtypes)
        payload = elements * np.fromiter((wire_bytes(cell.dtype) for cell in cells), dtype=np.int64, count=count)
    dims = [shapes[:, i] for i in range(1, ndim)]
    shape = [[int(shapes[:, i].min()), int(shapes[:, i].max())] for i in range(1, ndim)]
    _set_list(column, null, shapes[:, 0], dims, elements, payload, shape, str(np.dtype(element_dtype)))


def analyse_arrow_lists(column: Column, array: pa.Array, null: np.ndarray, compact: bool = False) -> None:
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
        payload = elements * wire_bytes(element_dtype)
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


def _list_python(column: Column, cells: np.ndarray, null: np.ndarray) -> None:
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
                    size = wire_bytes(item.dtype)
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
                elif is_null(item):
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
