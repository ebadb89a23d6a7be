"""Bounded time: every network source gives up on a server that accepts a connection and never answers.

The collectors run with their default timeouts and their own HTTP clients (what a user gets), against a
socket on 127.0.0.1 that accepts, reads and stays silent; each must come back with an `error` or
`unavailable` Evidence after about 10 s (the timeout, and no retry of a read timeout), well before BOUND_S.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from collectors.kubernetes import KubernetesCollector
from collectors.prometheus import PrometheusCollector
from diagnose.core.evidence import collect_safely

BOUND_S = 30  # the 10 s timeout, plus room for a busy machine; a hang would run until pytest is killed
DEPLOYED_AT = "2026-11-20T10:00:00Z"


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers; closes them all on exit."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # the accept loop checks `stop` this often
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read to the end, never answered

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def timed_collect(collector):
    started = time.monotonic()
    evidence = collect_safely(collector)
    return evidence, time.monotonic() - started


def test_prometheus_that_never_answers_is_an_error_within_the_bound():
    pytest.importorskip("prometheus_api_client")
    with SilentServer() as server:
        collector = PrometheusCollector(server.url, "serving", "textclf-.*", "model", DEPLOYED_AT)
        evidence, elapsed = timed_collect(collector)
        assert server.accepted  # the collector did connect: the silence, not a refusal, is what it met
    assert evidence.status in ("error", "unavailable") and "timeout" in evidence.reason.lower(), evidence.reason
    assert elapsed < BOUND_S


def test_kubernetes_api_server_that_never_answers_is_an_error_within_the_bound(tmp_path: Path, monkeypatch):
    pytest.importorskip("kubernetes")
    with SilentServer() as server:
        config = tmp_path / "kubeconfig"
        config.write_text(json.dumps({  # JSON is YAML
            "apiVersion": "v1", "kind": "Config", "current-context": "silent",
            "clusters": [{"name": "silent", "cluster": {"server": server.url}}],
            "users": [{"name": "diag", "user": {"token": "t"}}],
            "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "diag"}}],
        }))
        monkeypatch.setenv("KUBECONFIG", str(config))
        collector = KubernetesCollector("serving", "app=textclf", "model", DEPLOYED_AT, node_events=True)
        evidence, elapsed = timed_collect(collector)
        assert server.accepted
    assert evidence.status in ("error", "unavailable") and "timeout" in evidence.reason.lower(), evidence.reason
    assert elapsed < BOUND_S
