"""Request bodies and response checks for the model servers a load test drives over HTTP.

Three REST protocols cover the servers in use:

- `v2`: the Open Inference Protocol (KServe's v2), spoken by Triton, KServe, MLServer and OpenVINO Model Server:
  `POST {base}/v2/models/{model}[/versions/{version}]/infer` with `{"inputs": [{"name", "shape", "datatype",
  "data"}]}`, one input per request-log column;
- `torchserve`: `POST {base}/predictions/{model}[/{version}]`, the body handed to the model's handler as is: here
  the row as a JSON object `{column: value}` (a list of them for a batch);
- `tfserving`: `POST {base}/v1/models/{model}[/versions/{version}]:predict` with `{"instances": [{column: value}]}`
  (TF Serving's row format).

And one over gRPC, `grpc-v2`: the same protocol's `inference.GRPCInferenceService/ModelInfer` at `grpc://host:port`
(or a bare `host:port`), the model and version named inside each ModelInferRequest, the tensors those of the `v2`
body (same names, shapes and datatypes) carried as raw contents (profilers/grpc_v2.py).

Bodies are built from a version's request log, the same rows the compare replays, and keep the dtypes the client
logged: a client that sends float64 features costs the server more than float32, so a load test that cast them
would measure another workload. v2 says the dtype outright (FP32, FP64, INT64, BYTES for text, ...); the other two
carry JSON numbers, floats written with a decimal point and integers without. A CSV log has no dtypes of its own
(its float64 is the parser's default), so its floats go as FP32 and its integers as INT64, as the replay batches
them (`profilers.runners.collate`). List cells become tensors with their shape; a batch of ragged lists is padded
with zeros to the longest, as the replay pads it. Every v2 tensor has a leading batch dimension (`[1, 32]` for one
request of 32 features), as the replay feeds the model and as Triton expects of a model that batches.

Bodies are serialized once, before the load starts: the generator only sends bytes, so JSON (or protobuf) encoding
never adds to the send lag it measures.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import numpy as np
import orjson
import pandas as pd

from diagnose.core.errors import UserError
from diagnose.core.redact import redact_url
from diagnose.core.requestlog import LOGGED_DTYPES
from profilers.runners import _pad_stack, _to_dense

GRPC_V2 = "grpc-v2"
PROTOCOLS = ("v2", "torchserve", "tfserving", GRPC_V2)
GRPC_PORTS = "Triton's is 8001, KServe's and MLServer's 8081, OVMS's 9000"

V2_DATATYPES = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
                "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
                "float32": "FP32", "float64": "FP64"}
_JSON = orjson.OPT_SERIALIZE_NUMPY


def _check(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


def grpc_address(url: str, key: str | None = None) -> str:
    """The gRPC server address `host:port` from `grpc://host:port` or a bare `host:port` (what grpcurl and Triton's
    clients take); anything else, an http:// URL above all, is one error naming the form. No default port: the
    servers' gRPC ports differ."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "grpc", text
    if scheme.lower() in ("http", "https"):
        raise UserError(f"--protocol grpc-v2 takes the server's gRPC address, grpc://HOST:PORT ({GRPC_PORTS}), not "
                        f"the {scheme} URL {redact_url(text)!r}; for the REST route use --protocol v2", key=key)
    try:
        parts = urlsplit(f"grpc://{rest}")
        port = parts.port
    except ValueError:
        port = None
    if (scheme.lower() != "grpc" or not parts.hostname or port is None or parts.username is not None
            or parts.path.strip("/") or parts.query or parts.fragment):
        raise UserError(f"expected a gRPC address grpc://HOST:PORT or HOST:PORT ({GRPC_PORTS}); got {redact_url(text)!r}",
                        key=key)
    return parts.netloc


def endpoint(base_url: str, protocol: str, model: str, version: str | None = None) -> str:
    """The inference URL of `model` (and `version`) on a server at `base_url`, in `protocol`'s route. For gRPC the
    channel's address, `grpc://host:port`: the model and version travel in each request message."""
    _check(protocol)
    if protocol == GRPC_V2:
        return f"grpc://{grpc_address(base_url)}"
    base, name = base_url.rstrip("/"), quote(model, safe="")
    tail = quote(version, safe="") if version else None
    if protocol == "v2":
        return f"{base}/v2/models/{name}" + (f"/versions/{tail}" if tail else "") + "/infer"
    if protocol == "torchserve":
        return f"{base}/predictions/{name}" + (f"/{tail}" if tail else "")
    return f"{base}/v1/models/{name}" + (f"/versions/{tail}" if tail else "") + ":predict"


def _as_logged(array: np.ndarray, logged: bool) -> np.ndarray:
    """The dtype the client sent: as read from a Parquet log; float32 / int64 for a CSV log (no dtypes of its own)."""
    if not logged and array.dtype.kind == "f":
        return array.astype(np.float32)
    if not logged and array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def _column(series: pd.Series, logged: bool):
    """One column as the bodies need it: an ndarray of scalars, a list of str, or a list of dense arrays (lists)."""
    values = series.to_numpy()
    if values.dtype != object:
        return _as_logged(values, logged)
    first = values[0]
    if isinstance(first, str):
        return [str(v) for v in values]
    if isinstance(first, (bytes, bytearray)):
        raise UserError(f"column {series.name!r} holds raw bytes, which a JSON request body cannot carry")
    if isinstance(first, (list, tuple, np.ndarray)):
        return [_as_logged(_to_dense(v), logged) for v in values]
    return _as_logged(np.asarray(values.tolist()), logged)


def _v2_input(name: str, column, rows: np.ndarray) -> dict:
    """One v2 input tensor of `rows` of a column: [batch, *cell shape], its datatype named from the numpy dtype."""
    if isinstance(column, np.ndarray):
        tensor = column[rows]
    elif isinstance(column[0], str):
        return {"name": name, "shape": [len(rows)], "datatype": "BYTES", "data": [column[i] for i in rows]}
    else:
        tensor = _pad_stack([column[i] for i in rows])
    datatype = V2_DATATYPES.get(tensor.dtype.name)
    if datatype is None:
        raise UserError(f"column {name!r} holds {tensor.dtype} values, which the v2 protocol has no datatype for")
    return {"name": name, "shape": list(tensor.shape), "datatype": datatype,
            "data": np.ascontiguousarray(tensor).ravel()}


def _row(names: list[str], columns: list, i: int) -> dict:
    """Row `i` as a JSON object {column: value}: numbers stay numbers, list cells nested lists, text strings."""
    return {name: column[i] for name, column in zip(names, columns, strict=True)}


def _body(protocol: str, names: list[str], columns: list, rows: np.ndarray, model: str | None,
          version: str | None) -> bytes:
    if protocol == GRPC_V2:
        from profilers.grpc_v2 import request_bytes

        inputs = [_v2_input(name, column, rows) for name, column in zip(names, columns, strict=True)]
        return request_bytes(inputs, model, version)
    if protocol == "v2":
        payload = {"inputs": [_v2_input(name, column, rows) for name, column in zip(names, columns, strict=True)]}
    elif protocol == "torchserve":
        objects = [_row(names, columns, i) for i in rows]
        payload = objects[0] if len(objects) == 1 else objects
    else:
        payload = {"instances": [_row(names, columns, i) for i in rows]}
    return orjson.dumps(payload, option=_JSON)


def batches(rows: int, batch_size: int) -> list[np.ndarray]:
    """Row indices of each body: every row sent at least once, every body full. The batch is capped at the log's
    length; the last batch wraps around to the log's first rows, so no body is smaller than the rest (a small
    last batch would be a cheaper request mixed into the load)."""
    size = max(1, min(int(batch_size), rows))
    count = -(-rows // size)
    return [np.arange(k * size, (k + 1) * size) % rows for k in range(count)]


def bodies(requests: pd.DataFrame, protocol: str, batch_size: int = 1, model: str | None = None,
           version: str | None = None) -> list[bytes]:
    """One JSON body per request row (per batch of `batch_size` rows), in the log's order; for gRPC a serialized
    ModelInferRequest, which names `model` and `version` (the REST routes name them in the URL). See the module doc."""
    _check(protocol)
    if protocol == GRPC_V2 and not model:
        raise UserError("a gRPC v2 request names its model: give the model's name on the server")
    if requests.shape[0] == 0 or requests.shape[1] == 0:
        raise UserError("the request log holds no requests to build bodies from")
    logged = requests.attrs.get(LOGGED_DTYPES, True)
    names = [str(c) for c in requests.columns]
    columns = [_column(requests[c], logged) for c in requests.columns]
    return [_body(protocol, names, columns, rows, model, version) for rows in batches(len(requests), batch_size)]


def _reason(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ok(status: int, body: bytes, protocol: str) -> str | None:
    """None when the response is a success, else a short reason. A 2xx status is not enough: a server that
    answers 200 with an error document or a truncated body did not serve the request, and counting it would
    credit the server with throughput it did not deliver. v2 must answer a JSON object with a non-empty
    `outputs` list, TF Serving one with `predictions` or `outputs`; TorchServe returns whatever the handler
    returns (JSON, a label, an image), so any non-empty body passes."""
    _check(protocol)
    if not 200 <= status < 300:
        return f"HTTP {status}" + (f": {_reason(body.decode('utf-8', 'replace'))}" if body else "")
    if protocol == "torchserve":
        return None if body else "empty response body"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"response is not JSON: {_reason(body.decode('utf-8', 'replace'))!r}"
    if not isinstance(document, dict):
        return f"response is a JSON {type(document).__name__}, not an object"
    if "error" in document:
        return f"error in the response: {_reason(str(document['error']))}"
    if protocol == "v2":
        outputs = document.get("outputs")
        return None if isinstance(outputs, list) and outputs else "response has no `outputs`"
    return None if "predictions" in document or "outputs" in document else "response has no `predictions`"
