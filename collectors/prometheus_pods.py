"""Which pods are the deployment's: an explicit pod regex, the pods kube-state-metrics labels match, or a guess
from the names.

cAdvisor and kube-state-metrics name pods, not their labels, and a Deployment's pods are named after the
Deployment (`<deployment>-<ReplicaSet hash>-<suffix>`), not after its `app` label: a Deployment `intent-serving`
with `app=intent` makes pods `intent-serving-7d9f8-abcde`. So, in this order (`choose_pods`):

1. `pod_regex` (the manifest's `deployment.pod_regex`): used as given;
2. `kube_pod_labels` (kube-state-metrics; one series per pod, each pod label `k` as `label_<k>`): the pods whose
   labels match the selector at any time in the query window, the old and the new ReplicaSet's alike; pods of
   the same Deployment whose labels differ on part of the selector (`version=v1` vs `version=v2`) are the old
   ReplicaSet's, the "before", and are added;
3. the name guess: `<deployment.name>-<hash>-<suffix>` and `<app>-<hash>-<suffix>` (`pod_regex_from_selector`).

Each fallback says why (no kube_pod_labels; the selector's label not exported, as kube-state-metrics v2 exports
only the labels allow-listed with `--metric-labels-allowlist`; no pod with those labels). When the chosen pods
have no series, `no_match_reason` lists the pods Prometheus saw and how to select them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collectors.openmetrics import Series, SeriesKey
from collectors.prometheus_selection import CADVISOR, KSM, pod_regex_from_selector

POD_LABELS = "kube_pod_labels"
SHOWN_PODS = 10             # pods named in a reason or a summary line at most
# a Deployment's pod: <deployment>-<pod-template-hash>-<5 characters>
_DEPLOYMENT_POD = re.compile(r"^(?P<base>.+)-(?P<hash>[a-z0-9]{1,10})-(?P<suffix>[a-z0-9]{5})$")
_STATEFUL_POD = re.compile(r"^(?P<base>.+)-(?P<ordinal>[0-9]+)$")
_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SET_TERM = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_POSITIVE = ("=", "in", "exists")


@dataclass(frozen=True)
class Requirement:
    """One term of a Kubernetes label selector: `key=v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`."""

    key: str
    op: str                       # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    @property
    def positive(self) -> bool:
        """Needs the label to be there (so it cannot be checked when kube-state-metrics does not export it)."""
        return self.op in _POSITIVE

    def matches(self, value: str | None) -> bool:
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        if self.op in ("!=", "notin"):
            return value is None or value not in self.values
        return (value is not None) == (self.op == "exists")

    def text(self) -> str:
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return self.key if self.op == "exists" else f"!{self.key}"


def parse_selector(selector: str | None) -> list[Requirement] | None:
    """A label selector string (`app=intent,tier in (web,api),!canary`) -> its requirements; [] for none,
    None when it does not parse (the API server would refuse it too)."""
    terms, depth, current = [], 0, ""
    for ch in selector or "":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    out = []
    for term in (t.strip() for t in terms):
        if not term:
            continue
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m.group("values").split(",") if v.strip())
            out.append(Requirement(m.group("key"), m.group("op"), values))
        elif term.startswith("!") and not re.search(r"[=\s(),]", term[1:]):
            out.append(Requirement(term[1:].strip(), "!exists"))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            out.append(Requirement(key.strip(), "!=", (value.strip(),)))
        elif "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            out.append(Requirement(key.strip(), "=", (value.strip(),)))
        elif not re.search(r"[\s(),!]", term):
            out.append(Requirement(term, "exists"))
        else:
            return None
        if not out[-1].key or any(re.search(r"[\s=!(),]", v) for v in out[-1].values):
            return None
    return out


def label_name(key: str) -> str:
    """The label kube-state-metrics gives a pod label in kube_pod_labels: `label_` + the key with every character
    outside [a-zA-Z0-9_] as `_`, camelCase as snake_case, lower case (`app.kubernetes.io/name` ->
    `label_app_kubernetes_io_name`)."""
    return "label_" + _CAMEL.sub(r"\1_\2", _INVALID_LABEL_CHAR.sub("_", key)).lower()


def escape_name(name: str) -> str:
    """A pod name as a regex that matches only it: its dots escaped (a name is [a-z0-9.-]; '-' is no
    metacharacter), so the regex also reads well in a manifest."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", name)


def exact_regex(pods) -> str:
    """Exactly these pods (fully anchored by the matcher, as PromQL's =~)."""
    pods = sorted(set(pods))
    return escape_name(pods[0]) if len(pods) == 1 else "(?:" + "|".join(escape_name(p) for p in pods) + ")"


def name_guess(selector: str | None, deployment_name: str | None) -> str | None:
    """`<deployment name>-<hash>-<suffix>` and, from the selector's app label, `<app>-<hash>-<suffix>`; None
    with neither. Only the selector gives exactly `pod_regex_from_selector`'s regex."""
    from_app = pod_regex_from_selector(selector)
    if not deployment_name:
        return from_app
    by_name = re.escape(deployment_name) + "-[a-z0-9]+-[a-z0-9]+"
    if from_app is None or from_app == by_name:
        return by_name
    return f"(?:{re.escape(deployment_name)}|{from_app[:-len('-[a-z0-9]+-[a-z0-9]+')]})-[a-z0-9]+-[a-z0-9]+"


def pod_of(labels: dict) -> tuple[str | None, str | None]:
    """(namespace, pod) a kube-state-metrics series is about: scraped without honor_labels, Prometheus renames
    its own `namespace` and `pod` to `exported_*` (and sets `pod` to kube-state-metrics' pod)."""
    if labels.get("exported_pod"):
        return labels.get("exported_namespace") or labels.get("namespace"), labels["exported_pod"]
    return labels.get("namespace"), labels.get("pod")


def pod_labels(series: dict[SeriesKey, Series], namespace: str | None, since: float | None = None,
               until: float | None = None) -> dict[str, list[dict]]:
    """{pod: [its label sets in kube_pod_labels]} for the namespace's pods with a sample in [since, until]."""
    out: dict[str, list[dict]] = {}
    for (name, labels), (ts, _) in series.items():
        if name != POD_LABELS:
            continue
        labels = dict(labels)
        ns, pod = pod_of(labels)
        if not pod or (namespace is not None and ns != namespace):
            continue
        if len(ts) and since is not None and until is not None and not ((ts >= since) & (ts <= until)).any():
            continue
        out.setdefault(pod, []).append({k: v for k, v in labels.items() if k.startswith("label_") and v != ""})
    return out


def pods_seen(series: dict[SeriesKey, Series], namespace: str | None) -> list[str]:
    """The pods Prometheus holds series of in the namespace: kube_pod_labels, cAdvisor's and kube-state-metrics'
    container series."""
    seen = set(pod_labels(series, namespace))
    for (name, labels), _ in series.items():
        if name in CADVISOR or name in KSM:
            ns, pod = pod_of(dict(labels))
            if pod and (namespace is None or ns == namespace):
                seen.add(pod)
    return sorted(seen)


def listed(names, limit: int = SHOWN_PODS) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class PodSelection:
    """How the pods were chosen: the regex the `Target` uses, which way (`pods_from`: "pod_regex",
    "kube_pod_labels", "name_guess", or None for no pod filter), the pods kube_pod_labels gave, why this way
    (`why`), and notes for the evidence (a fallback worth knowing: the selector's label not exported)."""

    pod_regex: str | None
    pods_from: str | None
    pods: tuple[str, ...] = ()
    why: str = ""
    notes: tuple[str, ...] = ()
    selector: str | None = None
    allowlist_hint: str | None = None   # the kube-state-metrics flag that would let kube_pod_labels select them

    @property
    def pods_text(self) -> str | None:
        """How the Target describes these pods: kube_pod_labels' pods by the selector, not a long regex."""
        if self.pods_from != "kube_pod_labels":
            return None
        return f"pods with {self.selector} ({len(self.pods)} in {POD_LABELS})"


def _allowlist(requirements) -> str:
    keys = sorted({r.key for r in requirements if r.positive})
    return f"--metric-labels-allowlist=pods=[{','.join(keys)}]"


def choose_pods(series: dict[SeriesKey, Series], *, namespace: str | None, selector: str | None,
                pod_regex: str | None = None, deployment_name: str | None = None, since: float | None = None,
                until: float | None = None) -> PodSelection:
    """The deployment's pods, by the first that works of: `pod_regex`, kube_pod_labels matching `selector`
    (samples in [since, until]), the name guess (see the module's docstring)."""
    if pod_regex:
        return PodSelection(pod_regex, "pod_regex", why="deployment.pod_regex given", selector=selector)
    guess = name_guess(selector, deployment_name)
    from_names = []
    if deployment_name:
        from_names.append(f"deployment {deployment_name}")
    if pod_regex_from_selector(selector):
        from_names.append(selector)
    guessed = f"pod names guessed from {' and '.join(from_names)}"

    def fallback(why: str, noted: bool = False, hint: str | None = None) -> PodSelection:
        if guess is None:
            why = (f"no pod filter: every pod{f' in namespace {namespace}' if namespace is not None else ''} "
                   f"({why}; and no deployment.name or app label in the selector to guess pod names from)")
        else:
            why = f"{guessed} ({why})"
        return PodSelection(guess, "name_guess" if guess else None, why=why, notes=(why,) if noted else (),
                            selector=selector, allowlist_hint=hint)

    requirements = parse_selector(selector)
    if requirements is None:
        return fallback(f"the selector {selector!r} does not parse as a label selector", noted=True)
    if not requirements:
        return fallback("no selector to match kube_pod_labels with")
    where = f" in namespace {namespace}" if namespace is not None else ""
    hint = _allowlist(requirements)
    found = pod_labels(series, namespace, since, until)
    if not found:
        return fallback(f"no {POD_LABELS} series{where} (kube-state-metrics not scraped?)", hint=hint)
    exported = {key for sets in found.values() for labels in sets for key in labels}
    missing = [r for r in requirements if label_name(r.key) not in exported]
    if any(r.positive for r in missing):
        keys = ", ".join(sorted({label_name(r.key) for r in missing if r.positive}))
        why = (f"{POD_LABELS}{where} has no {keys}: kube-state-metrics exports only the pod labels allow-listed "
               f"with {hint}")
        return fallback(why, noted=True, hint=hint)
    notes = []
    if missing:
        notes.append(f"{', '.join(r.text() for r in missing)} not checked: {POD_LABELS}{where} has no "
                     f"{', '.join(sorted({label_name(r.key) for r in missing}))} (kube-state-metrics exports only "
                     f"allow-listed labels)")
        requirements = [r for r in requirements if r not in missing]

    def ok(labels: dict, reqs) -> bool:
        return all(r.matches(labels.get(label_name(r.key))) for r in reqs)

    matched = sorted(p for p, sets in found.items() if any(ok(labels, requirements) for labels in sets))
    if not matched:
        return fallback(f"no pod in {POD_LABELS}{where} has {selector}", noted=True)
    # the old ReplicaSet's pods of the same Deployments, whose labels differ on part of the selector
    # (version=v1 before a version=v2 rollout): they are the "before"
    bases = {m.group("base") for m in map(_DEPLOYMENT_POD.match, matched) if m}
    partial = [[r] for r in requirements if r.positive] if len(requirements) > 1 else []
    added = sorted(p for p, sets in found.items()
                   if p not in matched and (m := _DEPLOYMENT_POD.match(p)) and m.group("base") in bases
                   and any(ok(labels, part) for labels in sets for part in partial))
    if added:
        notes.append(f"{listed(added)}: of the same Deployment as the pods with {selector}, with other labels "
                     "(an earlier ReplicaSet), so counted too")
    pods = tuple(sorted(matched + added))
    return PodSelection(exact_regex(pods), POD_LABELS, pods=pods, why=f"pods with {selector} in {POD_LABELS}",
                        notes=tuple(notes), selector=selector, allowlist_hint=hint)


def plural_pods(found) -> str:
    n = len(found)
    return f"{n} pod" + ("" if n == 1 else "s")


def suggest_regex(seen: list[str], selector: str | None, deployment_name: str | None) -> str | None:
    """A pod regex for the pods seen whose names hold the deployment's name or the selector's app value:
    `<base>-[a-z0-9]+-[a-z0-9]+` for a Deployment's, `<base>-[0-9]+` for a StatefulSet's, else the names."""
    words = [w for w in (deployment_name, *(r.values[0] for r in parse_selector(selector) or ()
                                            if r.op == "=" and r.values)) if w]
    candidates = [p for p in seen if any(w in p for w in words)]
    if not candidates:
        return None
    parts: list[str] = []
    for pod in candidates:
        if m := _DEPLOYMENT_POD.match(pod):
            part = escape_name(m.group("base")) + "-[a-z0-9]+-[a-z0-9]+"
        elif m := _STATEFUL_POD.match(pod):
            part = escape_name(m.group("base")) + "-[0-9]+"
        else:
            part = escape_name(pod)
        if part not in parts:
            parts.append(part)
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def no_match_reason(selection: PodSelection | None, seen: list[str], namespace: str | None,
                    deployment_name: str | None = None) -> str:
    """What to add to "no series for ...": how the pods were chosen, the pods Prometheus saw, and how to select
    them."""
    parts = []
    if selection is not None and selection.why and selection.pods_from != "pod_regex":
        parts.append(selection.why)
    where = f" in namespace {namespace}" if namespace is not None else ""
    if not seen:
        parts.append(f"Prometheus saw no pods{where}")
        return "; ".join(parts)
    parts.append(f"Prometheus saw {plural_pods(seen)}{where}: {listed(seen)}")
    selector = selection.selector if selection else None
    example = suggest_regex(seen, selector, deployment_name) or "<deployment>-[a-z0-9]+-[a-z0-9]+"
    how = f"select them with deployment.pod_regex in the manifest (e.g. deployment.pod_regex: '{example}')"
    if selection is not None and selection.allowlist_hint and selection.pods_from != POD_LABELS:
        how += f", or have kube-state-metrics export the selector's labels ({selection.allowlist_hint})"
    parts.append(how)
    return "; ".join(parts)
