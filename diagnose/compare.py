"""`diagnose compare`: plan, run the stages into a run folder, then analyze the folder.

Data flows one way: registry -> manifests and request logs (the `Plan`) -> the stages of `diagnose.stages`,
each writing evidence into the run folder -> `analysis.analyze` -> the report files of every registered format
that compare writes. An interrupt (Ctrl-C, SIGTERM) or a failure leaves the folder marked INCOMPLETE with the
reason, never a half-written report.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diagnose.core.errors import UserError, first_line
from diagnose.core.feast_logs import rows_by_side
from diagnose.core.redact import redact_argv
from diagnose.core.report import Report
from diagnose.core.requestlog import identical, load_requests
from diagnose.core.runfolder import SIDES, RunFolder, new_dir
from diagnose.core.times import utc_now
from diagnose.registry import resolve_registry
from diagnose.sources import PrometheusAccess


@dataclass(frozen=True)
class CompareOptions:
    old: str | None  # None only with a baseline (its version is the old side)
    new: str
    model: str | None = None
    registry: str | None = None
    old_requests: Path | None = None
    new_requests: Path | None = None
    budget_s: float = 30.0
    seed: int = 0
    factorial: bool = True
    profile: bool = True
    benchmark: bool = True  # False (--no-benchmark): no lab replay at all; the causes come from signals and logs
    out: Path | None = None
    runs_dir: Path = Path("runs")
    allow_env_mismatch: bool = False
    signals: Path | None = None
    prometheus: PrometheusAccess | None = None  # sources.prometheus_access: the URL and its credentials
    latency_metric: str | None = None  # --latency-metric: wins over the manifest's deployment.latency_metric
    verify: bool | None = None  # None: when the model side leads a settled regression (verify.model_side_leads)
    variants: tuple[str, ...] | None = None  # None: verify.COMPARE_VARIANTS
    verify_budget_s: float | None = None  # None: min(12 s, budget_s)
    argv: tuple[str, ...] = ()  # recorded in run.json redacted (a --prometheus URL may carry a password)
    gate: dict | None = None  # `diagnose ci`: {max_regression: {metric: pct}, strict}, recorded in run.json
    baseline: Path | None = None  # `diagnose ci --baseline RUN_DIR`: the old side's samples come from that run


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


def plan_compare(opts: CompareOptions):
    """Resolve both versions and read their request logs; nothing is measured or written yet."""
    from diagnose.stages import Plan

    kept_formats()  # a bad $DIAGNOSE_RUN_REPORTS fails now, not after the benchmark
    registry = resolve_registry(opts.registry)
    model = opts.model or registry.default_model()
    baseline = None
    if opts.baseline is not None:  # the old side is a saved run's samples: only the new version is loaded
        from diagnose.baseline import load_baseline

        baseline = load_baseline(opts.baseline, model, opts.old)
        manifests = {"new": registry.manifest(model, opts.new)}
        paths = {"new": manifests["new"].requests_or(opts.new_requests, "--new-requests")}
        if baseline.request_log() is not None:
            paths = {"old": baseline.request_log(), **paths}
    else:
        manifests = {"old": registry.manifest(model, opts.old), "new": registry.manifest(model, opts.new)}
        paths = {"old": manifests["old"].requests_or(opts.old_requests, "--old-requests"),
                 "new": manifests["new"].requests_or(opts.new_requests, "--new-requests")}
    rows = rows_by_side(manifests)  # a Feast log folder: each side's rows around the new version's deploy
    requests = {side: load_requests(path, rows.get(side)) for side, path in paths.items()}
    if opts.signals is not None and not Path(opts.signals).is_dir():
        raise UserError("--signals: folder not found", opts.signals)
    return Plan(opts=opts, registry_label=registry.label, model=model, manifests=manifests, request_paths=paths,
                requests=requests, identical="old" in requests and identical(requests["old"], requests["new"]),
                baseline=baseline)


def run_compare(opts: CompareOptions) -> tuple[Path, Report]:
    """Run the whole compare; returns the run folder and the report."""
    from diagnose.stages import STAGES

    plan = plan_compare(opts)
    folder = RunFolder.create(opts.out or new_dir(opts.runs_dir, f"{plan.model}-{plan.old_version}-vs-{opts.new}"))
    try:
        with _sigterm_as_interrupt():
            folder.write_run({
                "command": redact_argv(opts.argv), "registry": plan.registry_label, "model": plan.model,
                "old": plan.old_version, "new": opts.new, "budget_s": opts.budget_s, "seed": opts.seed,
                "factorial": opts.factorial, "allow_env_mismatch": opts.allow_env_mismatch, "verify": opts.verify,
                "started_at": utc_now(),
                **({"gate": opts.gate} if opts.gate else {}),
                **({"baseline": plan.baseline.describe()} if plan.baseline else {}),
            })
            for side in SIDES:
                folder.write_manifest(side, plan.baseline.manifest_text if side not in plan.manifests
                                      else plan.manifests[side].path.read_text())
            for stage in STAGES:
                stage(plan, folder)
            report = write_reports(folder, opts.allow_env_mismatch)
            folder.finish()
            return folder.path, report
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {exc.args[0] if exc.args else 'SIGINT'} at {utc_now()}"
        folder.mark_incomplete(reason)
        raise Interrupted(f"{reason}; partial run folder: {folder.path}") from None
    except UserError as exc:
        folder.mark_incomplete(f"stopped: {exc}")
        raise
    except Exception as exc:
        folder.mark_incomplete(f"internal error: {type(exc).__name__}: {first_line(exc)}")
        raise


def kept_formats() -> list:
    """The report formats every run folder keeps: the registry's, or those $DIAGNOSE_RUN_REPORTS names."""
    from reports import saved_formats

    try:
        return saved_formats(os.environ.get("DIAGNOSE_RUN_REPORTS"))
    except KeyError as exc:
        raise UserError(str(exc.args[0]), key="$DIAGNOSE_RUN_REPORTS") from None


def write_reports(folder: RunFolder, allow_env_mismatch: bool = False) -> Report:
    """Analyze the folder and write every format the compare keeps in it (report.json, report.md, report.html; or
    those $DIAGNOSE_RUN_REPORTS names, e.g. `json,md` where rendering the HTML's plots is not worth a second)."""
    from diagnose.analysis import analyze

    formats = kept_formats()
    report = analyze(folder, allow_env_mismatch=allow_env_mismatch)
    for fmt in formats:
        folder.write(fmt.filename, fmt.render(report))
    return report
