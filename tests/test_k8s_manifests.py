"""diagnose in the cluster: the manifests in docs/kubernetes/, their RBAC and the Dockerfile, checked without a cluster.

1. Every manifest is read into the official Kubernetes client's models: each field must be one the model knows
   (`attribute_map`), of the type it declares (`openapi_types`), and the model must accept the whole (its own
   required-field checks). kubeconform is neither pip- nor apt-installable here and needs schemas from GitHub, so the
   client's models are the schema. Broken copies of the manifests (any node replaced, an unknown key in any mapping,
   a wrong apiVersion, a duplicate key) must fail.
2. RBAC: the real `diagnose collect` runs with the in-cluster configuration only (KUBERNETES_SERVICE_HOST/PORT, a
   service-account token and CA file; no kubeconfig) against tests/k8s_replay.py served over TLS with a certificate
   that CA signed. Every request is turned into what the API server's authorizer sees (verb, API group, resource,
   namespace) and checked against the Role both ways: each call is allowed, and each permission the Role grants is
   used. The token must arrive in the Authorization header and nowhere in the output or the files written.
3. The Dockerfile is parsed and its claims checked (CPU torch at the README's pin, non-root numeric USER, nothing
   fetched but from package registries, ENTRYPOINT diagnose, the run folder on the volume); broken copies must fail.
   There is no Docker daemon here (docs/kubernetes.md says so): the image itself is not built by the tests.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shutil
import ssl
import subprocess
import tomllib
from http.server import ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import k8s_replay
import pytest
import yaml
from conftest import run_cli
from k8s_replay import ReplayServer

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "docs" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
FIXTURES = ROOT / "fixtures" / "signals" / "kubernetes"  # pods, events, ReplicaSets of textclf v2 in `serving`
MANIFEST_V2 = ROOT / "fixtures" / "registry" / "textclf" / "v2" / "manifest.yaml"  # baked into the image
# (apiVersion, kind) -> the client's model. Anything else (a ClusterRole, a Deployment, a typo) is refused.
MODELS = {("v1", "ServiceAccount"): "V1ServiceAccount", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
          ("v1", "Pod"): "V1Pod", ("batch/v1", "Job"): "V1Job",
          ("rbac.authorization.k8s.io/v1", "Role"): "V1Role", ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
FREE_FORM = {"labels", "annotations", "requests", "limits"}  # string maps whose keys are the user's
PACKAGE_HOSTS = {"download.pytorch.org", "pypi.org", "files.pythonhosted.org"}
PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,),
              "datetime": (str,), "date": (str,), "bytes": (str,)}


# --- reading manifests ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML with duplicate keys refused: PyYAML keeps the last one silently, the API server refuses the object."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", node.start_mark)
        return super().construct_mapping(node, deep)


def load_docs(text: str) -> list[dict]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc is not None]


def kustomizations() -> list[Path]:
    return sorted(MANIFESTS.rglob("kustomization.yaml"))


def rendered(kustomization: Path) -> list[dict]:
    """What `kubectl apply -k` would send, without kustomize: each resource file's documents with the
    kustomization's namespace and image applied (the only transformers these kustomizations use)."""
    spec = load_docs(kustomization.read_text())[0]
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in spec.get("images", [])}
    docs = []
    for name in spec["resources"]:
        for doc in load_docs((kustomization.parent / name).read_text()):
            doc = copy.deepcopy(doc)
            doc["metadata"]["namespace"] = spec.get("namespace", doc["metadata"].get("namespace"))
            for subject in doc.get("subjects", []):
                subject["namespace"] = spec.get("namespace", subject.get("namespace"))
            for container in containers_of(doc):
                container["image"] = images.get(container["image"].split(":")[0], container["image"])
            docs.append(doc)
    return docs


def containers_of(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or spec
    return pod.get("containers") or []


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]


def base() -> dict[str, dict]:
    """The base kustomization's documents by kind."""
    return {doc["kind"]: doc for doc in rendered(MANIFESTS / "kustomization.yaml")}


# --- the schema: the client's models --------------------------------------------------------------------------


def _kind(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _check(value, type_name: str, path: str, problems: list[str]):
    """`value` as the client's `type_name` (List[..], Dict[str, ..], a primitive or a model): the model built
    from it, or None with the reasons appended to `problems`."""
    from kubernetes.client import models

    if m := re.fullmatch(r"Optional\[(.*)\]", type_name):
        return _check(value, m.group(1), path, problems)
    if value is None:  # an explicit null is an unset field to the API server
        return None
    if m := re.fullmatch(r"(?:List|list)\[(.*)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_kind(value)}")
            return None
        return [_check(v, m.group(1), f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if m := re.fullmatch(r"Dict\[str, (.*)\]|dict\(str, (.*)\)", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {_kind(value)}")
            return None
        return {k: _check(v, m.group(1) or m.group(2), f"{path}.{k}", problems) for k, v in value.items()}
    if type_name in PRIMITIVES:
        wrong_bool = isinstance(value, bool) and type_name in ("int", "float")
        if not isinstance(value, PRIMITIVES[type_name]) or wrong_bool:
            problems.append(f"{path}: expected {type_name}, got {_kind(value)} {value!r}")
        return value
    cls = getattr(models, type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping, got {_kind(value)}")
        return None
    fields = {key: attr for attr, key in cls.attribute_map.items()}
    before, kwargs = len(problems), {}
    for key, child in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: unknown field of {type_name}")
        else:
            kwargs[fields[key]] = _check(child, cls.openapi_types[fields[key]], f"{path}.{key}", problems)
    if len(problems) > before:
        return None
    try:  # the model's own checks: required fields, enums
        return cls(**{k: v for k, v in kwargs.items() if v is not None})
    except (ValueError, TypeError) as exc:
        problems.append(f"{path}: {type_name} refuses it: {' '.join(str(exc).split())[:300]}")
        return None


def manifest_problems(doc) -> list[str]:
    """Why the API server would refuse this document (empty: it would take it)."""
    if not isinstance(doc, dict):
        return [f"not a mapping: {_kind(doc)}"]
    model = MODELS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if model is None:
        return [f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r}: not one of {sorted(MODELS)}"]
    problems: list[str] = []
    _check(doc, model, doc["kind"], problems)
    if not problems and not ((doc.get("metadata") or {}).get("name")):
        problems.append(f"{doc['kind']}.metadata.name: missing")
    return problems


def mutations(node, path=()):
    """(path, copy-maker) pairs: every node of the document replaced by a mapping of an unknown key, and every
    mapping with an unknown key added (except the free-form string maps, where any key is valid)."""
    yield path, lambda doc: _set(doc, path, {"unexpectedField": [1]})
    if isinstance(node, dict):
        if not path or path[-1] not in FREE_FORM:
            yield path + ("unexpectedField",), lambda doc: _set(doc, path + ("unexpectedField",), "x")
        for key, child in node.items():
            yield from mutations(child, path + (key,))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from mutations(child, path + (i,))


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def k8s():
    return pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (pip install kubernetes)")


def test_every_manifest_is_accepted_by_the_clients_models(k8s):
    files = manifest_files()
    assert {p.name for p in files} >= {"serviceaccount.yaml", "role.yaml", "rolebinding.yaml", "pvc.yaml", "job.yaml"}
    for path in files:
        docs = load_docs(path.read_text())
        assert docs, path
        for doc in docs:
            assert manifest_problems(doc) == [], path


def test_every_broken_copy_of_every_manifest_is_refused(k8s):
    checked = 0
    for path in manifest_files():
        for doc in load_docs(path.read_text()):
            for where, broken in mutations(doc):
                assert manifest_problems(broken(doc)), f"{path.name}: {where} broken, yet accepted"
                checked += 1
    assert checked > 150  # every node of every document


@pytest.mark.parametrize("path, value, expected", [
    (("spec", "backoffLimit"), "0", "expected int, got a string"),  # a quoted number
    (("spec", "template", "spec", "automountServiceAccountToken"), "true", "expected bool"),
    (("spec", "template", "spec", "containers", 0, "args"), "compare --old v1 --new v2", "expected a list"),
    (("spec", "template", "spec", "containers", 0, "imagePullPolcy"), "Always", "unknown field of V1Container"),
    (("spec", "template", "spec", "containers", 0, "name"), None, "name"),  # a required field unset
    (("spec", "template"), None, "template"),
    (("apiVersion",), "batch/v2", "not one of"),
])
def test_typical_mistakes_in_the_job_are_named(k8s, path, value, expected):
    job = _set(base()["Job"], path, value)
    problems = manifest_problems(job)
    assert problems and expected in " ".join(problems), problems


def test_a_duplicate_key_is_refused():
    text = (MANIFESTS / "role.yaml").read_text().replace("  name: diagnose-reader\n",
                                                         "  name: diagnose-reader\n  name: other\n", 1)
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'name'"):
        load_docs(text)


def test_each_kustomization_lists_exactly_its_folders_manifests(k8s):
    listed = []
    for kustomization in kustomizations():
        spec = load_docs(kustomization.read_text())[0]
        assert set(spec) <= KUSTOMIZATION_KEYS, (kustomization, set(spec) - KUSTOMIZATION_KEYS)
        assert (spec["apiVersion"], spec["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        assert sorted(spec["resources"]) == sorted(p.name for p in kustomization.parent.glob("*.yaml")
                                                   if p.name != "kustomization.yaml"), kustomization
        listed += [kustomization.parent / name for name in spec["resources"]]
        for doc in rendered(kustomization):
            assert manifest_problems(doc) == [] and doc["metadata"]["namespace"] == spec["namespace"]
    assert sorted(listed) == manifest_files()  # every manifest is applied by exactly one kustomization


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kubectl_kustomize_renders_what_the_tests_check(k8s):
    for kustomization in kustomizations():
        out = subprocess.run(["kubectl", "kustomize", str(kustomization.parent)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        real = sorted(load_docs(out), key=lambda d: (d["kind"], d["metadata"]["name"]))
        assert real == sorted(rendered(kustomization), key=lambda d: (d["kind"], d["metadata"]["name"]))


# --- the wiring: identity, volumes, the command ---------------------------------------------------------------


def _under(path: str, mounts: list[dict]) -> dict | None:
    return next((m for m in mounts if PurePosixPath(path).is_relative_to(m["mountPath"])), None)


def test_the_job_runs_as_the_bound_service_account_with_its_token(k8s):
    docs = base()
    job, sa, binding, role = docs["Job"], docs["ServiceAccount"], docs["RoleBinding"], docs["Role"]
    pod = pod_spec(job)
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True  # the in-cluster configuration reads the mounted token
    assert sa.get("automountServiceAccountToken") is False  # no other pod of this identity gets one by default
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": job["metadata"]["namespace"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    namespaces = {doc["metadata"]["namespace"] for doc in docs.values()}
    assert namespaces == {yaml.safe_load(MANIFEST_V2.read_text())["deployment"]["namespace"]}  # the deployment's own


def test_the_job_writes_only_to_its_volumes_and_parses_as_a_diagnose_command(k8s):
    from diagnose.cli import build_parser

    docs = base()
    pod = pod_spec(docs["Job"])
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = container["volumeMounts"]
    assert {m["name"] for m in mounts} == set(volumes)
    claim = volumes[_under("/data", mounts)["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m for m in mounts if not m.get("readOnly")]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    for where in (env["HOME"], env["DIAGNOSE_CACHE"], container["workingDir"]):
        assert _under(where, writable), f"{where} is not on a writable volume"
    args = build_parser().parse_args(container["args"])  # options the CLI really has
    assert args.command in ("compare", "collect")
    out = str(args.out) if args.out else "runs"  # compare's default: runs/ in the working directory
    volume = _under(str(PurePosixPath(container["workingDir"]) / out), writable)
    assert volume is not None and volumes[volume["name"]].get("persistentVolumeClaim"), f"{out} is not on the volume"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == dockerfile_user()[0]


def test_the_results_pod_reads_the_same_volume_without_api_access(k8s):
    (pod,) = rendered(MANIFESTS / "results" / "kustomization.yaml")
    spec = pod_spec(pod)
    assert spec["automountServiceAccountToken"] is False
    assert spec["volumes"][0]["persistentVolumeClaim"] == {"claimName": base()["PersistentVolumeClaim"]["metadata"]["name"],
                                                          "readOnly": True}
    assert spec["containers"][0]["image"] == containers_of(base()["Job"])[0]["image"]  # it has tar, for kubectl cp


# --- RBAC: the collector's real requests against the Role --------------------------------------------------


def request_attributes(path: str, query: dict) -> tuple[str, str, str, str | None]:
    """(verb, API group, resource, namespace or None for cluster scope) as the API server's RequestInfo resolves
    a GET: a collection is list (watch with ?watch=true), a named object get; a subresource is `resource/sub`."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        return "get", "", path, None  # a non-resource URL (/version, /healthz)
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    verb = "get" if len(rest) > 1 else ("watch" if query.get("watch") in ("true", "1") else "list")
    return verb, group, resource, namespace


def rbac_problems(role: dict, calls: set[tuple[str, str, str, str | None]]) -> list[str]:
    """What is wrong between a Role and the calls made: a call it does not allow, a permission no call uses."""
    problems, granted = [], set()
    for i, rule in enumerate(role.get("rules") or []):
        for key in ("resourceNames", "nonResourceURLs"):
            if rule.get(key):
                problems.append(f"rules[{i}].{key}: the collector lists; it names no object or URL")
        values = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])]
        if "*" in values:
            problems.append(f"rules[{i}]: a wildcard grants more than the collector calls")
        granted |= {(group, resource, verb) for group in rule.get("apiGroups", []) for resource in rule.get("resources", [])
                    for verb in rule.get("verbs", [])}
    namespace = role["metadata"]["namespace"]
    for verb, group, resource, ns in sorted(calls, key=str):
        if ns != namespace:
            problems.append(f"{verb} {resource} in {ns or 'the cluster scope'}: outside the Role's namespace {namespace}")
        elif (group, resource, verb) not in granted:
            problems.append(f"{verb} {resource} (API group {group!r}) in {ns}: not allowed by the Role")
    used = {(group, resource, verb) for verb, group, resource, _ in calls}
    problems += [f"{v} {r} (API group {g!r}): granted but never called" for g, r, v in sorted(granted - used)]
    return problems


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca_and_server_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A cluster CA and an API-server certificate for 127.0.0.1 that it signed: (ca.crt, server.crt, server.key)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-cluster-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                                       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "2", "-days", "2",
             "-extfile", "server.ext", "-out", "server.crt", cwd=folder)
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def tls_server_class(context: ssl.SSLContext) -> type:
    """ThreadingHTTPServer that speaks TLS: the replay server as the API server is reached from a pod (https)."""

    class TLSServer(ThreadingHTTPServer):
        def finish_request(self, request, client_address):
            with context.wrap_socket(request, server_side=True) as tls:  # the handshake, in the handler's thread
                self.RequestHandlerClass(tls, client_address, self)

        def handle_error(self, request, client_address):  # a refused handshake: the client reports it
            pass

    return TLSServer


@pytest.fixture(scope="module")
def cluster(k8s, tmp_path_factory):
    """The replay server as a pod reaches the API server: over TLS only, with a certificate the cluster CA signed;
    the CA and a service-account token in files, as the kubelet mounts them."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the test cluster's CA")
    tmp = tmp_path_factory.mktemp("cluster")
    ca, cert, key = make_ca_and_server_certificate(tmp)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)  # a projected token has no trailing newline
    (tmp / "token").write_text(token)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(k8s_replay, "ThreadingHTTPServer", tls_server_class(context))
        server = ReplayServer(FIXTURES).start()
    try:
        yield {"server": server, "port": urlsplit(server.url).port, "ca": ca, "token": token, "tmp": tmp}
    finally:
        server.stop()


def in_a_pod(mp: pytest.MonkeyPatch, cluster: dict, ca: Path) -> dict[str, str]:
    """The service-account files where the in-cluster loader reads them; the environment a pod has (the API
    server's service host and port, no kubeconfig), returned for the CLI and set for in-process calls."""
    from kubernetes.config import incluster_config

    mp.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(cluster["tmp"] / "token"))
    mp.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster["port"]),
           "KUBECONFIG": str(cluster["tmp"] / "no-kubeconfig"), "HOME": str(cluster["tmp"]),
           "NO_PROXY": "127.0.0.1,localhost"}
    for key, value in env.items():
        mp.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def in_cluster_collect(cluster, tmp_path_factory):
    """`diagnose collect v2` in a pod's shoes (the Job's image, its baked manifest of textclf v2). Returns what
    it printed, where it wrote, and the requests the API server saw."""
    tmp = tmp_path_factory.mktemp("collect")
    registry = tmp / "registry" / "textclf" / "v2"  # the manifest is read; its artifact is not loaded
    registry.mkdir(parents=True)
    shutil.copy(MANIFEST_V2, registry / "manifest.yaml")
    (registry / "model.pt").write_bytes(b"")
    data = tmp / "data"
    data.mkdir()
    server, seen = cluster["server"], len(cluster["server"].requests)
    with pytest.MonkeyPatch.context() as mp:
        env = in_a_pod(mp, cluster, cluster["ca"])
        result = run_cli("collect", "v2", "--registry", str(tmp / "registry"), "--out", str(data / "signals"),
                         "--gpu-seconds", "0.1", cwd=data, env=env)
    return {"result": result, "token": cluster["token"], "data": data, "requests": server.requests[seen:],
            "authorizations": server.authorizations[seen:]}


def test_in_cluster_configuration_reads_the_deployment_over_tls(in_cluster_collect):
    result, data = in_cluster_collect["result"], in_cluster_collect["data"]
    assert result.returncode == 0, result.stderr
    assert "kubernetes: ok" in result.stdout, result.stdout
    assert "2 of 3 pods OOMKilled since the deploy" in result.stdout  # what the fixtures hold, read live
    assert sorted(p.name for p in (data / "signals" / "kubernetes").iterdir()) == ["events.json", "pods.json",
                                                                                  "replicasets.json"]


def test_the_token_is_sent_and_never_written(in_cluster_collect):
    token = in_cluster_collect["token"]
    headers = in_cluster_collect["authorizations"]
    assert headers and all(h and h.split(" ", 1)[0].lower() == "bearer" and h.split(" ", 1)[1] == token for h in headers)
    result = in_cluster_collect["result"]
    assert token not in result.stdout + result.stderr
    written = [p for p in in_cluster_collect["data"].rglob("*") if p.is_file()]
    assert written and not [p for p in written if token.encode() in p.read_bytes()]


def test_the_role_allows_exactly_the_calls_the_collector_makes(in_cluster_collect):
    calls = {request_attributes(path, query) for path, query in in_cluster_collect["requests"]}
    assert calls == {("list", "", "pods", "serving"), ("list", "", "events", "serving"),
                     ("list", "apps", "replicasets", "serving")}
    assert rbac_problems(base()["Role"], calls) == []


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["rules"].pop(1), "list replicasets (API group 'apps') in serving: not allowed"),
    (lambda r: r["rules"][0]["verbs"].append("get"), "get events (API group ''): granted but never called"),
    (lambda r: r["rules"][0]["verbs"].append("delete"), "delete pods (API group ''): granted but never called"),
    (lambda r: r["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}),
     "list secrets (API group ''): granted but never called"),
    (lambda r: r["rules"][1].update(apiGroups=["extensions"]), "list replicasets (API group 'apps') in serving: not"),
    (lambda r: r["rules"][0].update(resources=["*"]), "a wildcard"),
    (lambda r: r["metadata"].update(namespace="default"), "outside the Role's namespace default"),
])
def test_a_role_that_grants_more_or_less_is_refused(in_cluster_collect, change, expected):
    calls = {request_attributes(path, query) for path, query in in_cluster_collect["requests"]}
    role = copy.deepcopy(base()["Role"])
    change(role)
    assert expected in " ".join(rbac_problems(role, calls))


@pytest.mark.parametrize("path, query, expected", [
    ("/api/v1/namespaces/serving/pods", {"labelSelector": "app=x"}, ("list", "", "pods", "serving")),
    ("/api/v1/namespaces/serving/pods/p-1", {}, ("get", "", "pods", "serving")),
    ("/api/v1/namespaces/serving/pods/p-1/log", {}, ("get", "", "pods/log", "serving")),
    ("/apis/apps/v1/namespaces/serving/replicasets", {"watch": "true"}, ("watch", "apps", "replicasets", "serving")),
    ("/api/v1/nodes", {}, ("list", "", "nodes", None)),
    ("/api/v1/namespaces", {}, ("list", "", "namespaces", None)),
])
def test_request_attributes_follow_the_api_servers_rules(path, query, expected):
    assert request_attributes(path, query) == expected


def test_a_server_certificate_the_pods_ca_did_not_sign_is_refused(cluster, tmp_path, monkeypatch):
    from collectors.kubernetes import KubernetesCollector

    other_ca = make_ca_and_server_certificate(tmp_path)[0]
    in_a_pod(monkeypatch, cluster, other_ca)
    seen = len(cluster["server"].requests)
    ev = KubernetesCollector("serving", "app=textclf,version=v2", timeout_s=5).collect()
    assert ev.status == "error" and "CERTIFICATE_VERIFY_FAILED" in ev.reason, ev.reason
    assert cluster["server"].requests[seen:] == []  # refused at the handshake: no request, no token sent


def test_in_cluster_without_the_token_file_is_an_error_naming_it(k8s, tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    from collectors.kubernetes import KubernetesCollector

    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-token"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    ev = KubernetesCollector("serving", "app=textclf").collect()
    assert ev.status == "error" and ev.reason == "ConfigException: Service token file does not exist."


# --- the Dockerfile ------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped, as Docker reads them."""
    out, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        current = ""
    return out


def readme_torch_pin() -> str:
    return re.search(r"pip install torch==(\S+) ", (ROOT / "README.md").read_text()).group(1)


def dockerfile_problems(text: str) -> list[str]:
    """Every claim the Dockerfile makes that does not hold (docs/kubernetes.md)."""
    steps = dockerfile_instructions(text)
    problems = []
    runs = [(i, args) for i, (word, args) in enumerate(steps) if word == "RUN"]
    torch = [(i, a) for i, a in runs if re.search(r"\bpip install\b.*\btorch\b", a)]
    source = next((a.split()[1] for w, a in steps if w == "COPY" and a.split()[0] == "."), None)  # the repository
    project = [i for i, a in runs if source and re.search(rf"\bpip install (-e )?{re.escape(source)}(\s|$)", a)]
    pin = readme_torch_pin()
    if not torch or f"torch=={pin}" not in torch[0][1].split():
        problems.append(f"torch is not installed at the README's pin torch=={pin}")
    elif "--index-url https://download.pytorch.org/whl/cpu" not in torch[0][1]:
        problems.append("torch does not come from the PyTorch CPU index")
    elif not project or project[0] < torch[0][0]:
        problems.append("the project is installed before the CPU torch (pip would pull the CUDA build)")
    for word, args in steps:
        if word == "ADD":
            problems.append(f"ADD {args}: use COPY (ADD fetches URLs and unpacks archives)")
        if word == "RUN" and re.search(r"\b(curl|wget)\b", args):
            problems.append(f"RUN {args[:60]}...: curl/wget at build time")
        for url in re.findall(r"https?://[^\s'\"]+", args):
            if url.split("/")[2] not in PACKAGE_HOSTS:
                problems.append(f"{word} fetches {url}: not a package registry")
    users = [args for word, args in steps if word == "USER"]
    uid = users[-1].split(":")[0] if users else "root"
    if uid in ("root", "0") or not uid.isdigit():
        problems.append(f"USER {uid}: must be a numeric, non-root user (Kubernetes' runAsNonRoot checks the number)")
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    if not entry or entry[-1] != '["diagnose"]':
        problems.append(f"ENTRYPOINT {entry[-1] if entry else 'missing'}: expected [\"diagnose\"]")
    workdir = [args for word, args in steps if word == "WORKDIR"]
    volumes = [v for word, args in steps if word == "VOLUME" for v in json.loads(args)]
    if not workdir or workdir[-1] not in volumes:
        problems.append(f"WORKDIR {workdir[-1] if workdir else 'missing'} is not a VOLUME {volumes}: run folders would "
                        "stay in the container")
    registry = re.search(r"DIAGNOSE_REGISTRY=(\S+)", " ".join(a for w, a in steps if w == "ENV"))
    if not registry or not any(registry.group(1) in a for _, a in runs):
        problems.append("DIAGNOSE_REGISTRY does not name the registry baked in by a RUN step")
    base_image = next((a for w, a in steps if w == "FROM"), "")
    python = re.match(r"python:(\d+)\.(\d+)", base_image)
    wanted = re.search(r">=\s*(\d+)\.(\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    if not python or tuple(map(int, python.groups())) < tuple(map(int, wanted.groups())):
        problems.append(f"FROM {base_image}: not a Python the project supports")
    return problems


def dockerfile_user() -> tuple[int, int]:
    user = [a for w, a in dockerfile_instructions(DOCKERFILE.read_text()) if w == "USER"][-1]
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def test_the_dockerfile_keeps_its_claims():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []
    pod = pod_spec(base()["Job"])
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == dockerfile_user()


@pytest.mark.parametrize("old, new, expected", [
    ("torch==2.13.0", "torch", "README's pin"),
    ("--index-url https://download.pytorch.org/whl/cpu ", "", "CPU index"),
    ("USER 10001:10001", "USER root", "non-root"),
    ("USER 10001:10001", "USER diagnose", "numeric"),
    ('ENTRYPOINT ["diagnose"]', 'ENTRYPOINT ["python", "-m", "diagnose"]', "ENTRYPOINT"),
    ('ENTRYPOINT ["diagnose"]', "ENTRYPOINT diagnose", "ENTRYPOINT"),
    ("RUN groupadd", "RUN curl -fsSL https://example.com/x.sh | sh && groupadd", "curl"),
    ("COPY . /opt/diagnose/src", "ADD https://example.com/src.tar.gz /opt/diagnose/src", "not a package registry"),
    ('VOLUME ["/data"]', 'VOLUME ["/cache"]', "WORKDIR /data is not a VOLUME"),
    ("FROM python:3.11-", "FROM python:3.10-", "not a Python the project supports"),
    ("DIAGNOSE_REGISTRY=/opt/diagnose/registry", "DIAGNOSE_REGISTRY=/models", "DIAGNOSE_REGISTRY"),
])
def test_a_broken_dockerfile_is_refused(old, new, expected):
    text = DOCKERFILE.read_text()
    assert old in text
    assert expected in " ".join(dockerfile_problems(text.replace(old, new, 1)))


def test_torch_goes_in_before_the_project():
    lines = DOCKERFILE.read_text().splitlines()
    torch = next(i for i, line in enumerate(lines) if "torch==" in line)
    project = next(i for i, line in enumerate(lines) if "pip install -e" in line)
    lines[torch], lines[project] = lines[project], lines[torch]
    assert "installed before the CPU torch" in " ".join(dockerfile_problems("\n".join(lines)))


def test_the_build_context_leaves_out_git_runs_and_credentials():
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", "runs", "**/__pycache__", "**/.kube", "**/*.kubeconfig", "**/.env"} <= patterns
