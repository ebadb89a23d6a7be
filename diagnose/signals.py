"""Signals of the serving side brought into a run folder: recorded (`--signals DIR`) or read live.

Both paths iterate the evidence-source registry (`diagnose.sources`). A recorded folder may hold
(docs/signals.md):
    nvidia-smi.csv                 what `nvidia-smi --query-gpu=... --format=csv -l 1` prints
    kubernetes/pods.json           what `kubectl get pods -o json` prints
    kubernetes/events.json         what `kubectl get events -o json` prints
    kubernetes/replicasets.json    optional: `kubectl get rs -o json`
    metrics.om                     OpenMetrics text with timestamps (what promtool backfills)
    loadtest.json                  a two-deployment `diagnose loadtest`'s evidence/loadtest.json
Only these documented files are copied into the run folder's `signals/`, and their evidence is saved, so
`diagnose analyze` sees the same evidence later. A source whose files are absent is recorded as
unavailable with that reason; a file that does not parse ends the command with one line (exit 2).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from diagnose import sources
from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence, collect_safely


def collect_offline(folder: Path, deployment: dict | None, latency_metric: str | None = None) -> dict[str, Evidence]:
    """Evidence from the recorded files in `folder`, windowed on the manifest's `deployment` section
    (`latency_metric`, --latency-metric, wins over its `latency_metric`)."""
    deployment = sources.with_latency_metric(deployment, latency_metric)
    found: dict[str, Evidence] = {}
    for source in sources.signal_sources():
        if source.offline is None:
            continue
        if (folder / source.files[0]).is_file():
            found[source.name] = source.offline(folder, deployment or {})
        else:
            found[source.name] = Evidence.unavailable(source.name, f"no {source.files[0]} in {folder}")
    return found


def copy_into(target: Path, folder: Path) -> Path:
    """Keep the signals with the run (the folder is the single source of truth): the documented files only,
    never a link that leads out of `folder`, and kubectl's JSON with its env values masked (`EvidenceSource.copy`):
    no secret reaches a run folder."""
    folder = Path(folder)
    root = folder.resolve()
    for source in sources.signal_sources():
        for name in source.files:
            path = folder / name
            if not path.is_file():
                continue
            if root not in path.resolve().parents:
                raise UserError("a link that leads out of the --signals folder; copy the file in instead", path)
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            if source.copy is not None:
                source.copy(path, target / name)
            else:
                shutil.copyfile(path, target / name)
    return target


def collect_live(manifest, out: Path, prometheus: sources.PrometheusAccess | None,
                 latency_metric: str | None = None) -> dict[str, Evidence]:
    """The manifest's deployment read from the cluster (kubeconfig or in-cluster) and from Prometheus
    (`prometheus`: its URL and credentials, `sources.prometheus_access`); what was read is saved into `out` in the
    offline formats, so it can be given to --signals. `latency_metric` (--latency-metric) wins over the
    deployment's."""
    ctx = sources.LiveContext(manifest=manifest, out=Path(out), prometheus=prometheus, latency_metric=latency_metric)
    return {source.name: source.live(ctx) for source in sources.signal_sources() if source.live is not None}


def start_samplers() -> dict[str, object]:
    """The sampled sources (the GPU), started."""
    running = {}
    for source in sources.signal_sources():
        if source.sampler is not None:
            sampler = source.sampler()
            sampler.start()
            running[source.name] = sampler
    return running


def stop_samplers(running: dict[str, object], out: Path) -> dict[str, Evidence]:
    """Each sampler's evidence; what an ok one read is saved into `out` as its offline file."""
    found = {}
    for name, sampler in running.items():
        found[name] = collect_safely(sampler)
        if found[name].ok:
            sampler.save(out, stem=Path(_offline_file(name)).stem)
    return found


def sample_for(seconds: float, out: Path) -> dict[str, Evidence]:
    """`diagnose collect`: every sampled source sampled for `seconds`."""
    running = start_samplers()
    if any(getattr(s, "running", False) for s in running.values()):
        time.sleep(seconds)
    return stop_samplers(running, out)


def _offline_file(name: str) -> str:
    return next(s.files[0] for s in sources.signal_sources() if s.name == name)
