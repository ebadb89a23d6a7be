"""The open-loop generator over gRPC (`--protocol grpc-v2`) against a real grpc.aio server on 127.0.0.1.

The server runs in a spawned process (tests/grpc_test_server.py, which says what each model name does) and
implements `inference.GRPCInferenceService/ModelInfer` with the servicer of the stubs the client uses
(tritonclient's). Every request the server receives is sent back to the test through a queue, so what went over the
wire is checked with tritonclient's own decoders.

Timing assertions are about the class of outcome, with wide margins: this is a noisy 2-core machine.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import socket
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import requests_frame, run_cli
from grpc_test_server import STALL_AFTER_S, serve

from diagnose.core.errors import UserError
from diagnose.core.requestlog import load_requests
from profilers.grpc_v2 import outcome
from profilers.loadgen import LoadPlan, Target, run_load
from profilers.protocols import bodies, endpoint, grpc_address


class Server:
    def __init__(self, port: int, received):
        self.address, self.url = f"127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"
        self._received, self._seen = received, defaultdict(list)

    def received(self, model: str, expected: int) -> list:
        """The ModelInferRequests `model` received, once `expected` of them have come through the queue."""
        from tritonclient.grpc import service_pb2 as pb

        deadline = time.monotonic() + 10
        while len(self._seen[model]) < expected and time.monotonic() < deadline:
            try:
                request = pb.ModelInferRequest.FromString(self._received.get(timeout=0.5))
            except queue.Empty:
                continue
            self._seen[request.model_name].append(request)
        return self._seen[model]


def _started_server():
    # spawned, not forked: a fork of this process (its gRPC core already started by earlier tests' clients, torch's
    # threads running) gave a server that froze for seconds in CI, with every target's latency in the hundreds of ms
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    received = context.Queue()
    process = context.Process(target=serve, args=(child, received), daemon=True)
    process.start()
    try:
        assert parent.poll(30), "the test server did not start"
        yield Server(parent.recv(), received)
    finally:
        process.terminate()
        process.join(10)


@pytest.fixture(scope="module")
def server():
    yield from _started_server()


@pytest.fixture(scope="module")
def second_server():
    """Another server process: the stall test's frozen server is not the steady one's, as two deployments are not."""
    yield from _started_server()


def _target(server: Server, model: str, name: str = "", body=None, url: str | None = None) -> Target:
    frame = pd.DataFrame({"x": [np.float32(1.5)]})
    return Target(name, endpoint(url or server.url, "grpc-v2", model), "grpc-v2",
                  tuple(body or bodies(frame, "grpc-v2", model=model)))


def _decoded(request) -> dict:
    """{input name: (datatype, shape, values)} decoded with tritonclient's own helpers, as a Triton client would."""
    from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

    out = {}
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        if tensor.datatype == "BYTES":
            values = np.array([b.decode() for b in deserialize_bytes_tensor(raw)], dtype=object)
        else:
            values = np.frombuffer(raw, dtype=np.dtype(triton_to_np_dtype(tensor.datatype)).newbyteorder("<"))
        out[tensor.name] = (tensor.datatype, list(tensor.shape), values.reshape(list(tensor.shape)))
    return out


# --- timing: a steady server and a stall, on one schedule -----------------------------------------------------------
@pytest.fixture(scope="module")
def steady_and_stalled(server, second_server):
    """50 arrivals a second for 3 s to a 20 ms server and, half a gap later each time, to another that freezes 800 ms
    once."""
    plan = LoadPlan(rate_rps=50, duration_s=3, warmup_s=0.3, window_s=1)
    return run_load([_target(server, "delay-20", "steady"), _target(second_server, "stall-800", "stalled")], plan)


def test_a_steady_server_is_measured_at_its_delay(steady_and_stalled):
    steady = steady_and_stalled.summary("steady")
    assert steady["requests"] == steady["ok"] == 150 and steady["errors"] == {}
    assert steady["statuses"] == {"OK": 150}
    assert abs(steady["achieved_rps"] - 50) < 50 * 0.1
    assert 20 <= steady["latency_ms"]["p50"] <= 35, steady["latency_ms"]
    assert steady["latency_ms"]["p99"] < 300, steady["latency_ms"]  # far below the other side's stall
    assert steady["service_ms"]["p50"] <= steady["latency_ms"]["p50"]


def test_a_stall_shows_in_the_open_loop_p99_as_the_servers_wait(steady_and_stalled):
    result = steady_and_stalled
    stalled = result.summary("stalled")
    assert stalled["ok"] == stalled["requests"] == 150
    assert stalled["latency_ms"]["p50"] < 30 and stalled["latency_ms"]["p99"] > 500, stalled["latency_ms"]
    samples = result.samples[result.samples["target"] == "stalled"]
    start = samples["sent_s"].min()
    offset = samples["intended_s"] - start
    during = samples[(offset > STALL_AFTER_S + 0.1) & (offset < STALL_AFTER_S + 0.6)]
    assert len(during) >= 20 and during["latency_ms"].min() > 150  # every arrival scheduled in the stall waited ...
    assert (during["latency_ms"] - during["service_ms"]).median() < 20  # ... sent on time: the wait was the server's


# --- failures: status codes, deadlines, the in-flight cap, an unreachable port -----------------------------------------
def test_status_codes_become_outcomes_and_statuses(server):
    plan = LoadPlan(rate_rps=40, duration_s=0.5, warmup_s=0, timeout_s=0.3, window_s=0.5)
    result = run_load([_target(server, "flaky", "flaky"), _target(server, "abort-RESOURCE_EXHAUSTED", "full")], plan)
    flaky, full = result.summary("flaky"), result.summary("full")
    assert flaky["requests"] == 20 and flaky["errors"] == {"grpc_error": 5} and flaky["ok"] == 15
    assert flaky["statuses"] == {"INTERNAL": 5, "OK": 15}
    assert flaky["error_examples"]["grpc_error"] == "INTERNAL: injected failure"
    assert full["errors"] == {"grpc_error": 20} and full["statuses"] == {"RESOURCE_EXHAUSTED": 20}

    result = run_load([_target(server, "hang", "hang"), _target(server, "abort-UNAVAILABLE", "refusing")], plan)
    hang, refusing = result.summary("hang"), result.summary("refusing")
    assert hang["errors"] == {"timeout": 20} and hang["statuses"] == {"DEADLINE_EXCEEDED": 20}
    assert hang["latency_ms"]["p50"] is None and "no answer within 0.3 s" in hang["error_examples"]["timeout"]
    waited = result.samples.loc[result.samples["target"] == "hang", "service_ms"]
    assert waited.between(250, 1000).all(), waited.describe()  # each call ended at its deadline
    assert refusing["errors"] == {"connection_error": 20} and refusing["statuses"] == {"UNAVAILABLE": 20}

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        closed = f"grpc://127.0.0.1:{sock.getsockname()[1]}"
    result = run_load([_target(server, "empty", "empty"), _target(server, "m", "closed", url=closed)], plan)
    assert result.summary("empty")["errors"] == {"bad_response": 20}
    assert result.summary("empty")["error_examples"]["bad_response"] == "response has no `outputs`"
    assert result.summary("closed")["errors"] == {"connection_error": 20}
    assert (result.samples.loc[result.samples["target"] == "closed", "service_ms"] < 1000).all()

    capped = run_load([_target(server, "hang")], LoadPlan(40, 1, 0, timeout_s=0.3, max_in_flight=5)).summary()
    assert capped["errors"]["dropped"] >= 15 and capped["errors"]["timeout"] >= 10, capped["errors"]
    assert capped["errors"]["dropped"] + capped["errors"]["timeout"] == 40
    assert capped["generator"]["bottleneck"] and "dropped" in capped["generator"]["reason"]


def test_a_response_that_is_not_a_model_infer_response_is_bad():
    assert outcome("OK", b"\xff\xff\xff", 1.0)[0] == "bad_response"
    assert outcome("NOT_FOUND", "model 'm' is not found", 1.0) == ("grpc_error", "NOT_FOUND: model 'm' is not found")
    assert outcome("DEADLINE_EXCEEDED", "Deadline Exceeded", 2.0)[0] == "timeout"


# --- what goes over the wire --------------------------------------------------------------------------------------------
def _logs(tmp_path) -> dict[str, pd.DataFrame]:
    """Scalars in each dtype beside text (read back from Parquet, dtypes kept), and float32 vectors."""
    from fixtures.builders.textclf import make_requests

    scalars = pd.DataFrame({"f64": np.linspace(0.1, 0.8, 8), "i64": np.arange(8, dtype=np.int64),
                            "f32": np.linspace(1, 2, 8).astype(np.float32), "flag": np.arange(8) % 2 == 0,
                            "i8": np.arange(8, dtype=np.int8) - 4, "text": make_requests("v1").head(8)["text"]})
    scalars.to_parquet(tmp_path / "scalars.parquet")
    requests_frame(rows=8).to_parquet(tmp_path / "vectors.parquet")
    return {name: load_requests(tmp_path / f"{name}.parquet") for name in ("scalars", "vectors")}


def test_the_server_receives_the_logged_values_and_dtypes_as_the_rest_body_carries_them(server, tmp_path):
    logs = _logs(tmp_path)
    scalars, vectors = logs["scalars"], logs["vectors"]
    plan = LoadPlan(rate_rps=40, duration_s=0.5, warmup_s=0, window_s=0.5)
    targets = [Target("scalars", endpoint(server.address, "grpc-v2", "record-scalars"), "grpc-v2",
                      bodies(scalars, "grpc-v2", model="record-scalars", version="7")),
               Target("vectors", endpoint(server.address, "grpc-v2", "record-vectors"), "grpc-v2",
                      bodies(vectors, "grpc-v2", batch_size=3, model="record-vectors"))]
    result = run_load(targets, plan)
    assert all(result.summary(t.name)["ok"] == 20 for t in targets)

    rows = []
    for request in server.received("record-scalars", 20):
        assert (request.model_name, request.model_version) == ("record-scalars", "7")
        sent = _decoded(request)
        assert {n: d for n, (d, _, _) in sent.items()} == {"f64": "FP64", "i64": "INT64", "f32": "FP32", "flag": "BOOL",
                                                           "i8": "INT8", "text": "BYTES"}
        i = int(sent["i64"][2][0])
        rows.append(i)
        for name, (_, shape, values) in sent.items():
            assert shape == [1] and values[0] == scalars[name].iloc[i] and values.dtype.kind == (
                "O" if name == "text" else scalars[name].to_numpy().dtype.kind), name
            assert name == "text" or values.dtype.itemsize == scalars[name].to_numpy().dtype.itemsize, name
    assert Counter(rows) == Counter(k % 8 for k in range(20))  # the log's rows in turn, each body as logged

    # the same tensors as the REST v2 body of each row: names, shapes, datatypes and values
    for rest, grpc_body in zip(bodies(scalars, "v2"), bodies(scalars, "grpc-v2", model="m"), strict=True):
        from tritonclient.grpc import service_pb2 as pb

        sent = _decoded(pb.ModelInferRequest.FromString(grpc_body))
        for tensor in orjson.loads(rest)["inputs"]:
            datatype, shape, values = sent[tensor["name"]]
            assert (datatype, shape) == (tensor["datatype"], tensor["shape"])
            assert np.array_equal(values.ravel(), np.asarray(tensor["data"], dtype=values.dtype)), tensor["name"]

    expected = [np.stack([vectors["x"].iloc[i % 8] for i in range(k, k + 3)]) for k in (0, 3, 6)]  # wraps to row 0
    matched = []
    for request in server.received("record-vectors", 20):
        datatype, shape, values = _decoded(request)["x"]
        assert datatype == "FP32" and shape == [3, 32] and request.model_version == ""
        matched.append(next(k for k, e in enumerate(expected) if np.array_equal(values, e)))
    assert Counter(matched) == Counter(k % 3 for k in range(20))


def test_a_csv_log_goes_as_fp32_and_int64(tmp_path):
    from tritonclient.grpc import service_pb2 as pb

    path = tmp_path / "requests.csv"
    pd.DataFrame({"a": [0.5, 1.5], "b": [1, 2]}).to_csv(path, index=False)
    sent = _decoded(pb.ModelInferRequest.FromString(bodies(load_requests(path), "grpc-v2", model="m")[1]))
    assert [(d, v.dtype.name, v.tolist()) for d, _, v in sent.values()] == [("FP32", "float32", [1.5]),
                                                                             ("INT64", "int64", [2])]


# --- addresses, the command, a missing package ---------------------------------------------------------------------------
@pytest.mark.parametrize("url, address", [("grpc://triton:8001", "triton:8001"), ("10.0.0.5:8081", "10.0.0.5:8081"),
                                          ("grpc://[::1]:9000/", "[::1]:9000"), (" GRPC://h:1 ", "h:1")])
def test_a_grpc_address_is_host_and_port(url, address):
    assert grpc_address(url) == address
    assert endpoint(url, "grpc-v2", "any", "3") == f"grpc://{address}"


@pytest.mark.parametrize("url, says", [("http://triton:8001", "not the http URL"), ("https://h:443", "--protocol v2"),
                                       ("grpc://triton", "HOST:PORT"), ("triton", "HOST:PORT"),
                                       ("grpc://h:8001/v2/models/m", "HOST:PORT"), ("grpcs://h:443", "HOST:PORT"),
                                       ("grpc://user:secret@h:1", "HOST:PORT"), ("h:99999", "HOST:PORT")])
def test_anything_else_is_one_clear_error(url, says):
    with pytest.raises(UserError, match="grpc://HOST:PORT") as caught:
        grpc_address(url, "URL")
    assert says in str(caught.value) and str(caught.value).startswith("URL: ") and "secret" not in str(caught.value)


def test_the_command_writes_a_run_folder_over_grpc(server, tmp_path):
    requests_frame(rows=4).to_parquet(tmp_path / "requests.parquet")
    common = ("--protocol", "grpc-v2", "--server-model", "record-cli", "--requests", str(tmp_path / "requests.parquet"))
    result = run_cli("loadtest", server.address, *common, "--server-version", "2", "--rate", "20", "--duration", "0.9",
                     "--window", "0.3", "--warmup", "0.2", "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    evidence = json.loads(result.stdout)
    side = evidence["steps"][0]["sides"][""]
    assert evidence["protocol"] == "grpc-v2" and side["requests"] == side["ok"] == 18 and side["statuses"] == {"OK": 18}
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["protocol"] == "grpc-v2"
    samples = pd.read_parquet(run / "load_samples.parquet")
    assert len(samples) == 22 and set(samples["status"]) == {"OK"} and set(samples["outcome"]) == {"ok"}
    assert "over grpc-v2" in (run / "loadtest.md").read_text()
    received = server.received("record-cli", 22)
    assert len(received) == 22 and {r.model_version for r in received} == {"2"}

    for url, says in (("http://127.0.0.1:8001", "--protocol v2"), ("grpc://127.0.0.1", "HOST:PORT")):
        refused = run_cli("loadtest", url, *common, "--out", str(tmp_path / "refused"))
        assert refused.returncode == 2 and says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    rest = run_cli("loadtest", server.url, *common[2:], "--protocol", "v2", "--out", str(tmp_path / "refused"))
    assert rest.returncode == 2 and "needs --protocol grpc-v2" in rest.stderr
    assert not (tmp_path / "refused").exists()


def test_a_missing_grpc_package_is_one_line_naming_the_requirement(server, tmp_path, monkeypatch):
    requests_frame(rows=2).to_parquet(tmp_path / "requests.parquet")
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import tritonclient.grpc now raises ImportError
    result = run_cli("loadtest", server.address, "--protocol", "grpc-v2", "--server-model", "m", "--requests",
                     str(tmp_path / "requests.parquet"), "--duration", "3", "--window", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert 'pip install "tritonclient>=' in result.stderr and "grpcio" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
