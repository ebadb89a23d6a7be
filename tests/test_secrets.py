"""Secrets never reach a run folder or a report (issue 11).

Credentials are planted where a user puts them (a password in the `--prometheus` URL, a token in a
`--prometheus-auth` file, a kubeconfig with a token and a server URL with userinfo, a kubeconfig-like file behind
a symlink in `--signals`), then every file of the run folder (recursively, as bytes) and every report format,
stdout and stderr included, is searched for them. A local server on 127.0.0.1 in front of a real Prometheus
(tests/prom_server.py; an empty answer where Prometheus is not installed) checks the Authorization header it
receives, so the tests also prove the credentials were sent.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, write_manifest
from prom_server import PromServer, free_port, skip_reason

import reports
from diagnose.core.errors import UserError
from diagnose.core.redact import redact_argv, redact_text, redact_url
from diagnose.sources import PrometheusAccess, prometheus_access, read_auth_file

URL_USER, URL_PASSWORD = "urluser", "url-pass-7d1e90c4"
TOKEN = "file-token-3f9a7c5e1b"
K8S_TOKEN, K8S_PASSWORD = "k8s-token-5e2a9b77", "k8s-pass-c0ffee11"
LINKED_TOKEN = "linked-token-9b8a7f60"
SECRETS = (URL_PASSWORD, TOKEN, K8S_TOKEN, K8S_PASSWORD, LINKED_TOKEN,
           base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode())
DEPLOYMENT = {"namespace": "serving", "selector": "app=textclf", "container": "model",
              "deployed_at": "2026-11-20T10:00:00Z"}
ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
FAST = ("--budget", "1", "--no-profile", "--no-verify")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret!r} written in {where}"


def assert_folder_clean(folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, folder
    for path in files:
        assert_no_secret(path.read_bytes(), str(path))


def assert_reports_clean(run: Path) -> None:
    """Every text format of the run's report, and the folder after analyze. (The PDF is the HTML printed, and its
    streams are compressed: searching its bytes would prove nothing; the HTML it prints is searched.)"""
    from diagnose.analysis import analyze

    result = run_cli("analyze", str(run), env=ENV)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout + result.stderr, "analyze")
    report = analyze(run)
    for fmt in reports.FORMATS:
        if not fmt.binary:
            assert_no_secret(fmt.render(report), f"the {fmt.name} report")
    assert_folder_clean(run)  # analyze rewrote the report files


class AuthCheckingPrometheus:
    """127.0.0.1 HTTP server that records the Authorization header of every request, answers 401 unless it is
    `expected`, and forwards the rest to the real Prometheus at `upstream` (an empty answer without one)."""

    def __init__(self, expected: str, upstream: str | None):
        self.seen: list[str | None] = []
        checker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                checker.seen.append(self.headers.get("Authorization"))
                status, body = 200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
                if checker.seen[-1] != expected:
                    status, body = 401, b'{"status":"error","errorType":"unauthorized","error":"bad credentials"}'
                elif upstream:
                    with urllib.request.urlopen(upstream + self.path, timeout=10) as answer:
                        status, body = answer.status, answer.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.port = self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A real Prometheus holding the throttled rollout, or None where prometheus/promtool are not installed."""
    if skip_reason():
        yield None
        return
    with PromServer([ROOT / "fixtures" / "signals" / "prometheus" / "throttled.om"],
                    tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom.url


@pytest.fixture
def deployed(tiny_registry):
    write_manifest(tiny_registry / "mlp" / "v2", serving={"threads": 1}, deployment=DEPLOYMENT)
    return tiny_registry


def kubeconfig(path: Path) -> Path:
    """A kubeconfig with a bearer token and a server URL carrying userinfo, pointing where nothing listens."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://kube:{K8S_PASSWORD}@127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{token: {K8S_TOKEN}}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    return path


# --- redaction and credentials, as functions ----------------------------------------------------------------


def test_redact_url_masks_userinfo_and_secret_parameters():
    assert redact_url("http://user:p%40ss@host:9090/") == "http://***@host:9090/"
    assert redact_url("http://user:p@ss@host:9090/a@b") == "http://***@host:9090/a@b"  # the last @, as urlsplit
    assert redact_url("https://h/x?a=1&token=t&access_token=u&password=p&apikey=k#id_token=f") == (
        "https://h/x?a=1&token=***&access_token=***&password=***&apikey=***#id_token=***")
    assert redact_url("http://prometheus:9090") == "http://prometheus:9090"
    assert redact_text("cannot reach http://u:p@h:1/?token=t; Authorization: Bearer abc") == (
        "cannot reach http://***@h:1/?token=***; Authorization: ***")
    assert redact_text("sent Bearer eyJhbGciOi.x.y") == "sent Bearer ***"


def test_redact_argv_masks_urls_and_secret_options_but_keeps_the_rest():
    argv = ["diagnose", "compare", "--prometheus", "http://u:pw@h:9090", "--token", "T", "--password=P",
            "--prometheus-auth", "auth.txt", "-H", "Authorization: Bearer T2", "--old", "v1"]
    assert redact_argv(argv) == ["diagnose", "compare", "--prometheus", "http://***@h:9090", "--token", "***",
                                 "--password=***", "--prometheus-auth", "auth.txt", "-H", "Authorization: ***",
                                 "--old", "v1"]


def test_credentials_from_file_url_and_environment_in_that_order(tmp_path):
    token_file, basic_file = tmp_path / "token", tmp_path / "basic"
    token_file.write_text(f"\n{TOKEN}\n")
    basic_file.write_text("alice:pa:ss\n")  # the password may hold a colon, the user not
    url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:9090"
    env = {"DIAGNOSE_PROMETHEUS_TOKEN": "env-token", "DIAGNOSE_PROMETHEUS_USER": "bob",
           "DIAGNOSE_PROMETHEUS_PASSWORD": "pw"}
    assert read_auth_file(basic_file) == basic("alice", "pa:ss")
    assert prometheus_access(url, token_file, env) == PrometheusAccess("http://127.0.0.1:9090", f"Bearer {TOKEN}")
    assert prometheus_access(url, None, env) == PrometheusAccess("http://127.0.0.1:9090", basic(URL_USER, URL_PASSWORD))
    plain = "http://127.0.0.1:9090"
    assert prometheus_access(plain, None, env).authorization == "Bearer env-token"
    assert prometheus_access(plain, None, {k: v for k, v in env.items() if "TOKEN" not in k}).authorization == basic("bob", "pw")
    assert prometheus_access(plain, None, {}) == PrometheusAccess(plain)
    assert prometheus_access(None, None, env) is None
    assert URL_PASSWORD not in repr(prometheus_access(url, None, {}))
    with pytest.raises(UserError, match="both"):
        prometheus_access(plain, None, {"DIAGNOSE_PROMETHEUS_USER": "bob"})
    with pytest.raises(UserError, match=r"not a URL .*: http://\*\*\*@\[::1:9090$"):
        prometheus_access(f"http://u:{URL_PASSWORD}@[::1:9090", None, {})


@pytest.mark.parametrize("text, expected", [
    ("", "expected one line, user:password or a bearer token; found 0"),
    (f"{TOKEN}\n{TOKEN}\n", "found 2"),
    (f":{TOKEN}\n", "neither empty"),
    (f"Bearer {TOKEN}\n", "no spaces"),
    (None, "cannot read: No such file or directory"),
])
def test_a_bad_auth_file_is_one_line_that_never_quotes_it(tmp_path, text, expected):
    path = tmp_path / "auth"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError) as caught:
        read_auth_file(path)
    assert str(caught.value).startswith(f"{path}: --prometheus-auth: ") and expected in str(caught.value)
    assert TOKEN not in str(caught.value) and "\n" not in str(caught.value)


def test_bad_auth_file_ends_compare_with_exit_2_before_anything_is_written(tiny_registry, tmp_path):
    auth = tmp_path / "auth"
    auth.write_text(f"{TOKEN}\nsecond line\n")
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", *FAST,
                     "--prometheus", "http://127.0.0.1:9", "--prometheus-auth", str(auth), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"diagnose: error: {auth}: --prometheus-auth: expected one line, "
                                          "user:password or a bearer token; found 2"]
    assert_no_secret(result.stdout + result.stderr, "the output")
    assert not out.exists()


# --- end to end: a compare and a collect with credentials ------------------------------------------------------


def test_compare_sends_the_credentials_and_writes_none_of_them(deployed, tmp_path, upstream):
    auth = tmp_path / "prometheus-token"
    auth.write_text(TOKEN + "\n")
    out = tmp_path / "run"
    env = {**ENV, "KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig"))}
    with AuthCheckingPrometheus(f"Bearer {TOKEN}", upstream) as prom:
        url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{prom.port}/"
        result = run_cli("compare", "--registry", str(deployed), "--old", "v1", "--new", "v2", *FAST,
                         "--prometheus", url, "--prometheus-auth", str(auth), "--out", str(out), "--json", env=env)
    assert result.returncode == 0, result.stderr
    # the file's token on every query: the pod labels and the three series, and the pods seen when nothing matched
    assert prom.seen == [f"Bearer {TOKEN}"] * (4 if upstream else 5)
    assert_no_secret(result.stdout + result.stderr, "compare's output")
    run = json.loads((out / "run.json").read_text())
    assert f"http://***@127.0.0.1:{prom.port}/" in run["command"] and str(auth) in run["command"]
    evidence = json.loads((out / "evidence" / "prometheus.json").read_text())
    if upstream:
        assert evidence["status"] == "ok" and (out / "signals" / "metrics.om").is_file()
        assert evidence["data"]["origin"] == {"kind": "prometheus", "url": f"http://127.0.0.1:{prom.port}"}
    else:
        assert evidence["status"] == "unavailable" and f"http://127.0.0.1:{prom.port}" in evidence["reason"]
    kubernetes = json.loads((out / "evidence" / "kubernetes.json").read_text())
    assert kubernetes["status"] == "error" and "http://***@127.0.0.1:" in kubernetes["reason"], kubernetes
    assert_folder_clean(out)
    assert_reports_clean(out)


def test_collect_sends_the_urls_own_credentials_and_prints_none(deployed, tmp_path, upstream):
    out = tmp_path / "collected"
    with AuthCheckingPrometheus(basic(URL_USER, URL_PASSWORD), upstream) as prom:
        url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{prom.port}"
        result = run_cli("collect", "v2", "--registry", str(deployed), "--prometheus", url, "--gpu-seconds", "0.1",
                         "--out", str(out), env={**ENV, "KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    assert prom.seen == [basic(URL_USER, URL_PASSWORD)] * (4 if upstream else 5)
    assert ("prometheus: ok" if upstream else "prometheus: unavailable") in result.stdout
    assert_no_secret(result.stdout + result.stderr, "collect's output")
    if upstream:
        assert_folder_clean(out)


def test_a_wrong_token_is_an_error_evidence_naming_no_secret(deployed, tmp_path):
    out = tmp_path / "run"
    with AuthCheckingPrometheus("Bearer the-right-one", None) as prom:
        result = run_cli("compare", "--registry", str(deployed), "--old", "v1", "--new", "v2", *FAST, "--prometheus",
                         f"http://127.0.0.1:{prom.port}", "--out", str(out), "--json",
                         env={**ENV, "DIAGNOSE_PROMETHEUS_TOKEN": TOKEN, "KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    assert prom.seen == [f"Bearer {TOKEN}"]  # the environment's token was sent; no retry of a 401
    prometheus = json.loads(result.stdout)["evidence_sources"]["prometheus"]
    assert prometheus["status"] == "error" and "(401): unauthorized: bad credentials" in prometheus["reason"]
    assert_folder_clean(out)


# --- --signals: links out of the folder, and --out inside it ---------------------------------------------------


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_out_of_the_signals_folder_is_exit_2_and_nothing_of_it_is_copied(tiny_registry, tmp_path, link):
    outside = tmp_path / "home" / ".kube"
    outside.mkdir(parents=True)
    kube = kubeconfig(outside / "config")
    kube.write_text(kube.read_text() + f"# {LINKED_TOKEN}\n")
    signals = tmp_path / "signals"
    signals.mkdir()
    if link == "file":
        (signals / "kubernetes").mkdir()
        (signals / "kubernetes" / "pods.json").symlink_to(kube)
        named = signals / "kubernetes" / "pods.json"
    else:
        (outside / "pods.json").symlink_to(kube)
        (signals / "kubernetes").symlink_to(outside, target_is_directory=True)
        named = signals / "kubernetes" / "pods.json"
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", *FAST,
                     "--signals", str(signals), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"diagnose: error: {named}: a link that leads out of the --signals folder; "
                                          "copy the file in instead"]
    assert_no_secret(result.stdout + result.stderr, "the output")
    assert not (out / "signals" / "kubernetes").exists()
    assert_folder_clean(out)


def test_out_inside_the_signals_folder_works_without_recursion(tiny_registry, tmp_path):
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "nvidia-smi.csv").write_bytes((ROOT / "fixtures" / "signals" / "gpu" / "healthy.csv").read_bytes())
    for name in ("run", "again"):  # the second compare finds the first's run folder inside --signals
        out = signals / name
        result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", *FAST,
                         "--signals", str(signals), "--out", str(out), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["evidence_sources"]["gpu"]["status"] == "ok"
        assert [p.relative_to(out / "signals").as_posix() for p in (out / "signals").rglob("*")] == ["nvidia-smi.csv"]


def test_saved_kubernetes_objects_mask_env_values_and_last_applied_configuration(tmp_path):
    from collectors.kubernetes import APPLIED_ANNOTATION, read_offline, save_offline

    container = {"name": "model", "env": [{"name": "API_TOKEN", "value": K8S_TOKEN},
                                          {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                 "resources": {"limits": {"memory": "1Gi"}}}
    pod = {"metadata": {"name": "textclf-1-a", "labels": {"app": "textclf"},
                        "annotations": {APPLIED_ANNOTATION: json.dumps({"env": [{"value": K8S_TOKEN}]})}},
           "spec": {"containers": [container], "initContainers": [container]}, "status": {"phase": "Running"}}
    rs = {"metadata": {"name": "textclf-1", "labels": {"app": "textclf"}},
          "spec": {"template": {"spec": {"containers": [container]}}}}
    raw = tmp_path / "raw"  # what `kubectl get -o json` printed
    raw.mkdir()
    for name, items in (("pods.json", [pod]), ("events.json", []), ("replicasets.json", [rs])):
        (raw / name).write_text(json.dumps({"kind": "List", "items": items}))
    save_offline(tmp_path / "saved", [pod], [], [rs])
    assert_folder_clean(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "pods.json").read_text())["items"][0]
    assert saved["spec"]["containers"][0]["env"][0] == {"name": "API_TOKEN", "value": "***"}
    assert saved["spec"]["containers"][0]["env"][1] == container["env"][1]  # a reference names no secret
    assert pod["spec"]["containers"][0]["env"][0]["value"] == K8S_TOKEN  # the collector's own copy is untouched
    assert read_offline(tmp_path / "saved", selector="app=textclf").data == read_offline(raw, selector="app=textclf").data


def test_recorded_kubectl_json_reaches_the_run_folder_with_its_env_values_masked(tiny_registry, tmp_path):
    """`kubectl get pods -o json` as a user records it holds literal env values (an API token) and the
    last-applied-configuration with them; the compare reads the same evidence and writes neither."""
    from collectors.kubernetes import APPLIED_ANNOTATION

    container = {"name": "model", "env": [{"name": "API_TOKEN", "value": K8S_TOKEN}],
                 "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "mlp-7d9f8b6c5d-abcde", "namespace": "serving", "labels": {"app": "mlp"},
                        "annotations": {APPLIED_ANNOTATION: json.dumps({"env": [{"value": K8S_PASSWORD}]})}},
           "spec": {"containers": [container]},
           "status": {"phase": "Running", "containerStatuses": [{"name": "model", "restartCount": 0, "ready": True}]}}
    signals = tmp_path / "signals" / "kubernetes"
    signals.mkdir(parents=True)
    (signals / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod]}))
    (signals / "events.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": []}))
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(tiny_registry), "--old", "v1", "--new", "v2", *FAST,
                     "--signals", str(tmp_path / "signals"), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["evidence_sources"]["kubernetes"]["status"] in ("ok", "unavailable")
    saved = json.loads((out / "signals" / "kubernetes" / "pods.json").read_text())["items"][0]
    assert saved["spec"]["containers"][0]["env"][0] == {"name": "API_TOKEN", "value": "***"}
    assert saved["spec"]["containers"][0]["resources"] == container["resources"]  # what the rules read is kept
    assert_no_secret(result.stdout + result.stderr, "the output")
    assert_folder_clean(out)
