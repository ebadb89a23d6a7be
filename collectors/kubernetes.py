"""What the cluster saw around the deploy: OOM kills, restarts, evictions, limits and the rollout.

A model that needs more memory than the pod's limit is OOM-killed and restarted; while a pod is down or in
CrashLoopBackOff the others take its traffic and latency jumps, although the model's own speed may be
unchanged. A CPU limit that was right for the old model throttles the new one. The API server knows all of
it: each container's `restartCount` and `lastState.terminated.reason` (`OOMKilled`), the pod spec's
requests and limits, the namespace's events (BackOff, Killing, Evicted, FailedScheduling, Unhealthy, and the
node-problem-detector's OOMKilling on the node), and the ReplicaSets that date the rollout.

Two ways in, one result:
    KubernetesCollector(namespace, selector, ...).collect()   live, read-only, through the official client
    read_offline(folder)                                      what `kubectl get pods/events/rs -o json` printed
Both turn the raw objects (the API's own JSON, never the client's model classes) into the same Evidence with
`kubernetes_evidence`, so a live collection saved with `save_offline` reads back to the same evidence.

The `kubernetes` package is imported only inside the live path: offline reading needs no client.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from diagnose.core.errors import first_line
from diagnose.core.evidence import Evidence
from diagnose.core.redact import MASK, redact_text
from diagnose.core.times import parse_time

SOURCE = "kubernetes"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"  # a copy of the spec, env values included
# Reasons counted, in the order summaries list them. OOMKilling (node-problem-detector's kernel monitor) and
# SystemOOM (kubelet) are recorded on the Node, the others on the Pod.
EVENT_REASONS = ("OOMKilling", "SystemOOM", "Evicted", "BackOff", "Killing", "Unhealthy", "FailedScheduling")
NODE_REASONS = ("OOMKilling", "SystemOOM")
# Events after deployed_at minus this count as "after the deploy": a deployed_at written by hand or by a CD
# system is often late, and the first OOM kill can come minutes into a rolling update.
WINDOW_GRACE = timedelta(hours=1)
FILES = {"pods": "pods.json", "events": "events.json", "replicasets": "replicasets.json",
         "node_events": "node-events.json"}
ITEM_KINDS = {"pods": ("Pod", "v1"), "events": ("Event", "v1"), "replicasets": ("ReplicaSet", "apps/v1"),
              "node_events": ("Event", "v1")}
PAGE_SIZE = 500
MAX_PAGES = 10_000
ROLE_HINT = "see docs/signals.md for the minimal Role"
API_GROUPS = {"pods": "", "events": "", "replicasets": "apps"}


# --- small parsers ---------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {"Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"),
           "m": Decimal("1e-3"), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
           "P": Decimal("1e15"), "E": Decimal("1e18"), None: Decimal(1)}


def parse_quantity(value) -> Decimal | None:
    """A Kubernetes resource.Quantity ("2", "500m", "2Gi", "1.5G", "1e3") -> Decimal; None if unset or bad."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        return None
    try:
        number = Decimal(m.group(1))
        return number * (Decimal(10) ** int(m.group(2)[1:]) if m.group(2) else _SUFFIX[m.group(3)])
    except (InvalidOperation, ValueError):
        return None


def _iso(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


_REQUIREMENT = re.compile(
    r"^(?P<neg>!)?(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)"
    r"(?:(?P<op>==|!=|=)(?P<value>[-A-Za-z0-9_.]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?$"
)


def selector_matches(selector: str | None, labels: dict | None) -> bool:
    """Does a label selector (`app=textclf,version!=v1,tier in (a,b),!canary`) match these labels?

    Raises ValueError on a selector the API server would refuse, so an offline read fails as a live one would.
    """
    labels = labels or {}
    depth, parts, current = 0, [], []
    for ch in selector or "":
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    for part in (p.strip() for p in parts):
        if not part:
            continue
        m = _REQUIREMENT.match(re.sub(r"\s*(==|!=|=)\s*", r"\1", part))
        if not m or (m.group("neg") and (m.group("op") or m.group("set"))):
            raise ValueError(f"label selector {selector!r}: cannot parse {part!r}")
        key, actual = m.group("key"), labels.get(m.group("key"))
        if m.group("neg"):
            ok = key not in labels
        elif m.group("op"):
            ok = (actual == m.group("value")) == (m.group("op") != "!=")
        elif m.group("set"):
            values = {v.strip() for v in m.group("values").split(",")}
            ok = (actual in values) == (m.group("set") == "in")
        else:
            ok = key in labels
        if not ok:
            return False
    return True


# --- pods ------------------------------------------------------------------------------------------------


def _fmt_cores(cores: float) -> str:
    text = f"{cores:g}"
    return f"{text} core" if cores == 1 else f"{text} cores"


def _resources(specs: list[dict], kind: str) -> dict:
    """requests or limits of the chosen containers: the spec's strings, plus cpu_cores and memory_bytes.

    With several containers the strings are joined with " + " and the numbers summed; a limit missing on one
    of them means the pod has no such limit as a whole (None)."""
    out: dict = {}
    for resource, parsed_key in (("cpu", "cpu_cores"), ("memory", "memory_bytes")):
        raw = [((c.get("resources") or {}).get(kind) or {}).get(resource) for c in specs]
        present = [v for v in raw if v is not None]
        if not specs or not present or (kind == "limits" and len(present) < len(raw)):
            out[resource], out[parsed_key] = None, None
            continue
        values = [parse_quantity(v) for v in present]
        out[resource] = str(present[0]) if len(present) == 1 else " + ".join(str(v) for v in present)
        if any(v is None for v in values):
            out[parsed_key] = None
        elif resource == "cpu":
            out[parsed_key] = float(sum(values))
        else:
            out[parsed_key] = int(sum(values).to_integral_value(rounding="ROUND_CEILING"))
    return out


def _terminations(status: dict) -> list[dict]:
    out = []
    for where in ("lastState", "state"):
        term = (status.get(where) or {}).get("terminated")
        if term:
            out.append({"reason": term.get("reason"), "at": term.get("finishedAt"), "exit_code": term.get("exitCode"),
                        "container": status.get("name")})
    return out


def _pod_entry(pod: dict, container: str | None, notes: list[str]) -> dict:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    name = meta.get("name", "?")
    specs = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    if container is not None:
        specs = [c for c in specs if c.get("name") == container]
        statuses = [s for s in statuses if s.get("name") == container]
        if not specs:
            names = ", ".join(c.get("name", "?") for c in (spec.get("containers") or [])) or "none"
            notes.append(f"pod {name} has no container {container!r} (containers: {names})")
    terms = [t for s in statuses for t in _terminations(s)]
    terms.sort(key=lambda t: parse_time(t["at"]) or datetime.min.replace(tzinfo=timezone.utc))
    last = terms[-1] if terms else None  # the latest termination of the chosen containers
    ooms = [t for t in terms if t["reason"] == "OOMKilled"]
    waiting = [((s.get("state") or {}).get("waiting") or {}).get("reason") for s in statuses]
    waiting = [w for w in waiting if w]
    owners = [o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "ReplicaSet"]
    return {
        "name": name,
        "node": spec.get("nodeName"),
        "phase": status.get("phase"),
        "reason": status.get("reason"),  # e.g. "Evicted" on a Failed pod
        "ready": bool(statuses) and all(s.get("ready") for s in statuses),
        "created_at": meta.get("creationTimestamp"),
        "replicaset": owners[0] if owners else None,
        "containers": [c.get("name") for c in specs],
        "restarts": sum(int(s.get("restartCount") or 0) for s in statuses),
        "waiting_reason": waiting[0] if waiting else None,
        "last_terminated_reason": last["reason"] if last else None,
        "last_terminated_at": last["at"] if last else None,
        "last_exit_code": last["exit_code"] if last else None,
        "oom_killed": bool(ooms),
        "last_oom_at": ooms[-1]["at"] if ooms else None,
        # the memory limit of the container the kernel killed (its own limit, not the pod's sum)
        "oom_memory_limit": next((((c.get("resources") or {}).get("limits") or {}).get("memory") for c in specs
                                  if c.get("name") == ooms[-1]["container"]), None) if ooms else None,
        "requests": _resources(specs, "requests"),
        "limits": _resources(specs, "limits"),
    }


# --- events ----------------------------------------------------------------------------------------------


def _event_fields(ev: dict) -> dict:
    """core/v1 Event or events.k8s.io/v1 Event -> the few fields counted."""
    obj = ev.get("involvedObject") or ev.get("regarding") or {}
    series = ev.get("series") or {}
    count = ev.get("count") or series.get("count") or ev.get("deprecatedCount") or 1
    when = (ev.get("lastTimestamp") or series.get("lastObservedTime") or ev.get("deprecatedLastTimestamp")
            or ev.get("eventTime") or ev.get("firstTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp"))
    return {"reason": ev.get("reason"), "kind": obj.get("kind"), "name": obj.get("name") or "",
            "field_path": obj.get("fieldPath") or "", "count": int(count), "at": parse_time(when),
            "message": ev.get("message") or ev.get("note") or "",
            "uid": (ev.get("metadata") or {}).get("uid")}


_FIELD_CONTAINER = re.compile(r"spec\.(?:initContainers|containers|ephemeralContainers)\{([^}]*)\}")


def _count_events(events: list[dict], pod_names: set[str], rs_names: set[str], nodes: set[str],
                  container: str | None, window_start: datetime | None) -> tuple[dict, dict, dict]:
    after = dict.fromkeys(EVENT_REASONS, 0)
    before = dict.fromkeys(EVENT_REASONS, 0)
    latest: dict[str, tuple[datetime | None, str]] = {}
    seen: set = set()
    prefixes = tuple(f"{rs}-" for rs in rs_names if rs)
    for ev in events:
        f = _event_fields(ev)
        if f["reason"] not in after or (f["uid"] and f["uid"] in seen):
            continue
        if f["uid"]:
            seen.add(f["uid"])
        if f["kind"] == "Node":
            if f["reason"] not in NODE_REASONS or f["name"] not in nodes:
                continue
        elif f["kind"] == "Pod":
            if f["name"] not in pod_names and not (prefixes and f["name"].startswith(prefixes)):
                continue
            m = _FIELD_CONTAINER.search(f["field_path"])
            if container is not None and m and m.group(1) != container:
                continue
        else:
            continue
        is_after = window_start is None or f["at"] is None or f["at"] >= window_start
        (after if is_after else before)[f["reason"]] += f["count"]
        if is_after:
            previous = latest.get(f["reason"])
            stamp = f["at"] or datetime.min.replace(tzinfo=timezone.utc)
            if previous is None or stamp >= (previous[0] or datetime.min.replace(tzinfo=timezone.utc)):
                latest[f["reason"]] = (f["at"], f["message"].strip()[:300])
    return after, before, {reason: message for reason, (_, message) in latest.items()}


# --- rollout ---------------------------------------------------------------------------------------------


def _rollout(replicasets: list[dict]) -> dict | None:
    entries = []
    for rs in replicasets:
        meta, spec, status = rs.get("metadata") or {}, rs.get("spec") or {}, rs.get("status") or {}
        revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
        try:
            revision = int(revision) if revision is not None else None
        except ValueError:
            revision = None
        owners = [o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Deployment"]
        images = [c.get("image") for c in ((spec.get("template") or {}).get("spec") or {}).get("containers") or []]
        entries.append({"name": meta.get("name"), "revision": revision, "created_at": meta.get("creationTimestamp"),
                        "deployment": owners[0] if owners else None, "replicas": int(status.get("replicas") or 0),
                        "ready_replicas": int(status.get("readyReplicas") or 0), "desired_replicas": spec.get("replicas"),
                        "images": images})
    if not entries:
        return None
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    entries.sort(key=lambda e: (e["revision"] if e["revision"] is not None else -1,
                                parse_time(e["created_at"]) or oldest), reverse=True)
    newest = entries[0]
    previous = next((e for e in entries[1:] if e["revision"] is not None and e["revision"] != newest["revision"]), None)
    return {"revision": newest["revision"], "created_at": newest["created_at"], "replicaset": newest["name"],
            "deployment": newest["deployment"], "previous_revision": previous["revision"] if previous else None,
            "replicasets": entries}


# --- the evidence ----------------------------------------------------------------------------------------


def _at(value, deploy: datetime | None) -> str:
    dt = parse_time(value)
    if dt is None:
        return "an unknown time"
    return dt.strftime("%H:%M UTC") if deploy and dt.date() == deploy.date() else dt.strftime("%Y-%m-%d %H:%M UTC")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _limit_lines(pods: list[dict]) -> list[str]:
    lines = []
    for resource, parsed, label in (("cpu", "cpu_cores", "CPU"), ("memory", "memory_bytes", "memory")):
        limits = {}
        for p in pods:
            limits.setdefault(p["limits"][resource], []).append(p["name"])
        requests = sorted({str(p["requests"][resource]) for p in pods if p["requests"][resource] is not None})
        req = f" (request {', '.join(requests)})" if requests else ""
        if resource == "cpu" and requests:
            cores = sorted({p["requests"][parsed] for p in pods if p["requests"][parsed] is not None})
            req = f" (request {', '.join(_fmt_cores(c) for c in cores)})"
        if len(limits) == 1:
            (value,) = limits
            if value is None:
                lines.append(f"no {label} limit on the pods{req}")
            elif resource == "cpu":
                cores = pods[0]["limits"][parsed]
                if " + " in str(value):  # several containers: say what was summed
                    req = f" ({value} over its containers; {req.strip(' ()')})" if req else f" ({value} over its containers)"
                lines.append(f"CPU limit {_fmt_cores(cores) if cores is not None else value} per pod{req}")
            else:
                lines.append(f"memory limit {value} per pod{req}")
        elif limits:
            parts = ", ".join(f"{v if v is not None else 'none'} ({_plural(len(n), 'pod')})" for v, n in limits.items())
            lines.append(f"{label} limit differs across pods: {parts}")
    return lines


def kubernetes_evidence(pods: list[dict], events: list[dict], replicasets: list[dict] | None = None, *,
                        container: str | None = None, deployed_at=None, selector: str | None = None,
                        namespace: str | None = None, node_events: list[dict] | None = None,
                        unreadable: dict[str, str] | None = None, apply_selector: bool = True) -> Evidence:
    """Raw API objects (as `kubectl get -o json` prints their items) -> Evidence. See docs/signals.md.

    `selector` filters pods and ReplicaSets unless `apply_selector` is False (the API server already did);
    `unreadable`: optional lists the live collector was not allowed to read ({resource: why})."""
    notes: list[str] = []
    if selector and apply_selector:
        pods = [p for p in pods if selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
        replicasets = [r for r in replicasets or [] if selector_matches(selector, (r.get("metadata") or {}).get("labels"))]
    namespace = namespace or next(((o.get("metadata") or {}).get("namespace") for o in pods + (replicasets or [])
                                   if (o.get("metadata") or {}).get("namespace")), None)
    rollout = _rollout(replicasets or [])
    deploy = parse_time(deployed_at)
    if deployed_at is not None and deploy is None:
        notes.append(f"deployed_at {deployed_at!r} is not a time; events are counted without a window")
    data: dict = {"namespace": namespace, "selector": selector, "container": container, "deployed_at_from_rollout": None}
    deploy_source = "manifest" if deploy else None
    if deploy is None and rollout and parse_time(rollout["created_at"]):
        deploy = parse_time(rollout["created_at"])
        deploy_source = "rollout"
        data["deployed_at_from_rollout"] = _iso(deploy)
    window_start = deploy - WINDOW_GRACE if deploy else None
    data.update({"deployed_at": _iso(deploy), "deployed_at_source": deploy_source, "window_start": _iso(window_start)})

    entries = [_pod_entry(p, container, notes) for p in pods]
    entries.sort(key=lambda e: e["name"])
    oom_total = [e for e in entries if e["oom_killed"]]
    oom_recent = [e for e in oom_total if window_start is None or (parse_time(e["last_oom_at"]) or window_start) >= window_start]
    restarts = sum(e["restarts"] for e in entries)

    rs_names = {e["replicaset"] for e in entries if e["replicaset"]}
    rs_names |= {r["name"] for r in (rollout or {}).get("replicasets", []) if r["name"]}
    nodes = {e["node"] for e in entries if e["node"]}
    after, before, messages = _count_events(list(events) + list(node_events or []), {e["name"] for e in entries},
                                            rs_names, nodes, container, window_start)
    common = {}
    for kind in ("requests", "limits"):
        values = [e[kind] for e in entries]
        common[kind] = values[0] if values and all(v == values[0] for v in values) else None
    data.update({
        "pods": entries,
        "pod_count": len(entries),
        "ready_pods": sum(e["ready"] for e in entries),
        "restarts": restarts,
        "oom_kills": len(oom_recent),
        "oom_kills_total": len(oom_total),
        "events": after,
        "events_before": before if window_start else None,
        "event_messages": messages,
        "requests": common["requests"],
        "limits": common["limits"],
        "rollout": rollout,
        "unreadable": dict(unreadable or {}),
        "notes": notes,
    })

    # --- plain words ---
    summary: list[str] = []
    where = f"namespace {namespace}" if namespace else "the namespace"
    match = f"match {selector} in {where}" if selector else f"in {where}"
    if not entries:
        summary.append(f"no pods {match}")
    else:
        what = f"container {container}" if container else "all containers"
        summary.append(f"{_plural(len(entries), 'pod')} {match}, {data['ready_pods']} ready ({what})")
        mems = sorted({str(e["oom_memory_limit"]) for e in oom_recent})
        limit = f" (limit memory {', '.join(mems)})" if mems else ""
        since = " since the deploy" if window_start else ""
        if oom_recent:
            summary.append(f"{len(oom_recent)} of {len(entries)} pods OOMKilled{since}{limit}")
        else:
            summary.append(f"no pod OOMKilled{since}" + (f" ({len(oom_total)} before the deploy window)" if oom_total else ""))
        restarted = sorted((e for e in entries if e["restarts"]), key=lambda e: (-e["restarts"], e["name"]))
        if not restarted:
            summary.append(f"no restarts in {_plural(len(entries), 'pod')}")
        elif len(restarted) > 1:
            summary.append(f"{restarts} restarts in total across {_plural(len(entries), 'pod')}")
        for e in restarted[:5]:
            last = ""
            if e["last_terminated_reason"]:
                code = f", exit code {e['last_exit_code']}" if e["last_exit_code"] is not None else ""
                last = f" (last: {e['last_terminated_reason']} at {_at(e['last_terminated_at'], deploy)}{code})"
            now = f"; now {e['waiting_reason']}" if e["waiting_reason"] else ""
            summary.append(f"pod {e['name']} restarted {_plural(e['restarts'], 'time')}{last}{now}")
        summary.extend(_limit_lines(entries))
    counted = [(r, n) for r, n in sorted(after.items(), key=lambda kv: -kv[1]) if n]
    span = (f"since {_at(_iso(window_start), deploy)} ({WINDOW_GRACE.seconds // 3600} h before the deploy at "
            f"{_at(_iso(deploy), deploy)})" if window_start else f"in {where}")

    def words(pairs):
        return ", ".join(f"{r} {n}" + (" on the pods' nodes" if r in NODE_REASONS else "") for r, n in pairs)

    if counted:
        summary.append(f"events {span}: {words(counted)}")
    else:
        summary.append(f"no {', '.join(EVENT_REASONS[:-1])} or {EVENT_REASONS[-1]} events {span}")
    earlier = [(r, n) for r, n in sorted(before.items(), key=lambda kv: -kv[1]) if n]
    if window_start and earlier:
        summary.append(f"events before that: {words(earlier)}")
    if rollout:
        newest = rollout["replicasets"][0]
        desired = newest["desired_replicas"] if newest["desired_replicas"] is not None else newest["replicas"]
        ready = f", {newest['ready_replicas']} of {desired} replicas ready"
        line = (f"rollout: revision {rollout['revision']} (ReplicaSet {newest['name']}, created "
                f"{_at(newest['created_at'], deploy)}{ready})")
        prev = next((r for r in rollout["replicasets"][1:] if r["revision"] == rollout["previous_revision"]), None)
        if prev:
            line += f"; previous revision {prev['revision']} ({prev['name']}, now {_plural(prev['replicas'], 'replica')})"
        summary.append(line)
    for resource, why in (unreadable or {}).items():
        summary.append(f"{resource} not read: {why}")
    if deploy_source == "rollout":
        summary.append(f"deploy time taken from the rollout (no deployed_at given): {_iso(deploy)}")
    summary.extend(notes)
    return Evidence(source=SOURCE, status="ok", data=data, summary=summary)


# --- offline ---------------------------------------------------------------------------------------------


def _read_list(path: Path, key: str) -> list[dict]:
    from diagnose.core.errors import UserError

    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON (line {exc.lineno}): {exc.msg}", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", path) from None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not str(kind or "").endswith("List") or not isinstance(doc.get("items"), list):
        got = f"kind {kind!r}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise UserError(f"not a Kubernetes List (expected what `kubectl get ... -o json` prints: "
                        f'{{"kind": "List", "items": [...]}}), got {got}', path)
    want = ITEM_KINDS[key][0]
    for i, item in enumerate(doc["items"]):
        if not isinstance(item, dict):
            raise UserError(f"items[{i}] is not an object", path)
        if item.get("kind") not in (None, want):
            raise UserError(f"items[{i}] has kind {item.get('kind')!r}, expected {want!r}: is this the right file?", path)
    return doc["items"]


def read_offline(folder, *, deployed_at=None, container: str | None = None, selector: str | None = None) -> Evidence:
    """`pods.json` and `events.json` (required), `replicasets.json` and `node-events.json` (optional) -> Evidence.

    Bad JSON, a file that is not a List, or a missing required file -> UserError naming the file."""
    from diagnose.core.errors import UserError

    folder = Path(folder)
    lists: dict[str, list[dict] | None] = {}
    for key, filename in FILES.items():
        path = folder / filename
        if not path.is_file():
            if key in ("pods", "events"):
                raise UserError(f"missing: record it with `kubectl get {key} -n NAMESPACE -o json > {filename}`", path)
            lists[key] = None
            continue
        lists[key] = _read_list(path, key)
    try:
        return kubernetes_evidence(lists["pods"], lists["events"], lists["replicasets"], container=container,
                                   deployed_at=deployed_at, selector=selector, node_events=lists["node_events"])
    except ValueError as exc:  # a selector the API server would refuse too
        raise UserError(str(exc), folder / FILES["pods"], "selector") from None


def _without_secrets(node):
    """A copy of an API object as it may be saved in a run folder: every container env var's literal `value`
    and kubectl's last-applied-configuration masked. Inline passwords and tokens live there; the evidence
    reads neither, so the saved lists still read back to the same evidence."""
    if isinstance(node, list):
        return [_without_secrets(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "env" and isinstance(value, list):
            value = [{**v, "value": MASK} if isinstance(v, dict) and "value" in v else v for v in value]
        elif key == APPLIED_ANNOTATION:
            value = MASK
        out[key] = _without_secrets(value)
    return out


def copy_without_secrets(source: Path, target: Path) -> None:
    """Copy a recorded `kubectl get ... -o json` file into a run folder with env values and last-applied-configuration
    masked (`_without_secrets`), as the live collector saves its own: what the user recorded may hold inline
    passwords and tokens. A file that is not JSON is not copied at all (UserError naming it)."""
    from diagnose.core.errors import UserError
    from diagnose.core.runfolder import write_text

    try:
        doc = json.loads(Path(source).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not kubectl JSON ({first_line(exc)})", source) from None
    write_text(Path(target), json.dumps(_without_secrets(doc), indent=4, sort_keys=True) + "\n")


def save_offline(folder, pods: list[dict], events: list[dict], replicasets: list[dict] | None = None,
                 node_events: list[dict] | None = None) -> list[Path]:
    """Write the lists as `kubectl get ... -o json` prints them (a `List`, items with kind and apiVersion),
    with env values and last-applied-configuration masked (`_without_secrets`)."""
    from diagnose.core.runfolder import write_text

    folder = Path(folder)
    written = []
    for key, items in (("pods", pods), ("events", events), ("replicasets", replicasets), ("node_events", node_events)):
        if items is None:
            continue
        kind, api_version = ITEM_KINDS[key]
        doc = {"apiVersion": "v1",
               "items": [{"apiVersion": api_version, "kind": kind, **_without_secrets(item)} for item in items],
               "kind": "List", "metadata": {"resourceVersion": ""}}
        path = folder / FILES[key]
        write_text(path, json.dumps(doc, indent=4, sort_keys=True) + "\n")
        written.append(path)
    return written


# --- live ------------------------------------------------------------------------------------------------


def _status_message(body) -> str:
    try:
        status = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    text = (body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")).strip()
    return text.splitlines()[0][:300] if text else ""


def _redacted_error(exc: BaseException) -> Evidence:
    """Evidence.error with credentials masked: the client quotes the API server's URL (kubeconfig `server`, which
    may carry userinfo) and an exec plugin's stderr, and the reason is written into run folders and reports."""
    return Evidence(source=SOURCE, status="error", reason=redact_text(Evidence.error(SOURCE, exc).reason))


class KubernetesCollector:
    """Pods, events and ReplicaSets of one deployment, read live (list only) -> Evidence.

    `api_client`: a `kubernetes.client.ApiClient` to use as is (tests point its Configuration.host at a
    replay server); without one, the kubeconfig (`$KUBECONFIG` or ~/.kube/config, `context` if given) or the
    in-cluster service account is loaded, and with neither the evidence is `unavailable`. Every request has
    `_request_timeout=timeout_s`. `node_events=True` also lists Node events in `default` (where the
    node-problem-detector's OOMKilling lands; needs list on events there too). After `collect()`, `raw` holds
    the objects read and `save(folder)` writes them as `read_offline` reads them.
    """

    name = SOURCE

    def __init__(self, namespace: str, selector: str, container: str | None = None, deployed_at=None,
                 api_client=None, timeout_s: float = 10, *, page_size: int = PAGE_SIZE, node_events: bool = False,
                 context: str | None = None):
        self.namespace, self.selector, self.container = namespace, selector, container
        self.deployed_at, self.api_client, self.timeout_s = deployed_at, api_client, timeout_s
        self.page_size, self.node_events, self.context = page_size, node_events, context
        self.raw: dict[str, list[dict] | None] | None = None

    @classmethod
    def from_deployment(cls, deployment: dict, **kwargs) -> KubernetesCollector:
        """From a manifest's `deployment` mapping (namespace, selector, container, deployed_at)."""
        return cls(deployment.get("namespace") or "default", deployment.get("selector") or "",
                   deployment.get("container"), deployment.get("deployed_at"), **kwargs)

    def _own_client(self):
        """(ApiClient, "") from kubeconfig or the in-cluster service account, else (None, why not)."""
        from kubernetes import client, config
        from urllib3.util.retry import Retry

        cfg = client.Configuration()
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        paths = paths or [os.path.expanduser("~/.kube/config")]
        if any(os.path.isfile(p) for p in paths):
            # the path is passed as read now: the client reads $KUBECONFIG only once, when first imported
            config.load_kube_config(config_file=os.pathsep.join(paths), context=self.context, client_configuration=cfg)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            where = f"$KUBECONFIG={os.environ['KUBECONFIG']}" if os.environ.get("KUBECONFIG") else "~/.kube/config"
            return None, (f"no cluster configured: no kubeconfig ({where} does not exist) and not running in a pod "
                          "($KUBERNETES_SERVICE_HOST unset)")
        # A read timeout is not retried (urllib3 would retry it 3 times): a hung API server costs timeout_s per
        # call, not 4x; a refused connection is retried once.
        cfg.retries = Retry(total=1, read=0, status=0, other=0)
        return client.ApiClient(cfg), ""

    def collect(self) -> Evidence:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            return Evidence.unavailable(SOURCE, "the kubernetes Python client is not installed (pip install kubernetes)")
        own = self.api_client is None
        try:
            api_client, why = (self._own_client() if own else (self.api_client, ""))
        except Exception as exc:  # a kubeconfig that exists but does not load: a real problem to report
            return _redacted_error(exc)
        if api_client is None:
            return Evidence.unavailable(SOURCE, why)
        try:
            raw = self._read(api_client)
        except Exception as exc:
            return _redacted_error(exc)
        finally:
            if own:
                api_client.close()
        self.raw = raw
        try:
            return kubernetes_evidence(raw["pods"], raw["events"], raw["replicasets"], container=self.container,
                                       deployed_at=self.deployed_at, selector=self.selector,
                                       namespace=self.namespace, node_events=raw["node_events"],
                                       unreadable=raw["unreadable"], apply_selector=False)
        except Exception as exc:
            return Evidence.error(SOURCE, exc)

    def save(self, folder) -> list[Path]:
        """Write what the last collect() read into `folder` (pods.json, events.json, ...), for read_offline."""
        if self.raw is None:
            return []
        return save_offline(folder, self.raw["pods"], self.raw["events"], self.raw["replicasets"], self.raw["node_events"])

    def _read(self, api_client) -> dict:
        from kubernetes import client

        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        raw: dict = {"node_events": None, "replicasets": None, "unreadable": {}}
        # Pods and events are the evidence: any failure there is an error. ReplicaSets (the rollout) and Node
        # events are extras: without permission for them the evidence stays ok and says what was not read.
        raw["pods"] = self._list(api_client, core.list_namespaced_pod, "pods", self.namespace,
                                 label_selector=self.selector or None)
        raw["events"] = self._list(api_client, core.list_namespaced_event, "events", self.namespace)
        optional = [("replicasets", apps.list_namespaced_replica_set, "replicasets", self.namespace,
                     {"label_selector": self.selector or None})]
        if self.node_events:
            optional.append(("node_events", core.list_namespaced_event, "events", "default",
                             {"field_selector": "involvedObject.kind=Node"}))
        for key, call, resource, namespace, query in optional:
            try:
                raw[key] = self._list(api_client, call, resource, namespace, **query)
            except PermissionError as exc:
                raw["unreadable"][key.replace("_", " ")] = str(exc)
        return raw

    def _list(self, api_client, call, resource: str, namespace: str, **query) -> list[dict]:
        """All items of one list call, page by page (`limit`, then `_continue` until the token is empty)."""
        items: list[dict] = []
        token, seen = None, set()
        for _ in range(MAX_PAGES):
            kwargs = {k: v for k, v in query.items() if v is not None}
            if token:
                kwargs["_continue"] = token
            response = self._call(api_client, call, resource, namespace, limit=self.page_size,
                                  _request_timeout=self.timeout_s, _preload_content=False, **kwargs)
            try:
                body = json.loads(response.data)
            except ValueError as exc:
                raise RuntimeError(f"the API server's answer to list {resource} in namespace \"{namespace}\" is not "
                                   f"JSON ({exc})") from None
            finally:
                response.release_conn()
            items.extend(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items
            if token in seen:
                raise RuntimeError(f"the API server repeated a continue token while listing {resource}")
            seen.add(token)
        raise RuntimeError(f"more than {MAX_PAGES} pages of {resource} in namespace \"{namespace}\"")

    def _call(self, api_client, call, resource: str, namespace: str, **kwargs):
        """One request; every failure becomes an exception whose one-line message says what to do."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        host = getattr(api_client.configuration, "host", "?")
        what = f'{resource} in namespace "{namespace}"'
        group = API_GROUPS[resource]
        needs = f"needs list on {resource}" + (f' in API group "{group}"' if group else "")
        try:
            return call(namespace, **kwargs)
        except ApiException as exc:
            status, message = exc.status or 0, _status_message(exc.body)
            said = f"; the API server said: {message}" if message else ""
            if status == 403:
                raise PermissionError(f"403 Forbidden: cannot list {what} ({needs}; {ROLE_HINT}){said}") from None
            if status == 401:
                raise PermissionError(f"401 Unauthorized: cannot list {what}: the API server refused the credentials "
                                      f"(expired token or certificate?); the identity {needs} ({ROLE_HINT})") from None
            if status == 0:
                reason = (str(exc.reason or "").strip().splitlines() or ["?"])[-1]
                raise ConnectionError(f"cannot reach the API server at {host}: {reason}") from None
            if status == 410:
                raise RuntimeError(f"410 Gone: the continue token expired while paging through {what}; "
                                   f"run again{said}") from None
            text = f"{status} {exc.reason}" if exc.reason else str(status)
            raise RuntimeError(f"{text} from the API server at {host} while listing {what}{said}") from None
        except (urllib3.exceptions.MaxRetryError, urllib3.exceptions.HTTPError, OSError) as exc:
            cause = getattr(exc, "reason", None) or exc
            refused = isinstance(cause, urllib3.exceptions.NewConnectionError)  # a ConnectTimeoutError in urllib3 2
            if not refused and (isinstance(cause, (urllib3.exceptions.TimeoutError, TimeoutError))
                                or "timed out" in str(cause)):
                raise TimeoutError(f"no answer from the API server at {host} within the {self.timeout_s:g} s timeout "
                                   f"(timeout_s) while listing {what}") from None
            detail = first_line(cause)
            raise ConnectionError(f"cannot reach the API server at {host} while listing {what}: {detail}") from None
