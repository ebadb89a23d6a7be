"""Offline signals (`--signals DIR`): recorded GPU and Kubernetes evidence brought into a run folder.

DIR may hold (docs/signals.md):
    nvidia-smi.csv                 what `nvidia-smi --query-gpu=... --format=csv -l 1` prints
    kubernetes/pods.json           what `kubectl get pods -o json` prints
    kubernetes/events.json         what `kubectl get events -o json` prints
    kubernetes/replicasets.json    optional: `kubectl get rs -o json`
    metrics.om                     OpenMetrics text with timestamps (what promtool backfills)
The files are copied into the run folder's `signals/` and their evidence into `evidence/<source>.json`, so
`diagnose analyze` sees the same evidence later. A source whose files are absent is recorded as
unavailable with that reason; a file that does not parse ends the command with one line (exit 2).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

from diagnose.core.evidence import Evidence

GPU_FILE = "nvidia-smi.csv"
K8S_DIR = "kubernetes"
METRICS_FILE = "metrics.om"


def parse_time(value) -> datetime | None:
    """deployment.deployed_at as YAML gives it (a datetime or an ISO string) -> aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def collect_offline(folder: Path, deployment: dict | None) -> dict[str, Evidence]:
    """Evidence from the recorded files in `folder`, windowed on the manifest's `deployment` section."""
    deployment = deployment or {}
    deployed_at = parse_time(deployment.get("deployed_at"))
    from collectors.gpu import gpu_evidence, parse_nvidia_smi_csv
    from collectors.kubernetes import read_offline

    evidence: dict[str, Evidence] = {}
    csv = folder / GPU_FILE
    if csv.is_file():
        naive = deployed_at.replace(tzinfo=None) if deployed_at else None
        evidence["gpu"] = gpu_evidence(parse_nvidia_smi_csv(csv), deployed_at=naive)
    else:
        evidence["gpu"] = Evidence.unavailable("gpu", f"no {GPU_FILE} in {folder}")
    k8s = folder / K8S_DIR
    if (k8s / "pods.json").is_file():
        evidence["kubernetes"] = read_offline(k8s, deployed_at=deployed_at, selector=deployment.get("selector"),
                                              container=deployment.get("container"))
    else:
        evidence["kubernetes"] = Evidence.unavailable("kubernetes", f"no {K8S_DIR}/pods.json in {folder}")
    metrics = folder / METRICS_FILE
    if metrics.is_file():
        from collectors.prometheus import pod_regex_from_selector
        from collectors.prometheus import read_offline as read_metrics

        evidence["prometheus"] = read_metrics(
            metrics, deployed_at, container=deployment.get("container"), namespace=deployment.get("namespace"),
            pod_regex=deployment.get("pod_regex") or pod_regex_from_selector(deployment.get("selector")))
    else:
        evidence["prometheus"] = Evidence.unavailable("prometheus", f"no {METRICS_FILE} in {folder}")
    return evidence


def copy_into(run_dir: Path, folder: Path) -> Path:
    """Keep the signals with the run: the folder is the single source of truth."""
    target = run_dir / "signals"
    shutil.copytree(folder, target, dirs_exist_ok=True)
    return target


def collect_live(manifest, out: Path, prometheus: str | None) -> dict[str, Evidence]:
    """The manifest's deployment read from the cluster (kubeconfig or in-cluster) and from Prometheus at
    `prometheus`; what was read is saved into `out` in the offline formats, so it can be given to --signals."""
    from collectors.kubernetes import KubernetesCollector
    from collectors.prometheus import PrometheusCollector
    from diagnose.core.evidence import collect_safely
    from diagnose.core.progress import status

    found: dict[str, Evidence] = {}
    if manifest.deployment:
        with status("Reading the deployment's pods and events"):
            collector = KubernetesCollector.from_deployment(manifest.deployment)
            found["kubernetes"] = collect_safely(collector)
        if found["kubernetes"].ok:
            collector.save(out / K8S_DIR)
    else:
        found["kubernetes"] = Evidence.unavailable("kubernetes", f"{manifest.path} has no deployment section")
    if prometheus:
        with status("Querying Prometheus"):
            collector = PrometheusCollector.from_deployment(prometheus, manifest.deployment or {})
            found["prometheus"] = collect_safely(collector)
        if found["prometheus"].ok:
            collector.save(out)
    else:
        found["prometheus"] = Evidence.unavailable("prometheus", "no Prometheus URL given (--prometheus) and no --signals")
    return found


def sample_gpu(seconds: float, out: Path) -> Evidence:
    """Sample the GPUs for `seconds` with NVML; readings saved as nvidia-smi.csv in `out` when there are any."""
    import time

    from collectors.gpu import NvmlSampler
    from diagnose.core.evidence import collect_safely

    sampler = NvmlSampler()
    sampler.start()
    if sampler.running:
        time.sleep(seconds)
    evidence = collect_safely(sampler)
    if evidence.ok:
        sampler.save(out, stem="nvidia-smi")
    return evidence
