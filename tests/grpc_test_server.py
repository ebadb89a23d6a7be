"""The gRPC v2 test server of tests/test_loadgen_grpc.py, in a module of its own: a spawned process imports it (and
only it: no torch, no pytest), where a forked copy of the test process carried that process's threads and gRPC core.

A real grpc.aio server on an ephemeral port of 127.0.0.1 with tritonclient's servicer. The model name picks the
behaviour: `delay-20` answers after 20 ms, `stall-800` answers in 2 ms but freezes 800 ms once, STALL_AFTER_S after
its first request, `flaky` fails every 4th call with INTERNAL, `abort-CODE` fails every call with that status code,
`hang` never answers, `empty` answers OK without outputs; every other name answers at once. Every request received is
sent back through the `received` queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import numpy as np

STALL_AFTER_S = 1.2


def serve(conn, received) -> None:
    """The server process: grpc.aio on an ephemeral port of 127.0.0.1, sent back through `conn`."""
    logging.disable(logging.CRITICAL)
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    answer = pb.ModelInferResponse(model_name="m", outputs=[pb.ModelInferResponse.InferOutputTensor(
        name="y", datatype="FP32", shape=[1])], raw_output_contents=[np.float32(0.5).tobytes()])

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
        def __init__(self):
            self.count: Counter = Counter()
            self.first: dict[str, float] = {}
            self.stall_until: dict[str, float] = {}

        async def ModelInfer(self, request, context):
            model = request.model_name
            kind, arg, *_ = (model + "-0").split("-")
            self.count[model] += 1
            received.put(request.SerializeToString())
            if kind == "delay":
                await asyncio.sleep(float(arg) / 1e3)
            elif kind == "stall":
                now = time.monotonic()
                first = self.first.setdefault(model, now)
                if model not in self.stall_until and now - first >= STALL_AFTER_S:
                    self.stall_until[model] = now + float(arg) / 1e3
                await asyncio.sleep(max(0.0, self.stall_until.get(model, 0.0) - now) + 0.002)
            elif kind == "flaky" and self.count[model] % 4 == 0:
                await context.abort(grpc.StatusCode.INTERNAL, "injected failure")
            elif kind == "abort":
                await context.abort(grpc.StatusCode[arg], f"injected {arg}")
            elif kind == "hang":
                await asyncio.sleep(3600)
            elif kind == "empty":
                return pb.ModelInferResponse(model_name=model)
            return answer

    async def main():
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(port)
        await server.wait_for_termination()

    asyncio.run(main())
