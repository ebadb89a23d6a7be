"""The evidence sources of a compare, registered in one place.

Each source names its evidence file (`evidence/<name>.json`), the stage that writes it, and, for the signals
of the serving side, how it is read from a recorded `--signals` folder (`offline`, with the files it reads
there) and how it is read live (`live` before the benchmark, or `sampler` around it). The offline and live
signal paths (`diagnose.signals`), the compare's stages and the analysis all iterate `SOURCES`, so a new source
is one function plus one line here; its status then shows in report.json `evidence_sources` and its data
reaches the cause rules through `Context.signal(name)`.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence, collect_safely
from diagnose.core.progress import status
from diagnose.core.redact import redact_url
from diagnose.core.times import parse_time

TOKEN_ENV = "DIAGNOSE_PROMETHEUS_TOKEN"
USER_ENV, PASSWORD_ENV = "DIAGNOSE_PROMETHEUS_USER", "DIAGNOSE_PROMETHEUS_PASSWORD"


@dataclass(frozen=True)
class PrometheusAccess:
    """A Prometheus to query: the URL the calls go to and the Authorization header they send.

    Its repr is the redacted URL only, so the options of a compare can be printed or logged without a secret."""

    url: str
    authorization: str | None = None

    def __repr__(self) -> str:
        return f"PrometheusAccess({redact_url(self.url)!r})"

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Authorization": self.authorization} if self.authorization else None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def read_auth_file(path: Path) -> str:
    """The Authorization header a `--prometheus-auth` file gives (docs/signals.md): one line, `user:password`
    (basic auth; the user has no colon) or a bearer token. Any other file is a UserError that never quotes it."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise UserError(f"--prometheus-auth: cannot read: {exc.strerror or type(exc).__name__}", path) from None
    except UnicodeDecodeError:
        raise UserError("--prometheus-auth: not UTF-8 text", path) from None
    if len(lines) != 1:
        raise UserError(f"--prometheus-auth: expected one line, user:password or a bearer token; found {len(lines)}",
                        path)
    user, colon, password = lines[0].partition(":")
    if colon and user and password:
        return _basic(user, password)
    if colon or any(c.isspace() for c in lines[0]):
        raise UserError("--prometheus-auth: expected user:password (neither empty) or a bearer token (no spaces)",
                        path)
    return f"Bearer {lines[0]}"


def prometheus_access(url: str | None, auth_file: Path | None = None,
                      environ: Mapping[str, str] = os.environ) -> PrometheusAccess | None:
    """`--prometheus URL` with its credentials, the first found of: the `--prometheus-auth` file, the URL's own
    `user:password@`, $DIAGNOSE_PROMETHEUS_TOKEN (bearer), $DIAGNOSE_PROMETHEUS_USER and _PASSWORD (basic).
    The userinfo leaves the URL and becomes the header, so exactly one Authorization is sent and the URL kept
    for the calls and their messages holds no password. A bad auth file fails here, before anything runs."""
    authorization = read_auth_file(auth_file) if auth_file is not None else None
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise UserError(f"--prometheus: not a URL ({exc}): {redact_url(url)}") from None
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        url = urlunsplit(parts._replace(netloc=host))
        user, _, password = userinfo.partition(":")
        authorization = authorization or _basic(unquote(user), unquote(password))
    if authorization is None and environ.get(TOKEN_ENV):
        authorization = f"Bearer {environ[TOKEN_ENV].strip()}"
    if authorization is None and (environ.get(USER_ENV) or environ.get(PASSWORD_ENV)):
        if not (environ.get(USER_ENV) and environ.get(PASSWORD_ENV)):
            raise UserError(f"set both ${USER_ENV} and ${PASSWORD_ENV} for basic auth, or neither")
        authorization = _basic(environ[USER_ENV], environ[PASSWORD_ENV])
    return PrometheusAccess(url, authorization)


@dataclass(frozen=True)
class LiveContext:
    """What a live source may use: the new version's manifest, where to save what it read, and the Prometheus
    to query with its credentials (`PrometheusAccess`, whose repr hides them)."""

    manifest: object
    out: Path
    prometheus: PrometheusAccess | None = None
    latency_metric: str | None = None  # --latency-metric, over the deployment's latency_metric


def latency_metric_option(name: str | None) -> str | None:
    """--latency-metric NAME: None when not given; a UserError (exit 2) when NAME is not a Prometheus metric name."""
    if name is None:
        return None
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
        raise UserError(f"--latency-metric: {name!r} is not a Prometheus metric name")
    return name


def with_latency_metric(deployment: dict | None, latency_metric: str | None) -> dict:
    """The deployment, its latency_metric replaced by --latency-metric's when one was given."""
    deployment = dict(deployment or {})
    if latency_metric:
        deployment["latency_metric"] = latency_metric
    return deployment


@dataclass(frozen=True)
class EvidenceSource:
    name: str
    stage: str  # the stage that writes evidence/<name>.json
    required: bool = False  # a run folder without it cannot be analyzed
    signal: bool = False  # a signal of the serving side: the cause rules read it through Context.signal
    files: tuple[str, ...] = ()  # what `offline` reads in a --signals folder; the first must exist for it to run
    offline: Callable[[Path, dict], Evidence] | None = None  # (folder, manifest deployment) -> Evidence
    live: Callable[[LiveContext], Evidence] | None = None  # read once, before the benchmark
    sampler: Callable[[], object] | None = None  # started before the benchmark, collected after it
    copy: Callable[[Path, Path], None] | None = None  # (recorded file, run folder file): copies `files` with the
    # secrets they may hold masked; None: copied as they are


# --- the signal sources' readers ------------------------------------------------------------------------

def _gpu_offline(folder: Path, deployment: dict) -> Evidence:
    from collectors.gpu import gpu_evidence, parse_nvidia_smi_csv

    deployed_at = parse_time(deployment.get("deployed_at"))
    naive = deployed_at.replace(tzinfo=None) if deployed_at else None
    return gpu_evidence(parse_nvidia_smi_csv(folder / "nvidia-smi.csv"), deployed_at=naive)


def _gpu_sampler():
    from collectors.gpu import NvmlSampler

    return NvmlSampler()


def _kubernetes_offline(folder: Path, deployment: dict) -> Evidence:
    from collectors.kubernetes import read_offline

    return read_offline(folder / "kubernetes", deployed_at=parse_time(deployment.get("deployed_at")),
                        selector=deployment.get("selector"), container=deployment.get("container"))


def _kubernetes_copy(source: Path, target: Path) -> None:
    from collectors.kubernetes import copy_without_secrets

    copy_without_secrets(source, target)


def _kubernetes_live(ctx: LiveContext) -> Evidence:
    from collectors.kubernetes import KubernetesCollector

    deployment = ctx.manifest.deployment
    if not deployment:
        return Evidence.unavailable("kubernetes", f"{ctx.manifest.path} has no deployment section")
    with status("Reading the deployment's pods and events"):
        collector = KubernetesCollector.from_deployment(deployment)
        evidence = collect_safely(collector)
    if evidence.ok:
        collector.save(ctx.out / "kubernetes")
    return evidence


def _prometheus_offline(folder: Path, deployment: dict) -> Evidence:
    """The pods: `deployment.pod_regex`, else the selector's pods in the file's kube_pod_labels, else a guess
    from `deployment.name` and the selector (collectors/prometheus_pods.py)."""
    from collectors.prometheus import read_offline

    name = deployment.get("name")
    return read_offline(folder / "metrics.om", parse_time(deployment.get("deployed_at")),
                        container=deployment.get("container"), namespace=deployment.get("namespace"),
                        latency_metric=deployment.get("latency_metric") or None,
                        pod_regex=deployment.get("pod_regex") or None, selector=deployment.get("selector"),
                        deployment_name=name if isinstance(name, str) and name else None)


def _prometheus_live(ctx: LiveContext) -> Evidence:
    from collectors.prometheus import PrometheusCollector

    if not ctx.prometheus:
        return Evidence.unavailable("prometheus", "no Prometheus URL given (--prometheus) and no --signals")
    with status("Querying Prometheus"):
        deployment = with_latency_metric(ctx.manifest.deployment, ctx.latency_metric)
        collector = PrometheusCollector.from_deployment(ctx.prometheus.url, deployment, headers=ctx.prometheus.headers)
        evidence = collect_safely(collector)
    if evidence.ok:
        collector.save(ctx.out)
    return evidence


def _loadtest_offline(folder: Path, deployment: dict) -> Evidence:
    from diagnose.loadtest import read_signal

    return read_signal(folder / "loadtest.json")


SOURCES: tuple[EvidenceSource, ...] = (
    EvidenceSource("versions", "load", required=True),
    EvidenceSource("requests", "load", required=True),
    EvidenceSource("environment", "load", required=True),
    EvidenceSource("benchmark", "benchmark", required=True),
    EvidenceSource("cgroup", "benchmark", signal=True),
    EvidenceSource("host", "benchmark", signal=True),  # other work on the machine during the benchmark
    EvidenceSource("gpu", "signals", signal=True, files=("nvidia-smi.csv",), offline=_gpu_offline, sampler=_gpu_sampler),
    EvidenceSource("kubernetes", "signals", signal=True,
                   files=("kubernetes/pods.json", "kubernetes/events.json", "kubernetes/replicasets.json",
                          "kubernetes/node-events.json"),
                   offline=_kubernetes_offline, live=_kubernetes_live, copy=_kubernetes_copy),
    EvidenceSource("prometheus", "signals", signal=True, files=("metrics.om",), offline=_prometheus_offline,
                   live=_prometheus_live),
    # a two-deployment `diagnose loadtest` (its evidence/loadtest.json): the queue and p99 of each under one schedule
    EvidenceSource("loadtest", "signals", signal=True, files=("loadtest.json",), offline=_loadtest_offline),
    EvidenceSource("profile", "profile"),
    EvidenceSource("drift", "drift"),
    EvidenceSource("variants", "verify"),
)


def signal_sources() -> tuple[EvidenceSource, ...]:
    """The serving side's signals (read at call time, so a test can register a toy source)."""
    return tuple(s for s in SOURCES if s.signal)
