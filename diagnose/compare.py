"""`diagnose compare`: plan, measure, save evidence, then analyze the run folder.

Data flows one way: registry -> manifests and request logs -> benchmark cells -> evidence files in the
run folder -> `analysis.analyze` -> report files. An interrupt (Ctrl-C, SIGTERM) or a failure leaves the
folder marked INCOMPLETE with the reason, never a half-written report.
"""

from __future__ import annotations

import hashlib
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diagnose import stats
from diagnose.attribution import NN, OO
from diagnose.core import runfolder
from diagnose.core.errors import UserError
from diagnose.core.manifest import Manifest
from diagnose.core.progress import Bar, status
from diagnose.core.requestlog import describe, load_requests
from diagnose.registry import resolve_registry


@dataclass(frozen=True)
class CompareOptions:
    old: str
    new: str
    model: str | None = None
    registry: str | None = None
    old_requests: Path | None = None
    new_requests: Path | None = None
    budget_s: float = 30.0
    seed: int = 0
    factorial: bool = True
    profile: bool = True
    out: Path | None = None
    runs_dir: Path = Path("runs")
    allow_env_mismatch: bool = False
    signals: Path | None = None
    prometheus: str | None = None
    verify: bool | None = None  # None: when the model side leads a settled regression (verify.model_side_leads)
    variants: tuple[str, ...] | None = None  # None: verify.COMPARE_VARIANTS
    verify_budget_s: float | None = None  # None: min(12 s, budget_s)
    argv: tuple[str, ...] = ()


class Interrupted(Exception):
    """The run was stopped by a signal; the run folder is marked incomplete."""


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a CI timeout, kill) ends the run the way Ctrl-C does: cleanly, folder marked incomplete."""
    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _requests_path(manifest: Manifest, override: Path | None, flag: str) -> Path:
    if override is not None:
        return Path(override)
    if manifest.requests_path is None:
        raise UserError(f"no requests: set inputs.requests or pass {flag}", manifest.path, "inputs.requests")
    return manifest.requests_path


def _version_evidence(manifest: Manifest, loaded, requests_path: Path) -> dict:
    pre_file = None
    if manifest.preprocess:
        pre_file = manifest.version_dir / (manifest.preprocess.split(":")[0].replace(".", "/") + ".py")
    return {
        "status": "ok",
        "source": str(manifest.path),
        "format": manifest.format,
        "artifact": manifest.artifact,
        "artifact_sha256": manifest.artifact_sha256(),
        "param_count": loaded.param_count,
        "weight_bytes": loaded.weight_bytes,
        "preprocess": manifest.preprocess,
        "preprocess_sha256": _sha256(pre_file) if pre_file else None,
        "requests": str(requests_path),
        "requests_sha256": _sha256(requests_path),
        "serving": manifest.to_dict()["serving"],
        "slo": dict(manifest.slo),
        "deployment": manifest.deployment,
    }


def verdict_settled(frame) -> bool:
    """Early-stop check on the samples so far: is the old-vs-new verdict settled?"""
    old = frame.loc[frame["cell"] == OO, "latency_ms"].to_numpy()
    new = frame.loc[frame["cell"] == NN, "latency_ms"].to_numpy()
    if len(old) < 20 or len(new) < 20:
        return False
    return stats.settled(stats.relative_change(old, new, n_boot=500))


def run_compare(opts: CompareOptions) -> tuple[Path, dict]:
    """Run the whole compare; returns the run folder and the report."""
    registry = resolve_registry(opts.registry)
    model = opts.model or registry.default_model()
    manifests = {"old": registry.manifest(model, opts.old), "new": registry.manifest(model, opts.new)}
    paths = {
        "old": _requests_path(manifests["old"], opts.old_requests, "--old-requests"),
        "new": _requests_path(manifests["new"], opts.new_requests, "--new-requests"),
    }
    requests = {side: load_requests(path) for side, path in paths.items()}
    if opts.signals is not None and not Path(opts.signals).is_dir():
        raise UserError("--signals: folder not found", opts.signals)

    run_dir = opts.out or runfolder.new_run_dir(opts.runs_dir, model, opts.old, opts.new)
    runfolder.start(run_dir)
    try:
        with _sigterm_as_interrupt():
            runfolder.write_json(run_dir / "run.json", {
                "command": list(opts.argv), "registry": registry.label, "model": model,
                "old": opts.old, "new": opts.new, "budget_s": opts.budget_s, "seed": opts.seed,
                "factorial": opts.factorial, "allow_env_mismatch": opts.allow_env_mismatch, "verify": opts.verify,
                "started_at": runfolder.utc_now(),
            })
            for side, manifest in manifests.items():
                (run_dir / "manifests").mkdir(exist_ok=True)
                runfolder.write_text(run_dir / "manifests" / f"{side}.yaml", manifest.path.read_text())
            return _measure_and_report(opts, run_dir, manifests, paths, requests)
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {exc.args[0] if exc.args else 'SIGINT'} at {runfolder.utc_now()}"
        runfolder.mark_incomplete(run_dir, reason)
        raise Interrupted(f"{reason}; partial run folder: {run_dir}") from None
    except UserError as exc:
        runfolder.mark_incomplete(run_dir, f"stopped: {exc}")
        raise
    except Exception as exc:
        runfolder.mark_incomplete(run_dir, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _measure_and_report(opts, run_dir, manifests, paths, requests) -> tuple[Path, dict]:
    from collectors import environment
    from collectors.cgroup import CgroupReader, CgroupSampler
    from collectors.gpu import NvmlSampler
    from diagnose.analysis import analyze
    from diagnose.core.evidence import collect_safely
    from diagnose.drift_stage import expected_schema, record_drift
    from diagnose.verify import COMPARE_VARIANTS, measure_variants, model_side_leads
    from profilers.harness import BenchmarkPlan, Cell, run_benchmark
    from profilers.runners import load_version

    _record_signals(opts, run_dir, manifests["new"])  # first: a bad signals file fails before minutes of benchmark
    with status("Loading both versions"):
        loaded = {side: load_version(m) for side, m in manifests.items()}
    machine = environment.capture()
    evidence = run_dir / "evidence"
    runfolder.write_json(evidence / "versions.json", {
        side: _version_evidence(manifests[side], loaded[side], paths[side]) for side in ("old", "new")
    } | {"status": "ok"})
    identical = _sha256(paths["old"]) == _sha256(paths["new"])
    runfolder.write_json(evidence / "requests.json", {
        "status": "ok", "identical": identical,
        "old": describe(requests["old"]) | {"path": str(paths["old"])},
        "new": describe(requests["new"]) | {"path": str(paths["new"])},
    })
    with status("Comparing the request logs (schema, drift, request sizes)"):
        expected = expected_schema(manifests["new"], loaded["new"].input_spec, list(requests["new"].columns))
        record_drift(run_dir, requests["old"], requests["new"], expected)
    runfolder.write_json(evidence / "environment.json", {
        "status": "ok",
        "old": environment.for_sample_set(machine, manifests["old"].serving),
        "new": environment.for_sample_set(machine, manifests["new"].serving),
    })

    cells = [Cell("old", "old"), Cell("new", "new")]
    if opts.factorial and not identical:
        cells += [Cell("new", "old"), Cell("old", "new")]
    plan = BenchmarkPlan(cells=tuple(cells), budget_s=opts.budget_s, seed=opts.seed)
    sampler = CgroupSampler(CgroupReader())
    sampler.start()  # the cgroup this process runs in: was the benchmark itself CPU-throttled?
    gpu = NvmlSampler() if opts.signals is None else None  # recorded GPU signals take the place of live ones
    if gpu:
        gpu.start()
    with Bar(opts.budget_s, f"Benchmarking {len(cells)} cells") as bar:
        result = run_benchmark(plan, loaded, requests, settled=verdict_settled, on_progress=bar.update_to)
    runfolder.write_json(evidence / "cgroup.json", collect_safely(sampler).to_dict())
    if gpu:
        gpu_evidence = collect_safely(gpu)
        if gpu_evidence.ok:
            gpu.save(run_dir / "signals", stem="nvidia-smi")
        runfolder.write_json(evidence / "gpu.json", gpu_evidence.to_dict())
    for key in (OO, NN):
        if key in result.unavailable:
            side = "old" if key == OO else "new"
            raise UserError(f"version {manifests[side].version} cannot run these requests: {result.unavailable[key]}",
                            paths[side])
    runfolder.write_parquet(run_dir / runfolder.SAMPLES, result.samples)
    runfolder.write_json(evidence / "benchmark.json", {
        "status": "ok", "cells": [c.key for c in cells], "unavailable": result.unavailable,
        "rounds": result.rounds, "elapsed_s": round(result.elapsed_s, 3), "stopped": result.stopped,
        "budget_s": opts.budget_s, "warmup_batches": plan.warmup_batches, "timer": "time.perf_counter_ns",
    })
    if opts.profile:
        from profilers.profiling import profile_pair

        with status("Profiling both versions on the same requests"):
            profile_pair(run_dir, loaded, requests["old"])
    report = analyze(run_dir, allow_env_mismatch=opts.allow_env_mismatch)
    if opts.verify or (opts.verify is None and model_side_leads(report)):
        budget = opts.verify_budget_s or min(12.0, opts.budget_s)
        measure_variants(run_dir, loaded["new"], requests["new"], list(opts.variants or COMPARE_VARIANTS), budget,
                         opts.seed, old=loaded["old"], old_requests=requests["old"])
        report = analyze(run_dir, allow_env_mismatch=opts.allow_env_mismatch)
    write_reports(run_dir, report)
    runfolder.finish(run_dir)
    return run_dir, report


def _record_signals(opts: CompareOptions, run_dir: Path, manifest: Manifest) -> None:
    """Recorded signals (--signals DIR), else the live cluster and Prometheus, become evidence files."""
    from diagnose.signals import collect_live, collect_offline, copy_into

    if opts.signals is not None:
        found = collect_offline(copy_into(run_dir, opts.signals), manifest.deployment)
    else:  # the GPU is sampled live around the benchmark instead
        found = collect_live(manifest, run_dir / "signals", opts.prometheus)
    for source, evidence in found.items():
        runfolder.write_json(run_dir / "evidence" / f"{source}.json", evidence.to_dict())


def write_reports(run_dir: Path, report: dict) -> None:
    from reports import FORMATS

    for fmt in ("json", "markdown"):
        filename, render = FORMATS[fmt]
        runfolder.write_text(run_dir / filename, render(report))
