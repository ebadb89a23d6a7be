"""A small inference server for the load-test tests, run as its own process: `python tests/loadtest_server.py PORT
SERVICE_MS WORKERS`. It speaks the Open Inference Protocol v2 over REST, holds `WORKERS` requests in service at
once (the rest wait in its queue, as a model server's), and exports Triton's counters on /metrics with the times it
really measured: queue (waiting for a worker) and compute (in service). Real queueing with a known capacity
(WORKERS / SERVICE_MS a second), which is what the search and the queue-versus-compute split are tested against;
the real model servers (TorchServe) are test_serve.py's."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def serve(port: int, service_ms: float, workers: int) -> None:
    from aiohttp import web

    slots = asyncio.Semaphore(workers)
    totals = {"success": 0, "request_us": 0.0, "queue_us": 0.0, "compute_us": 0.0}

    async def infer(request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.json()
        async with slots:
            started = time.perf_counter()
            await asyncio.sleep(service_ms / 1000)
            done = time.perf_counter()
        totals["success"] += 1
        totals["queue_us"] += (started - arrived) * 1e6
        totals["compute_us"] += (done - started) * 1e6
        totals["request_us"] += (done - arrived) * 1e6
        first = body["inputs"][0]
        return web.json_response({"model_name": request.match_info["model"], "outputs": [
            {"name": "output", "shape": [1, 1], "datatype": "FP32", "data": [float(len(first["data"]))]}]})

    async def metrics(_: web.Request) -> web.Response:
        labels = '{model="m",version="1"}'
        text = "".join(f"# TYPE {name} counter\n{name}{labels} {value}\n" for name, value in (
            ("nv_inference_request_success", totals["success"]),
            ("nv_inference_request_duration_us", totals["request_us"]),
            ("nv_inference_queue_duration_us", totals["queue_us"]),
            ("nv_inference_compute_infer_duration_us", totals["compute_us"])))
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(service_ms: float, workers: int = 1):
    """The server in a child process; yields its base URL once it answers."""
    port = free_port()
    child = subprocess.Popen([sys.executable, str(Path(__file__)), str(port), str(service_ms), str(workers)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/metrics", timeout=1).read()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the test server did not start: {child.stderr.read().decode()}") from None
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
