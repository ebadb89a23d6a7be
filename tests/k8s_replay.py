"""A tiny Kubernetes API server that replays recorded objects, for testing the real client over HTTP.

It answers the three list calls the Kubernetes collector makes, in the API server's own JSON shapes:

    GET /api/v1/namespaces/{ns}/pods?labelSelector=...&limit=N&continue=TOKEN       -> PodList
    GET /api/v1/namespaces/{ns}/events?limit=N&continue=TOKEN&fieldSelector=...     -> EventList
    GET /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=...&limit=N&...     -> ReplicaSetList

The objects come from files in `kubectl get ... -o json` form (a `List` with `items`): `pods.json`,
`events.json`, `replicasets.json` and `node-events.json` (Node events, served in namespace `default`), plus
any extra objects a test adds. Like the real server it filters by `labelSelector` (equality, inequality,
`in`/`notin`, existence; an unparsable selector gets the server's 400), by `fieldSelector` on events
(`key=value` on the fields events support), pages with `limit`/`continue` (an opaque base64 token,
`metadata.continue` and `remainingItemCount` until the last page), and puts `kind: <Kind>List` with items
that carry no `kind`/`apiVersion`.

With `token`, a request without `Authorization: Bearer <token>` gets 401, as with a bad credential.
Failure modes, for all requests or only one resource (`only="events"`; `"default/events"` for one
namespace): "forbidden" (403 with a real Status object), "unauthorized" (401),
"error" (500) and "slow" (answers after `delay_s`, past the client's timeout). Requests are logged in
`requests` so tests can see that paging really happened. The server is bounded: `stop()` (or leaving the
`with` block) wakes any handler that is sleeping, shuts the server down and joins its threads.

This selector parser is written apart from the collector's on purpose, so a bug in one is not mirrored by
the other.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FILES = {"pods": "pods.json", "events": "events.json", "replicasets": "replicasets.json"}
NODE_EVENTS_FILE = "node-events.json"
KINDS = {"pods": ("PodList", "v1"), "events": ("EventList", "v1"), "replicasets": ("ReplicaSetList", "apps/v1")}
ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods$"), "pods"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/events$"), "events"),
    (re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets$"), "replicasets"),
]
MODES = ("ok", "forbidden", "unauthorized", "error", "slow")
GROUPS = {"pods": "", "events": "", "replicasets": "apps"}


def load_items(path: Path) -> list[dict]:
    return json.loads(path.read_text())["items"] if path.is_file() else []


# --- label selectors (apimachinery's labels.Parse grammar, the common subset) ----------------------------

_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<value>[-A-Za-z0-9_.]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)|)\s*$"
)


def split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b=c` -> [`a in (x,y)`, `b=c`]."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def selector_matches(selector: str, labels: dict) -> bool:
    """Raise ValueError on a selector the API server would refuse."""
    for requirement in split_requirements(selector or ""):
        m = _REQ.match(requirement)
        if not m or (m.group("neg") and (m.group("op") or m.group("setop"))):
            raise ValueError(f"unable to parse requirement: {requirement.strip()!r}")
        key = m.group("key")
        if m.group("neg"):
            ok = key not in labels
        elif m.group("op") in ("=", "=="):
            ok = labels.get(key) == m.group("value")
        elif m.group("op") == "!=":
            ok = labels.get(key) != m.group("value")
        elif m.group("setop"):
            values = {v.strip() for v in m.group("values").split(",")}
            ok = (labels.get(key) in values) if m.group("setop") == "in" else (labels.get(key) not in values)
        else:
            ok = key in labels
        if not ok:
            return False
    return True


def _field(obj: dict, dotted: str):
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def field_selector_matches(selector: str, obj: dict) -> bool:
    for requirement in split_requirements(selector or ""):
        key, op, value = re.match(r"^\s*([^!=]+?)\s*(==|!=|=)\s*(.*?)\s*$", requirement).groups()
        actual = _field(obj, "source.component" if key == "source" else key) or ""
        if (actual == value) != (op in ("=", "==")):
            return False
    return True


# --- the server ------------------------------------------------------------------------------------------


def status_object(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class ReplayServer:
    """`with ReplayServer(folder, mode="forbidden", only="events") as server: ... server.url ...`"""

    def __init__(self, folder: Path | None = None, *, namespace: str = "serving", mode: str = "ok",
                 only: str | None = None, delay_s: float = 5.0, user: str = "system:serviceaccount:default:diag",
                 extra: dict[str, list[dict]] | None = None, token: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.namespace, self.mode, self.only, self.delay_s, self.user = namespace, mode, only, delay_s, user
        self.token = token  # when set, a request without "Authorization: Bearer <token>" gets 401
        self.objects: dict[tuple[str, str], list[dict]] = {}
        for resource, filename in FILES.items():
            items = load_items(folder / filename) if folder else []
            items += copy.deepcopy((extra or {}).get(resource, []))
            self.objects[(namespace, resource)] = items
        node_events = load_items(folder / NODE_EVENTS_FILE) if folder else []
        self.objects[("default", "events")] = node_events + copy.deepcopy((extra or {}).get("node_events", []))
        self.requests: list[tuple[str, dict]] = []
        self.authorizations: list[str | None] = []
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._resource_version = 48213977

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def calls(self, resource: str, namespace: str | None = None) -> list[dict]:
        """The query parameters of every request for one resource (optionally in one namespace)."""
        return [q for (path, q) in self.requests
                if path.rstrip("/").endswith("/" + resource) and (namespace is None or f"/namespaces/{namespace}/" in path)]

    def start(self) -> ReplayServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive thread outlives a test

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                try:
                    code, body = server._answer(self.path, self.headers.get("Authorization"))
                    if code is None:
                        return
                    payload = json.dumps(body).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer to

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = False  # joined in stop(); handlers never sleep past it
        self._httpd.block_on_close = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="k8s-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()  # joins handler threads
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _answer(self, raw_path: str, authorization: str | None) -> tuple[int | None, dict]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.requests.append((parts.path, query))
        self.authorizations.append(authorization)
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, status_object(401, "Unauthorized", "Unauthorized")
        route = next(((m, resource) for pattern, resource in ROUTES if (m := pattern.match(parts.path))), None)
        if route is None:
            return 404, status_object(404, "NotFound", "the server could not find the requested resource")
        m, resource = route
        namespace = m.group(1)
        if self.only is None or self.only in (resource, f"{namespace}/{resource}"):
            if self.mode == "forbidden":
                group = GROUPS[resource]
                message = (f'{resource} is forbidden: User "{self.user}" cannot list resource "{resource}" in API group '
                           f'"{group}" in the namespace "{namespace}"')
                details = {"kind": resource, **({"group": group} if group else {})}
                return 403, status_object(403, "Forbidden", message) | {"details": details}
            if self.mode == "unauthorized":
                return 401, status_object(401, "Unauthorized", "Unauthorized")
            if self.mode == "error":
                return 500, status_object(500, "InternalError",
                                          'Internal error occurred: etcdserver: request timed out')
            if self.mode == "slow" and self._stop.wait(self.delay_s):
                return None, {}  # torn down while sleeping: drop the connection
        return self._list(namespace, resource, query)

    def _list(self, namespace: str, resource: str, query: dict) -> tuple[int, dict]:
        items = self.objects.get((namespace, resource), [])
        try:
            items = [o for o in items if selector_matches(query.get("labelSelector", ""),
                                                          (o.get("metadata") or {}).get("labels") or {})]
        except ValueError as exc:
            return 400, status_object(400, "BadRequest", str(exc))
        if query.get("fieldSelector"):
            items = [o for o in items if field_selector_matches(query["fieldSelector"], o)]
        start = 0
        if query.get("continue"):
            try:
                start = json.loads(base64.b64decode(query["continue"]))["start"]
            except (ValueError, KeyError):
                return 400, status_object(400, "BadRequest", "continue key is not valid: illegal base64 data")
        limit = int(query["limit"]) if query.get("limit") else 0
        end = start + limit if limit > 0 else len(items)
        page = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items[start:end]]
        kind, api_version = KINDS[resource]
        metadata: dict = {"resourceVersion": str(self._resource_version)}
        if end < len(items):
            token = {"v": "meta.k8s.io/v1", "rv": self._resource_version, "start": end}
            metadata["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            metadata["remainingItemCount"] = len(items) - end
        return 200, {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}
