"""Reading a request log for drift: as it is, nulls and odd cells kept, list columns left in Arrow.

`diagnose.core.requestlog.load_requests` reads a request log to run it through a model, so it refuses a null
or an odd cell; drift reports those as findings instead (a null appearing, a column turning all-null), so this
reader keeps every cell and only refuses a file that is no request log at all. It also reads parquet without
the copies: at a million rows the read is most of drift's wall time.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from diagnose.core.errors import UserError, first_line

SUFFIXES = (".parquet", ".pq", ".csv")


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
        raise UserError(f"cannot read requests file: {first_line(exc)}", path) from None
    if frame.shape[1] == 0:
        raise UserError("requests file has no columns", path)
    if frame.shape[0] == 0:
        raise UserError("requests file holds no requests (0 rows)", path)
    return frame.reset_index(drop=True)
