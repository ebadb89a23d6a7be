"""The Kubernetes collector: the official client over real HTTP against a replay server, and offline files.

The replay server (tests/k8s_replay.py) answers in the API server's own JSON from the recorded objects in
fixtures/signals/kubernetes/ (deployment `textclf` in namespace `serving`, rolled out at 2026-11-20T10:00Z
from revision 7 to 8; two of its three pods OOMKilled since). The last test runs against a real cluster when
KUBECONFIG points at one.
"""

from __future__ import annotations

import copy
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from k8s_replay import ReplayServer

from collectors.kubernetes import KubernetesCollector, parse_quantity, read_offline, save_offline, selector_matches
from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence, collect_safely

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "signals" / "kubernetes"
HEALTHY = FIXTURES / "healthy"
DEPLOY = {"namespace": "serving", "selector": "app=textclf,version=v2", "container": "model",
          "deployed_at": "2026-11-20T10:00:00Z"}
OFFLINE = {k: DEPLOY[k] for k in ("selector", "container", "deployed_at")}
TIMEOUT_S = 0.5


def fixture_items(name: str, folder: Path = FIXTURES) -> list[dict]:
    return json.loads((folder / name).read_text())["items"]


def other_app() -> dict:
    """Objects of another deployment in the same namespace, with restarts and OOM kills of their own: a
    selector that is not applied would count them."""
    pod = copy.deepcopy(fixture_items("pods.json")[0])
    pod["metadata"].update(name="feature-cache-6c4f9d8b7-r5t6v", generateName="feature-cache-6c4f9d8b7-",
                           labels={"app": "feature-cache", "pod-template-hash": "6c4f9d8b7"})
    pod["spec"]["nodeName"] = "gke-prod-serving-pool-2-8f3a1c2e-r4tz"
    pod["status"]["containerStatuses"][0]["restartCount"] = 11
    rs = copy.deepcopy(fixture_items("replicasets.json")[1])
    rs["metadata"].update(name="feature-cache-6c4f9d8b7", labels={"app": "feature-cache", "pod-template-hash": "6c4f9d8b7"})
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "31"
    return {"pods": [pod], "replicasets": [rs]}


@pytest.fixture
def k8s():
    return pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (pip install kubernetes)")


@pytest.fixture
def make_client(k8s):
    """ApiClients whose Configuration.host is the replay server, closed after the test."""
    made = []

    def make(url: str, **settings):
        cfg = k8s.client.Configuration(host=url)
        cfg.no_proxy = "127.0.0.1,localhost"  # a proxy in the environment must not take localhost calls
        for key, value in settings.items():
            setattr(cfg, key, value)
        made.append(k8s.client.ApiClient(cfg))
        return made[-1]

    yield make
    for client in made:
        client.close()


def collector(client, timeout_s=TIMEOUT_S, **overrides) -> KubernetesCollector:
    settings = {**DEPLOY, "page_size": 1, "node_events": True, **overrides}
    return KubernetesCollector(api_client=client, timeout_s=timeout_s, **settings)


# --- live, over HTTP ---------------------------------------------------------------------------------------


def test_live_pods_events_and_rollout_over_http_with_paging(make_client):
    with ReplayServer(FIXTURES, extra=other_app()) as server:
        ev = collector(make_client(server.url)).collect()
        pod_calls, event_calls = server.calls("pods"), server.calls("events", "serving")
        rs_calls, node_calls = server.calls("replicasets"), server.calls("events", "default")
    assert ev.ok, ev.reason
    d = ev.data
    # paged one object at a time: 3 matching pods -> 3 requests, each with the selector and limit=1; the first
    # without a continue token, the others with the token the previous page returned
    assert len(pod_calls) == 3
    assert all(q["labelSelector"] == "app=textclf,version=v2" and q["limit"] == "1" for q in pod_calls)
    assert "continue" not in pod_calls[0] and all(q["continue"] for q in pod_calls[1:])
    assert len(event_calls) == len(fixture_items("events.json")) and len(rs_calls) == 1
    assert len(node_calls) == len(fixture_items("node-events.json"))
    assert all(q["fieldSelector"] == "involvedObject.kind=Node" for q in node_calls)

    assert d["pod_count"] == 3 and d["ready_pods"] == 2
    assert [p["name"] for p in d["pods"]] == ["textclf-7d9f8b6c5d-m2n8t", "textclf-7d9f8b6c5d-q7w9z",
                                               "textclf-7d9f8b6c5d-x4k2p"]
    assert d["restarts"] == 6 and d["oom_kills"] == 2 and d["oom_kills_total"] == 2
    x4 = d["pods"][2]
    assert x4["node"] == "gke-prod-serving-pool-2-8f3a1c2e-k7pq" and x4["phase"] == "Running"
    assert (x4["restarts"], x4["last_terminated_reason"], x4["last_terminated_at"], x4["last_exit_code"]) == \
        (4, "OOMKilled", "2026-11-20T10:32:05Z", 137)
    assert x4["oom_killed"] is True and x4["containers"] == ["model"]
    assert x4["limits"] == {"cpu": "2", "cpu_cores": 2.0, "memory": "2Gi", "memory_bytes": 2 * 2**30}
    assert x4["requests"] == {"cpu": "1", "cpu_cores": 1.0, "memory": "1536Mi", "memory_bytes": 1536 * 2**20}
    assert d["pods"][1]["waiting_reason"] == "CrashLoopBackOff"
    assert d["pods"][0]["restarts"] == 0 and d["pods"][0]["oom_killed"] is False
    # sidecar events, the other app's events, and the OOM kill on a node without these pods do not count
    assert d["events"] == {"OOMKilling": 6, "SystemOOM": 0, "Evicted": 1, "BackOff": 23, "Killing": 2,
                           "Unhealthy": 6, "FailedScheduling": 2}
    assert set(d["events_before"].values()) == {0}
    assert d["rollout"]["revision"] == 8 and d["rollout"]["created_at"] == "2026-11-20T10:00:00Z"
    assert [r["name"] for r in d["rollout"]["replicasets"]] == ["textclf-7d9f8b6c5d"]
    assert d["deployed_at"] == "2026-11-20T10:00:00Z" and d["deployed_at_source"] == "manifest"
    assert d["window_start"] == "2026-11-20T09:00:00Z"
    assert "2 of 3 pods OOMKilled since the deploy (limit memory 2Gi)" in ev.summary
    assert "pod textclf-7d9f8b6c5d-x4k2p restarted 4 times (last: OOMKilled at 10:32 UTC, exit code 137)" in ev.summary
    assert "CPU limit 2 cores per pod (request 1 core)" in ev.summary
    assert any(line.startswith("events since 09:00 UTC") and "OOMKilling 6" in line for line in ev.summary)
    json.dumps(ev.to_dict())  # JSON-able, as the evidence file needs


def test_the_replay_server_applies_the_label_selector(make_client):
    with ReplayServer(FIXTURES, extra=other_app()) as server:
        client = make_client(server.url)
        everything = collector(client, selector="app=textclf", container=None, deployed_at=None).collect()
        other = collector(client, selector="app=feature-cache").collect()
        set_based = collector(client, selector="app in (textclf, web),version!=v1").collect()
        bad = collector(client, selector="app=(textclf").collect()
    # without version= both ReplicaSets match: the rollout goes 7 -> 8, and its time dates the deploy
    assert [p["name"] for p in other.data["pods"]] == ["feature-cache-6c4f9d8b7-r5t6v"]
    assert everything.data["pod_count"] == 3 and everything.data["restarts"] == 7  # + the sidecar's restart
    assert everything.data["rollout"]["revision"] == 8 and everything.data["rollout"]["previous_revision"] == 7
    assert everything.data["deployed_at_from_rollout"] == "2026-11-20T10:00:00Z"
    assert any("previous revision 7 (textclf-5b8c9d7f4, now 0 replicas)" in line for line in everything.summary)
    assert "deploy time taken from the rollout (no deployed_at given): 2026-11-20T10:00:00Z" in everything.summary
    assert set_based.data["pod_count"] == 3
    assert bad.status == "error" and bad.reason.startswith("RuntimeError: 400 Bad Request") and "parse" in bad.reason


def test_live_equals_offline_and_save_offline_round_trips(make_client, tmp_path):
    with ReplayServer(FIXTURES, extra=other_app()) as server:
        live_collector = collector(make_client(server.url))
        live = live_collector.collect()
    assert live.ok
    written = live_collector.save(tmp_path)
    assert sorted(p.name for p in written) == ["events.json", "node-events.json", "pods.json", "replicasets.json"]
    saved = json.loads((tmp_path / "pods.json").read_text())
    assert saved["kind"] == "List" and saved["items"][0]["kind"] == "Pod" and saved["items"][0]["apiVersion"] == "v1"
    assert read_offline(tmp_path, **OFFLINE).to_dict() == live.to_dict()
    # the recorded files, read offline, give the same evidence as the same data served live
    assert read_offline(FIXTURES, **OFFLINE).to_dict() == live.to_dict()


def test_forbidden_pods_is_an_error_naming_the_permission(make_client):
    with ReplayServer(FIXTURES, mode="forbidden") as server:
        ev = collector(make_client(server.url)).collect()
    assert ev.status == "error"
    assert ev.reason.startswith('PermissionError: 403 Forbidden: cannot list pods in namespace "serving" (needs list '
                                'on pods; see docs/signals.md for the minimal Role)')
    assert 'User "system:serviceaccount:default:diag" cannot list resource "pods"' in ev.reason
    assert "\n" not in ev.reason


def test_forbidden_events_is_an_error_but_forbidden_replicasets_keeps_the_pods(make_client):
    with ReplayServer(FIXTURES, mode="forbidden", only="events") as server:
        events = collector(make_client(server.url), node_events=False).collect()
    assert events.status == "error" and "cannot list events in namespace \"serving\" (needs list on events" in events.reason
    with ReplayServer(FIXTURES, mode="forbidden", only="replicasets") as server:
        rs = collector(make_client(server.url)).collect()
    assert rs.ok and rs.data["oom_kills"] == 2 and rs.data["rollout"] is None
    assert 'needs list on replicasets in API group "apps"' in rs.data["unreadable"]["replicasets"]
    assert any(line.startswith("replicasets not read: 403 Forbidden") for line in rs.summary)


def test_forbidden_node_events_are_noted_and_the_rest_is_kept(make_client):
    with ReplayServer(FIXTURES, mode="forbidden", only="default/events") as server:
        ev = collector(make_client(server.url)).collect()
    assert ev.ok and ev.data["events"]["OOMKilling"] == 0 and ev.data["events"]["BackOff"] == 23
    assert ev.data["unreadable"]["node events"].startswith('403 Forbidden: cannot list events in namespace "default"')
    assert any(line.startswith("node events not read: 403 Forbidden") for line in ev.summary)


def test_from_deployment_takes_the_manifest_mapping(make_client):
    deployment = {**DEPLOY, "deployed_at": datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)}  # as YAML gives it
    with ReplayServer(FIXTURES) as server:
        ev = KubernetesCollector.from_deployment(deployment, api_client=make_client(server.url),
                                                 timeout_s=TIMEOUT_S, node_events=True).collect()
    assert ev.to_dict() == read_offline(FIXTURES, **OFFLINE).to_dict()


def test_unauthorized_is_an_error(make_client):
    with ReplayServer(FIXTURES, token="the-right-token") as server:
        ev = collector(make_client(server.url, api_key={"authorization": "Bearer expired"})).collect()
    assert ev.status == "error"
    assert ev.reason.startswith('PermissionError: 401 Unauthorized: cannot list pods in namespace "serving"')
    assert "needs list on pods" in ev.reason


def test_server_error_is_an_error_with_the_reason(make_client):
    with ReplayServer(FIXTURES, mode="error") as server:
        ev = collector(make_client(server.url)).collect()
    assert ev.status == "error"
    assert ev.reason.startswith("RuntimeError: 500 Internal Server Error") and "etcdserver: request timed out" in ev.reason


def test_a_slow_api_server_times_out_within_a_bounded_time(make_client):
    server = ReplayServer(FIXTURES, mode="slow", delay_s=30).start()
    try:
        started = time.monotonic()
        ev = collector(make_client(server.url)).collect()
        elapsed = time.monotonic() - started
        attempts = len(server.calls("pods"))
    finally:
        stopping = time.monotonic()
        server.stop()  # wakes the handlers still sleeping: teardown is bounded too
        assert time.monotonic() - stopping < 3
    assert ev.status == "error"
    assert ev.reason.startswith("TimeoutError: no answer from the API server") and "0.5 s timeout" in ev.reason
    # an injected client keeps its own retry policy (urllib3 retries a read timeout 3 times by default)
    assert attempts <= 4 and elapsed < attempts * TIMEOUT_S + 2


# --- the collector's own client (kubeconfig) ----------------------------------------------------------------


def write_kubeconfig(path: Path, url: str, token: str) -> Path:
    path.write_text(json.dumps({  # JSON is YAML
        "apiVersion": "v1", "kind": "Config", "current-context": "replay",
        "clusters": [{"name": "replay", "cluster": {"server": url}}],
        "users": [{"name": "diag", "user": {"token": token}}],
        "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "diag", "namespace": "serving"}}],
    }))
    return path


def test_kubeconfig_client_authenticates_and_does_not_retry_a_timeout(k8s, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ReplayServer(FIXTURES, token="s3cret") as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", server.url, "s3cret")))
        ev = KubernetesCollector(**DEPLOY, timeout_s=TIMEOUT_S).collect()
        assert set(server.authorizations) == {"Bearer s3cret"}, (ev.reason, server.requests)
    assert ev.ok and ev.data["oom_kills"] == 2 and ev.data["events"]["OOMKilling"] == 0  # node events are opt-in
    with ReplayServer(FIXTURES, mode="slow", delay_s=30) as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", server.url, "s3cret")))
        started = time.monotonic()
        slow = KubernetesCollector(**DEPLOY, timeout_s=TIMEOUT_S).collect()
        elapsed = time.monotonic() - started
        assert len(server.calls("pods")) == 1  # one attempt: a hung API server costs timeout_s, not 4x
    assert slow.status == "error" and "timeout" in slow.reason and elapsed < TIMEOUT_S + 1.5


def test_no_cluster_configured_is_unavailable(k8s, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    ev = collect_safely(KubernetesCollector("serving", "app=textclf"))
    assert ev.status == "unavailable" and ev.source == "kubernetes"
    assert ev.reason.startswith("no cluster configured: no kubeconfig") and "no-such-config" in ev.reason


def test_a_broken_kubeconfig_or_an_unreachable_server_is_an_error(k8s, make_client, tmp_path, monkeypatch):
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    assert KubernetesCollector("serving", "app=textclf").collect().status == "error"
    server = ReplayServer(FIXTURES).start()
    url = server.url
    server.stop()  # nothing listens there any more
    ev = collect_safely(collector(make_client(url)))
    assert ev.status == "error" and ev.reason.startswith("ConnectionError: cannot reach the API server at " + url)


# --- offline -------------------------------------------------------------------------------------------------


def test_offline_healthy_variant():
    ev = read_offline(HEALTHY, **OFFLINE)
    assert ev.ok and ev.data["pod_count"] == 3 and ev.data["ready_pods"] == 3
    assert ev.data["restarts"] == 0 and ev.data["oom_kills"] == 0 and set(ev.data["events"].values()) == {0}
    assert ev.data["rollout"]["revision"] == 8 and ev.data["rollout"]["replicasets"][0]["ready_replicas"] == 3
    assert ev.summary[1:3] == ["no pod OOMKilled since the deploy", "no restarts in 3 pods"]


def test_offline_window_splits_events_and_oom_kills_at_deployed_at_minus_one_hour():
    later = read_offline(FIXTURES, **{**OFFLINE, "deployed_at": "2026-11-20T11:40:00Z"})  # window from 10:40
    d = later.data
    assert d["window_start"] == "2026-11-20T10:40:00Z"
    assert d["oom_kills"] == 1 and d["oom_kills_total"] == 2  # x4k2p's last OOM kill was at 10:32
    assert d["events"] == {"OOMKilling": 2, "SystemOOM": 0, "Evicted": 0, "BackOff": 14, "Killing": 0,
                           "Unhealthy": 0, "FailedScheduling": 0}
    assert d["events_before"] == {"OOMKilling": 4, "SystemOOM": 0, "Evicted": 1, "BackOff": 9, "Killing": 2,
                                  "Unhealthy": 6, "FailedScheduling": 2}
    assert "1 of 3 pods OOMKilled since the deploy (limit memory 2Gi)" in later.summary
    assert any(line.startswith("events before that: ") for line in later.summary)
    # deployed_at as YAML gives it (a datetime) reads the same as the string
    as_datetime = read_offline(FIXTURES, **{**OFFLINE, "deployed_at": datetime(2026, 11, 20, 11, 40, tzinfo=timezone.utc)})
    assert as_datetime.to_dict() == later.to_dict()


def test_offline_without_container_or_selector_and_with_a_missing_container():
    whole = read_offline(FIXTURES)  # what diagnose.signals passes today: every pod and container in the files
    assert whole.data["restarts"] == 7 and whole.data["selector"] is None
    assert whole.data["pods"][0]["limits"]["memory"] == "2Gi + 128Mi"
    assert whole.data["pods"][0]["limits"]["memory_bytes"] == 2 * 2**30 + 128 * 2**20
    assert whole.data["deployed_at_source"] == "rollout"
    assert any(line.startswith("CPU limit 2.1 cores per pod (2 + 100m over its containers") for line in whole.summary)
    missing = read_offline(FIXTURES, container="server")
    assert missing.ok and missing.data["restarts"] == 0
    assert "pod textclf-7d9f8b6c5d-m2n8t has no container 'server' (containers: model, metrics-exporter)" in missing.summary


def test_offline_without_optional_files(tmp_path):
    save_offline(tmp_path, fixture_items("pods.json"), fixture_items("events.json"))
    ev = read_offline(tmp_path, **OFFLINE)
    assert ev.ok and ev.data["rollout"] is None and ev.data["events"]["OOMKilling"] == 0
    assert ev.data["events"]["BackOff"] == 23


@pytest.mark.parametrize("name, text, expected", [
    ("pods.json", '{"kind": "List", "items": [', "pods.json: not valid JSON (line 1)"),
    ("pods.json", '{"kind": "Pod", "metadata": {}}', "pods.json: not a Kubernetes List"),
    ("pods.json", '[1, 2]', "got a JSON list"),
    ("events.json", json.dumps({"kind": "List", "items": [{"kind": "Pod"}]}),
     "events.json: items[0] has kind 'Pod', expected 'Event'"),
    ("replicasets.json", "not json", "replicasets.json: not valid JSON"),
    ("node-events.json", '{"kind": "List", "items": {}}', "node-events.json: not a Kubernetes List"),
])
def test_bad_offline_files_are_user_errors_naming_the_file(tmp_path, name, text, expected):
    for good in ("pods.json", "events.json"):
        (tmp_path / good).write_text((FIXTURES / good).read_text())
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError) as err:
        read_offline(tmp_path)
    assert str(tmp_path / name) in str(err.value) and expected in str(err.value)


def test_a_missing_required_offline_file_is_a_user_error(tmp_path):
    (tmp_path / "pods.json").write_text((FIXTURES / "pods.json").read_text())
    with pytest.raises(UserError, match=r"events\.json: missing: record it with `kubectl get events"):
        read_offline(tmp_path)
    with pytest.raises(UserError, match="selector"):
        (tmp_path / "events.json").write_text((FIXTURES / "events.json").read_text())
        read_offline(tmp_path, selector="app in (textclf")


# --- parsers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("2", 2), ("500m", 0.5), ("100m", 0.1), ("2Gi", 2 * 2**30), ("1536Mi", 1536 * 2**20), ("1.5Gi", 1.5 * 2**30),
    ("128M", 128e6), ("100Ki", 102400), ("1e3", 1000), ("250u", 0.00025), (4, 4), ("2 GB", None), ("", None), (None, None),
])
def test_parse_quantity(text, value):
    parsed = parse_quantity(text)
    assert (parsed is None) if value is None else float(parsed) == pytest.approx(value)


@pytest.mark.parametrize("selector, labels, expected", [
    ("app=textclf,version=v2", {"app": "textclf", "version": "v2"}, True),
    ("app==textclf", {"app": "textclf"}, True),
    ("app=textclf,version=v2", {"app": "textclf", "version": "v1"}, False),
    ("version!=v1", {"app": "textclf"}, True),
    ("app in (textclf, web),tier notin (batch)", {"app": "web", "tier": "online"}, True),
    ("app in (textclf, web)", {"app": "db"}, False),
    ("canary", {"canary": "true"}, True),
    ("!canary", {"canary": "true"}, False),
    ("", {"anything": "x"}, True),
])
def test_selector_matches(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def test_a_collector_never_raises(make_client):
    class Broken(KubernetesCollector):
        def _read(self, api_client):
            raise KeyError("surprise")

    ev = Broken(**DEPLOY, api_client=make_client("http://127.0.0.1:9")).collect()
    assert isinstance(ev, Evidence) and ev.status == "error" and ev.reason == "KeyError: 'surprise'"


# --- a real cluster ------------------------------------------------------------------------------------------


def _real_cluster_reason() -> str | None:
    config = os.environ.get("KUBECONFIG")
    if not config:
        return "KUBECONFIG is not set: no real cluster to run against"
    if not any(os.path.isfile(p) for p in config.split(os.pathsep) if p):
        return f"KUBECONFIG={config} points at no file: no real cluster to run against"
    return None


@pytest.mark.skipif(_real_cluster_reason() is not None, reason=str(_real_cluster_reason()))
def test_against_a_real_cluster(k8s):
    """DIAGNOSE_K8S_NAMESPACE (default "default") and DIAGNOSE_K8S_SELECTOR (default: every pod) choose what to read."""
    ev = collect_safely(KubernetesCollector(os.environ.get("DIAGNOSE_K8S_NAMESPACE", "default"),
                                            os.environ.get("DIAGNOSE_K8S_SELECTOR", ""),
                                            os.environ.get("DIAGNOSE_K8S_CONTAINER") or None, timeout_s=10))
    json.dumps(ev.to_dict())
    assert ev.status in ("ok", "error"), ev.reason
    if ev.ok:
        assert ev.data["pod_count"] == len(ev.data["pods"]) and ev.summary
    else:  # no permission, or the cluster is down: the reason says which, on one line
        assert ev.reason and "\n" not in ev.reason
