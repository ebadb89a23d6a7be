"""The Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService/ModelInfer`, as Triton, KServe, MLServer and
OpenVINO Model Server serve it, for the open-loop generator (profilers/loadgen.py).

The messages are the protocol's own, from the stubs NVIDIA ships in `tritonclient` (`tritonclient.grpc.service_pb2`,
generated from the same grpc_service.proto that KServe publishes), imported only when a gRPC load runs. Each request
is serialized once, before the load starts, and sent as bytes on a `grpc.aio` channel (no serializer on the call), as
the HTTP path sends prebuilt JSON: encoding never adds to the send lag the generator measures. The answer is taken as
bytes too; the generator stamps its arrival before `outcome` parses it, since the parse is the client's work.

Tensors travel in `raw_input_contents` (one little-endian byte string per input, in the order of `inputs`; BYTES
elements each prefixed by their 4-byte length), not in the typed `contents` lists. Both forms are in the protocol and
Triton, KServe's model server (`InferInput.as_numpy`), MLServer and OVMS decode both; raw is the one that carries every
datatype the REST bodies carry (FP16 has no typed field), and the one Triton's own clients and perf_analyzer send, so
the server pays the decode a production client costs it (a memcpy, not a field-by-field parse). A server that reads
only the typed lists (TorchServe's KServe wrapper) sees empty inputs and answers an error, which the load test counts.

Status mapping: OK with a non-empty `outputs` list is `ok` (an OK whose outputs are missing or unparseable is
`bad_response`); DEADLINE_EXCEEDED (the `--timeout` deadline, or the server's own) is `timeout`; UNAVAILABLE (refused,
reset, unreachable, or a server that says it cannot serve) is `connection_error`; any other code is `grpc_error`. The
code's name is the sample's status.
"""

from __future__ import annotations

import struct

import numpy as np

from diagnose.core.errors import UserError, first_line

REQUIREMENT = '"tritonclient>=2.64,<2.70" "grpcio>=1.63"'  # tritonclient without its [grpc] extra: see docs/loadtest.md
SERVICE, METHOD = "GRPCInferenceService", "ModelInfer"
# Each target gets its own connection (a channel otherwise shares its subchannel with every channel to the same
# address: old and new on one host would share one TCP connection); no message size cap (an image batch passes
# gRPC's default 4 MiB); no retries, so a failed call is counted, not resent (aiohttp does not retry either).
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1),
                   ("grpc.max_receive_message_length", -1), ("grpc.enable_retries", 0))


def stubs():
    """(grpc, service_pb2), or one line naming what to install."""
    try:
        import grpc
        from tritonclient.grpc import service_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError when grpc is missing
        raise UserError(f"--protocol grpc-v2 needs the gRPC stubs: pip install {REQUIREMENT} ({first_line(exc)})") from None
    return grpc, service_pb2


def method_path() -> str:
    """"/inference.GRPCInferenceService/ModelInfer", read from the stubs' service descriptor."""
    _, pb = stubs()
    service = pb.DESCRIPTOR.services_by_name[SERVICE]
    return f"/{service.full_name}/{service.methods_by_name[METHOD].name}"


def raw_contents(data, datatype: str) -> bytes:
    """One input's `raw_input_contents`: the array's bytes in little-endian row-major order, or for BYTES each
    element's UTF-8 bytes behind its length as a little-endian uint32 (the protocol's serialization of strings)."""
    if datatype == "BYTES":
        items = [s.encode() if isinstance(s, str) else bytes(s) for s in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    array = np.ascontiguousarray(data)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def request_bytes(inputs: list[dict], model: str, version: str | None = None) -> bytes:
    """A serialized ModelInferRequest for `model` (and `version`) from v2 input tensors as protocols._v2_input builds
    them for REST (`name`, `shape`, `datatype`, `data`): the same shapes and datatypes, the data as raw contents."""
    _, pb = stubs()
    request = pb.ModelInferRequest(model_name=model, model_version=version or "")
    for tensor in inputs:
        request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        request.raw_input_contents.append(raw_contents(tensor["data"], tensor["datatype"]))
    return request.SerializeToString()


def outcome(code: str, answer: bytes | str, timeout_s: float) -> tuple[str, str]:
    """(outcome, reason) of one finished call: see the module doc. `answer` is the response's bytes when the code is
    OK, else the status details."""
    if code == "OK":
        from google.protobuf.message import DecodeError

        _, pb = stubs()
        try:
            response = pb.ModelInferResponse.FromString(answer)
        except DecodeError as exc:
            return "bad_response", f"response is not a ModelInferResponse: {first_line(exc, 80)}"
        return ("ok", "") if len(response.outputs) else ("bad_response", "response has no `outputs`")
    details = f"{code}: {' '.join(str(answer).split())}"[:120].rstrip(": ")
    if code == "DEADLINE_EXCEEDED":
        return "timeout", f"no answer within {timeout_s:g} s ({code})"
    if code == "UNAVAILABLE":
        return "connection_error", details
    return "grpc_error", details


class Client:
    """One target's channel. Made inside the running event loop (a grpc.aio channel belongs to the loop it was made
    in); `headers` (e.g. Authorization) go as call metadata, lower-cased as gRPC requires."""

    def __init__(self, address: str, timeout_s: float, headers: dict | None = None):
        self._grpc, _ = stubs()
        self.timeout_s = timeout_s
        self.channel = self._grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._infer = self.channel.unary_unary(method_path())  # bytes in, bytes out
        self._metadata = tuple((k.lower(), str(v)) for k, v in (headers or {}).items()) or None

    async def infer(self, body: bytes) -> tuple[str, bytes | str]:
        """(status code name, the response bytes when OK, else the status details): a call's failure is its result,
        never an exception, so the generator records it as it records an HTTP status."""
        try:
            return "OK", await self._infer(body, timeout=self.timeout_s, metadata=self._metadata)
        except self._grpc.aio.AioRpcError as exc:
            return exc.code().name, exc.details() or ""

    async def close(self) -> None:
        await self.channel.close()
