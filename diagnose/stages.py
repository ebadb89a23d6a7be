"""The stages of a compare, each one shape: `stage(plan, folder)` measures and writes evidence files.

`diagnose.compare` runs `STAGES` in order over one `Plan` and one `RunFolder`; no stage returns what it found
except through the folder, so `diagnose analyze` later reads exactly what the next stage read. A stage that is
an optional evidence source (drift, profile, verify, the signals) records its own failure in its evidence file
and the compare goes on; a stage whose evidence the verdict needs (load, benchmark) raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from diagnose.attribution import NN, OO
from diagnose.core import stats
from diagnose.core.errors import UserError
from diagnose.core.manifest import Manifest
from diagnose.core.progress import Bar, status
from diagnose.core.requestlog import describe, digest
from diagnose.core.runfolder import SIDES, RunFolder


@dataclass
class Plan:
    """What one compare measures, resolved before anything runs; `loaded` is filled by the load stage."""

    opts: object  # diagnose.compare.CompareOptions
    registry_label: str
    model: str
    manifests: dict[str, Manifest]
    request_paths: dict[str, Path]
    requests: dict[str, pd.DataFrame]
    identical: bool  # both versions replay identical requests (diagnose.core.requestlog.identical)
    loaded: dict = field(default_factory=dict)
    baseline: object = None  # diagnose.baseline.Baseline: the old side is a saved run's (no old manifest, no old model)

    @property
    def old_version(self) -> str:
        return self.baseline.version if self.baseline else self.manifests["old"].version


def _version_evidence(manifest: Manifest, loaded, requests_path: Path) -> dict:
    return {
        "status": "ok",
        "source": str(manifest.path),
        "format": manifest.format,
        "artifact": manifest.artifact,
        "artifact_sha256": manifest.artifact_sha256(),
        "param_count": loaded.param_count,
        "weight_bytes": loaded.weight_bytes,
        "preprocess": manifest.preprocess,
        "preprocess_sha256": manifest.preprocess_sha256(),
        "requests": str(requests_path),
        "requests_sha256": digest(requests_path),
        "serving": manifest.to_dict()["serving"],
        "replayed_on": loaded.manifest.serving.device,  # "cpu" for a cuda version on a machine without a GPU
        "slo": dict(manifest.slo),
        "deployment": manifest.deployment,
    }


def signals(plan: Plan, folder: RunFolder) -> None:
    """Recorded signals (--signals DIR), else the live cluster and Prometheus. First, so that a bad signals file
    fails before minutes of benchmark."""
    from diagnose.signals import collect_live, collect_offline, copy_into

    manifest = plan.manifests["new"]
    if plan.opts.signals is not None:
        found = collect_offline(copy_into(folder.signals_dir, plan.opts.signals), manifest.deployment,
                                plan.opts.latency_metric)
    else:  # the sampled sources (the GPU) are sampled live around the benchmark instead
        found = collect_live(manifest, folder.signals_dir, plan.opts.prometheus, plan.opts.latency_metric)
    for source, evidence in found.items():
        folder.write_evidence(source, evidence)


def load(plan: Plan, folder: RunFolder) -> None:
    """Both versions loaded; what they are, what they replay and where they run, as evidence."""
    from collectors import environment
    from profilers.runners import load_version

    with status("Loading both versions" if len(plan.manifests) > 1 else "Loading the new version"):
        plan.loaded.update({side: load_version(m) for side, m in plan.manifests.items()})
    machine = environment.capture()
    versions = {side: _version_evidence(m, plan.loaded[side], plan.request_paths[side]) for side, m in plan.manifests.items()}
    requests = {side: describe(plan.requests[side]) | {"path": str(plan.request_paths[side])} for side in plan.manifests}
    envs = {side: environment.for_sample_set(machine, plan.loaded[side].manifest.serving) for side in plan.manifests}
    if plan.baseline:  # the old side as the baseline run recorded it; refused at once if measured elsewhere
        from diagnose.baseline import check_environment

        check_environment(plan.baseline, envs["new"], plan.opts.allow_env_mismatch)
        versions["old"] = plan.baseline.versions | {"baseline": str(plan.baseline.folder.path)}
        requests["old"] = plan.baseline.requests
        envs["old"] = plan.baseline.environment
    folder.write_evidence("versions", {side: versions[side] for side in SIDES} | {"status": "ok"})
    folder.write_evidence("requests", {"status": "ok", "identical": plan.identical,
                                       **{side: requests[side] for side in SIDES}})
    folder.write_evidence("environment", {"status": "ok", **{side: envs[side] for side in SIDES}})


def drift(plan: Plan, folder: RunFolder) -> None:
    """Schema and distribution drift of the two request logs, and each request's size features. The logs are read
    as `diagnose drift` reads them (nulls kept, lists in Arrow), so drift sees one layout from both commands."""
    from diagnose.core.feast_logs import rows_by_side
    from diagnose.core.requestlog import read_requests
    from diagnose.drift_stage import expected_schema, record_drift

    if "old" not in plan.request_paths:
        folder.write_evidence("drift", {"status": "unavailable", "reason": "the baseline run's request log "
                                        f"{plan.baseline.versions.get('requests')} is not here (or changed)"})
        return
    with status("Comparing the request logs (schema, drift, request sizes)"):
        rows = rows_by_side(plan.manifests)  # the same rows of a Feast log folder as the replay's
        frames = {side: read_requests(path, rows.get(side)) for side, path in plan.request_paths.items()}
        expected = expected_schema(plan.manifests["new"], plan.loaded["new"].input_spec, list(frames["new"].columns))
        record_drift(folder, frames["old"], frames["new"], expected)


def verdict_settled(frame: pd.DataFrame, limits: stats.Thresholds = stats.WITHIN_RUN) -> bool:
    """Early-stop check on the samples so far: are the old-vs-new verdicts of the median and of the p99 settled?
    The p99 needs at least `stats.MIN_TAIL_SAMPLES` a side, so a compare never stops on the median alone."""
    old, new = frame[frame["cell"] == OO], frame[frame["cell"] == NN]
    if min(len(old), len(new)) < stats.MIN_TAIL_SAMPLES:
        return False
    delta = stats.relative_change(old["latency_ms"].to_numpy(), new["latency_ms"].to_numpy(), n_boot=500,
                                  blocks=(old["round"].to_numpy(), new["round"].to_numpy()))
    n = min(len(old), len(new))
    return (stats.settled(delta, noise_floor_pct=limits.noise_floor_pct, equivalence_pct=limits.equivalence_pct)
            and stats.tail_settled(delta, n, noise_floor_pct=limits.tail_noise_floor_pct,
                                   equivalence_pct=limits.tail_equivalence_pct))


def benchmark(plan: Plan, folder: RunFolder) -> None:
    """The interleaved benchmark of the 2x2 cells, with this process's cgroup, the machine's other CPU work (and,
    live, the GPU) sampled around it."""
    from collectors.cgroup import CgroupReader, CgroupSampler
    from collectors.host_cpu import HostCpuSampler
    from diagnose.core.evidence import collect_safely
    from diagnose.signals import start_samplers, stop_samplers
    from profilers.harness import SAMPLE_DTYPES, BenchmarkPlan, Cell, run_benchmark

    opts = plan.opts
    if not opts.benchmark:  # an empty sample set, so the folder reads as every other one
        folder.write_samples(pd.DataFrame({c: pd.Series(dtype=t) for c, t in SAMPLE_DTYPES.items()}))
        folder.write_evidence("benchmark", {"status": "skipped", "reason": "--no-benchmark: the versions were not "
                                            "replayed here; the diagnosis rests on the signals and request logs"})
        return
    cells = [Cell("old", "old"), Cell("new", "new")] if not plan.baseline else [Cell("new", "new")]
    if opts.factorial and not plan.identical and not plan.baseline:
        cells += [Cell("new", "old"), Cell("old", "new")]
    bench = BenchmarkPlan(cells=tuple(cells), budget_s=opts.budget_s, seed=opts.seed)
    settled = verdict_settled
    if plan.baseline:
        from diagnose.baseline import settled_against

        limits = stats.Thresholds.for_run(between_runs=True)
        settled = settled_against(plan.baseline, lambda frame: verdict_settled(frame, limits))
    cgroup = CgroupSampler(CgroupReader())
    cgroup.start()  # the cgroup this process runs in: was the benchmark itself CPU-throttled?
    host = HostCpuSampler()
    host.start()  # and did other processes share the cores with it?
    samplers = start_samplers() if opts.signals is None else {}  # recorded signals take the place of live ones
    with Bar(opts.budget_s, f"Benchmarking {len(cells)} cells") as bar:
        result = run_benchmark(bench, plan.loaded, plan.requests, settled=settled, on_progress=bar.update_to)
    folder.write_evidence("cgroup", collect_safely(cgroup))
    folder.write_evidence("host", collect_safely(host))
    for source, evidence in stop_samplers(samplers, folder.signals_dir).items():
        folder.write_evidence(source, evidence)
    for key, side in ((OO, "old"), (NN, "new")):
        if key in result.unavailable:
            raise UserError(f"version {plan.manifests[side].version} cannot run these requests: {result.unavailable[key]}",
                            plan.request_paths[side])
    samples, unavailable = result.samples, dict(result.unavailable)
    if plan.baseline:  # the old side's cell is the baseline run's samples
        samples = pd.concat([plan.baseline.samples.astype(samples.dtypes.to_dict()), samples], ignore_index=True)
        unavailable |= plan.baseline.unavailable()
        cells = [Cell("old", "old"), *cells]
    folder.write_samples(samples)
    folder.write_evidence("benchmark", {
        "status": "ok", "cells": [c.key for c in cells], "unavailable": unavailable,
        "rounds": result.rounds, "elapsed_s": round(result.elapsed_s, 3), "stopped": result.stopped,
        "budget_s": opts.budget_s, "warmup_batches": bench.warmup_batches, "timer": "time.perf_counter_ns",
        "block": result.block, "settle_ms": result.settle_ms,
        # a version that refused its inputs in the logged float dtype was fed them cast, as its server must cast
        "input_casts": {side: v.input_cast for side, v in plan.loaded.items() if v.input_cast},
        "capped_batches": result.capped_batches,
    })


def profile(plan: Plan, folder: RunFolder) -> None:
    """torch.profiler traces of both versions on the same requests, diffed op by op (after the benchmark, so the
    profiler's overhead never touches a latency figure)."""
    if not (plan.opts.profile and plan.opts.benchmark):  # the profile is a replay too
        return
    if plan.baseline:
        folder.write_evidence("profile", {"status": "unavailable", "reason": "compared against a baseline run: its "
                                          "model was not loaded here, so there is no old trace to diff"})
        return
    from profilers.profiling import profile_pair

    with status("Profiling both versions on the same requests"):
        evidence = profile_pair(folder.profile_dir, plan.loaded, plan.requests["old"], relative_to=folder.path)
        if "full" in evidence:
            folder.write_op_diff(evidence.pop("full"))
        folder.write_evidence("profile", evidence)


def verify(plan: Plan, folder: RunFolder) -> None:
    """Optimized and config variants of the new version, built and timed: when asked, or by default when the
    statistics say the model side leads a settled regression (decided from the samples, before any ranking)."""
    from diagnose.analysis import outcome
    from diagnose.verify import COMPARE_VARIANTS, measure_variants, model_side_leads

    opts = plan.opts
    if opts.verify is False or not opts.benchmark or plan.baseline:  # the variants are timed beside the old model
        return
    if opts.verify is None:
        result = outcome(folder)
        if not model_side_leads(result.verdict, result.attribution.model):
            return
    budget = opts.verify_budget_s or min(12.0, opts.budget_s)
    measure_variants(folder, plan.loaded["new"], plan.requests["new"], list(opts.variants or COMPARE_VARIANTS), budget,
                     opts.seed, old=plan.loaded["old"], old_requests=plan.requests["old"])


# The compare, in order. Signals come first (a bad signals file fails at once); load fills `plan.loaded`.
STAGES = (signals, load, drift, benchmark, profile, verify)
