"""The evidence sources of a compare, registered in one place.

Each source names its evidence file (`evidence/<name>.json`), the stage that writes it, and, for the signals
of the serving side, how it is read from a recorded `--signals` folder (`offline`, with the files it reads
there) and how it is read live (`live` before the benchmark, or `sampler` around it). The offline and live
signal paths (`diagnose.signals`), the compare's stages and the analysis all iterate `SOURCES`, so a new source
is one function plus one line here; its status then shows in report.json `evidence_sources` and its data
reaches the cause rules through `Context.signal(name)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diagnose.core.evidence import Evidence, collect_safely
from diagnose.core.progress import status
from diagnose.core.times import parse_time


@dataclass(frozen=True)
class LiveContext:
    """What a live source may use: the new version's manifest, where to save what it read, the Prometheus URL."""

    manifest: object
    out: Path
    prometheus: str | None = None


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
    from collectors.prometheus import pod_regex_from_selector, read_offline

    return read_offline(folder / "metrics.om", parse_time(deployment.get("deployed_at")),
                        container=deployment.get("container"), namespace=deployment.get("namespace"),
                        pod_regex=deployment.get("pod_regex") or pod_regex_from_selector(deployment.get("selector")))


def _prometheus_live(ctx: LiveContext) -> Evidence:
    from collectors.prometheus import PrometheusCollector

    if not ctx.prometheus:
        return Evidence.unavailable("prometheus", "no Prometheus URL given (--prometheus) and no --signals")
    with status("Querying Prometheus"):
        collector = PrometheusCollector.from_deployment(ctx.prometheus, ctx.manifest.deployment or {})
        evidence = collect_safely(collector)
    if evidence.ok:
        collector.save(ctx.out)
    return evidence


SOURCES: tuple[EvidenceSource, ...] = (
    EvidenceSource("versions", "load", required=True),
    EvidenceSource("requests", "load", required=True),
    EvidenceSource("environment", "load", required=True),
    EvidenceSource("benchmark", "benchmark", required=True),
    EvidenceSource("cgroup", "benchmark", signal=True),
    EvidenceSource("gpu", "signals", signal=True, files=("nvidia-smi.csv",), offline=_gpu_offline, sampler=_gpu_sampler),
    EvidenceSource("kubernetes", "signals", signal=True,
                   files=("kubernetes/pods.json", "kubernetes/events.json", "kubernetes/replicasets.json",
                          "kubernetes/node-events.json"),
                   offline=_kubernetes_offline, live=_kubernetes_live),
    EvidenceSource("prometheus", "signals", signal=True, files=("metrics.om",), offline=_prometheus_offline,
                   live=_prometheus_live),
    EvidenceSource("profile", "profile"),
    EvidenceSource("drift", "drift"),
    EvidenceSource("variants", "verify"),
)


def signal_sources() -> tuple[EvidenceSource, ...]:
    """The serving side's signals (read at call time, so a test can register a toy source)."""
    return tuple(s for s in SOURCES if s.signal)
