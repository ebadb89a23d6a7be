"""The TorchServe handler of `diagnose serve`: it runs inside TorchServe's Python worker, not in `diagnose`.

The model archive carries this file and `diagnose_serve.json` (the version's manifest path). The worker loads the
version with the project's own `load_version`, so the served model gets the preprocessing, threads, precision and
input dtypes the compare replays it with. A request's body is one row of the version's request log as a JSON object
{column: value} (or a JSON list of such rows); the rows TorchServe batched together (`batch_size`,
`max_batch_delay`) become one DataFrame, one preprocess and one model call, and each request gets its own JSON
answer: {"output": ..., "batch_size": rows in that model call, "version": the version that answered (it changes
on a swap)}. A bad row is a 400 for its request alone.

TorchServe takes the handler's only class (`VersionHandler`): keep every other name here a function.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SETTINGS_FILE = "diagnose_serve.json"
JSON = "application/json"
REASONS = {400: "Bad Request", 500: "Internal Server Error"}


def logged_columns(manifest) -> tuple[list[str] | None, dict[str, tuple], bool]:
    """The request log's columns in order, each one's (leaf numpy dtype or None, is a list), and whether the log
    carries dtypes: what turns JSON numbers back into what the compare feeds. The schema alone is read, not the log.

    A Parquet log's dtypes are the client's (a float64 column is replayed as float64, docs/manifest.md); a CSV log has
    none, so JSON numbers go through the same float32/int64 rule as its replay; no log: the rows are taken as sent."""
    path = manifest.requests_path
    if path is None or not path.is_file():
        return None, {}, False
    if path.suffix.lower() == ".csv":
        return list(pd.read_csv(path, nrows=0).columns), {}, False
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    fields = [f for f in schema if f.name not in index]
    return [f.name for f in fields], {f.name: _leaf(f.type) for f in fields}, True


def _leaf(arrow_type) -> tuple:
    """(numpy dtype of the innermost numbers or None for text, whether the column holds lists)."""
    import pyarrow as pa

    is_list = False
    while pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        arrow_type, is_list = arrow_type.value_type, True
    numeric = pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)
    return (np.dtype(arrow_type.to_pandas_dtype()) if numeric else None), is_list


def _typed_list(cell: list, dtype):
    """A (nested) list cell as the log's arrays; a ragged one as a list of arrays, which the batching pads."""
    try:
        return np.asarray(cell, dtype=dtype)
    except ValueError:
        if not any(isinstance(item, list) for item in cell):
            raise
        return [_typed_list(item, dtype) for item in cell]


def _typed_cell(column: str, value, dtype, is_list: bool):
    if is_list != isinstance(value, list):
        raise ValueError(f"column {column!r}: expected {'a list' if is_list else 'a scalar'}, got {type(value).__name__}")
    if dtype is None:
        return value
    return _typed_list(value, dtype) if is_list else dtype.type(value)


def decoded(item: dict):
    """A request's body as JSON: TorchServe decodes an application/json body itself, hands anything else as bytes
    (or text)."""
    body = item.get("body", item.get("data"))
    if not isinstance(body, (bytes, bytearray, str)):
        return body
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ValueError(f"the body is not JSON ({exc}); send a JSON object {{column: value}}, one request row") from None


def rows_of(body, columns: list[str] | None, types: dict[str, tuple]) -> list[dict]:
    """One request's rows: its decoded body (a JSON object, or a list of them) checked against the log's columns and
    typed as the log holds them."""
    rows = body if isinstance(body, list) else [body]
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise ValueError("the body must be a JSON object {column: value} (one request row) or a list of them")
    if columns is None:
        return rows
    missing = [c for c in columns if c not in rows[0] or any(c not in row for row in rows)]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(map(repr, missing))}; the request log has {', '.join(columns)}")
    return [{c: _typed_cell(c, row[c], *types.get(c, (None, isinstance(row[c], list)))) for c in columns}
            for row in rows]


def batch_frame(rows: list[dict], columns: list[str] | None, types: dict[str, tuple], logged: bool) -> pd.DataFrame:
    """The batch as the compare holds a request log: scalar columns in the log's dtypes, the dtype flag in attrs."""
    from diagnose.core.requestlog import LOGGED_DTYPES

    frame = pd.DataFrame(rows, columns=columns)
    for column in frame.columns:
        dtype, is_list = types.get(column, (None, False))
        if dtype is not None and not is_list:
            frame[column] = frame[column].astype(dtype)
    frame.attrs[LOGGED_DTYPES] = logged
    return frame


def split_outputs(output, n: int) -> list:
    """The model's output for a batch of n rows -> one JSON-ready value per row (tuples and dicts kept as such; a
    list of one output, as ONNX Runtime returns every output, is that output, as its torch model's would be)."""
    if isinstance(output, (list, tuple)) and len(output) == 1:
        output = output[0]
    if isinstance(output, dict):
        parts = {key: split_outputs(value, n) for key, value in output.items()}
        return [{key: part[i] for key, part in parts.items()} for i in range(n)]
    if isinstance(output, (list, tuple)):
        parts = [split_outputs(value, n) for value in output]
        return [[part[i] for part in parts] for i in range(n)]
    array = output.detach().cpu() if hasattr(output, "detach") else np.asarray(output)
    if array.ndim == 0 or array.shape[0] != n:
        raise ValueError(f"the model returned shape {list(array.shape)}, not one row for each of the {n} requests")
    return [row.tolist() for row in array]


def _answer(context, idx: int, payload: dict, status: int = 200) -> str:
    context.set_response_content_type(idx, JSON)
    if status != 200:
        context.set_response_status(status, REASONS[status], idx)
    return json.dumps(payload)


class VersionHandler:
    """Loads the version once per worker; answers each batch TorchServe hands it with one model call."""

    def initialize(self, context) -> None:
        import torch

        from diagnose.core.manifest import load_manifest
        from profilers.runners import load_version

        model_dir = Path(context.system_properties["model_dir"])
        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        self.version = load_version(load_manifest(Path(settings["manifest"])))
        torch.set_num_threads(self.version.manifest.serving.threads)  # as the compare times it: serving.threads
        if settings.get("variant"):  # built by `diagnose serve` before the server started: a cache hit here
            from profilers.serve_torchserve import build_served_variant

            self.version = build_served_variant(self.version.manifest, settings["variant"], settings["max_batch"],
                                                Path(settings["cache_dir"]), self.version)
        self.columns, self.types, self.logged = logged_columns(self.version.manifest)

    def handle(self, data: list[dict], context) -> list[str]:
        answers: list[str | None] = [None] * len(data)
        batch: list[tuple[int, int, bool]] = []  # (request index, rows it sent, whether it sent a list of rows)
        rows: list[dict] = []
        for idx, item in enumerate(data):
            try:
                body = decoded(item)
                mine = rows_of(body, self.columns, self.types)
            except (ValueError, TypeError) as exc:
                answers[idx] = _answer(context, idx, {"error": f"bad request: {exc}"}, 400)
                continue
            batch.append((idx, len(mine), isinstance(body, list)))
            rows += mine
        if rows:
            self._predict(batch, rows, answers, context)
        return answers

    def _predict(self, batch, rows, answers, context) -> None:
        import torch

        from diagnose.core.errors import first_line

        try:
            with torch.inference_mode():
                frame = batch_frame(rows, self.columns, self.types, self.logged)
                outputs = split_outputs(self.version(self.version.prepare(frame)), len(rows))
        except Exception as exc:  # noqa: BLE001 - the model's or the preprocess' failure is each request's 500
            for idx, _, _ in batch:
                answers[idx] = _answer(context, idx, {"error": f"the model failed: {first_line(exc)}"}, 500)
            return
        start = 0
        for idx, count, many in batch:
            mine = outputs[start:start + count]
            start += count
            answers[idx] = _answer(context, idx, {"output": mine if many else mine[0], "batch_size": len(rows),
                                                   "version": self.version.manifest.version})
