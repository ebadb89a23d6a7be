"""The Report: what one compare found, typed, immutable, and the only thing renderers read.

`diagnose.analysis` builds it from a run folder; `to_dict()` is report.json (schema:
diagnose/schemas/report.schema.json, docs/report.md). As in pyperf and torch.utils.benchmark, a measurement
keeps its raw samples (`Measurement.samples`) and derives its statistics from them; the samples stay out of
report.json (they are in the run folder's samples.parquet). Every type is a frozen dataclass: a renderer, a
rule or the app can read a Report but never change what the next reader sees. Tables that are rows of
figures (profile tables, drift features, fix variants) stay JSON-shaped rows inside their section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from diagnose.core.stats import Delta, SideStats, summarize

# 2.0: `collectors` -> `evidence_sources`, profile `signals` -> `totals`, `rule_errors`; 2.1: `incomplete`;
# 2.2: `regression_kind`, `latency.tail`, verdict `not_measured` (latency and attribution null);
# 2.3: `latency.production`, `lab_verdict`, `verdict_source`, hypotheses' `missing`, `unjudged` (latency's lab keys
# null when only production measured it); 2.4: `gate`, `timelines`, `environment`, `reproduce`, `baseline`, drift
# `distributions`
SCHEMA_VERSION = "2.4"
# not_measured: the compare ran without a benchmark (--no-benchmark): no latency, no attribution, causes from signals
VERDICTS = ("regression", "improvement", "no_regression", "inconclusive", "not_measured")


@dataclass(frozen=True)
class Measurement:
    """One side's latency samples (ms per batch) and the statistics derived from them."""

    samples: np.ndarray = field(repr=False, compare=False)

    @cached_property
    def stats(self) -> SideStats:
        return summarize(self.samples)

    def to_dict(self) -> dict:
        return self.stats.to_dict()


@dataclass(frozen=True)
class Tail:
    """The p99 judged on its own (diagnose.core.stats.tail_verdict): whether it moved, and whether it settled."""

    verdict: str  # "regression" | "improvement" | "no_regression" | "unsettled"
    median_verdict: str  # the median's verdict, before the tail's was joined to it
    samples: int  # the smaller side's count
    min_samples: int
    noise_floor_pct: float
    equivalence_pct: float

    @property
    def settled(self) -> bool:
        return self.verdict != "unsettled"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "settled": self.settled, "median_verdict": self.median_verdict,
                "samples": self.samples, "min_samples": self.min_samples, "noise_floor_pct": self.noise_floor_pct,
                "equivalence_pct": self.equivalence_pct}


@dataclass(frozen=True)
class Latency:
    old: Measurement
    new: Measurement
    delta: Delta
    noise_floor_pct: float
    alpha: float
    tail: Tail | None = None
    unit: str = "ms"

    def to_dict(self) -> dict:
        return {"unit": self.unit, "old": self.old.to_dict(), "new": self.new.to_dict(), "delta": self.delta.to_dict(),
                "noise_floor_pct": self.noise_floor_pct, "alpha": self.alpha, "tail": self.tail and self.tail.to_dict()}


def _ms(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


@dataclass(frozen=True)
class Production:
    """Production's latency across the deploy, from the serving system's own metrics (evidence/prometheus.json's
    `latency`): the headline statistic before and after, its change with a CI, the verdict it gives on its own,
    where it jumped, and the queue/compute parts where the server splits them."""

    source: str  # the evidence source: "prometheus"
    server: str | None  # the serving preset ("triton", "kserve", ...; "user" for --latency-metric)
    server_label: str | None
    metric: str
    statistic: str  # "p99" | "p50" (quantiles) | "average" (counters only)
    before_ms: float
    after_ms: float
    change_pct: float
    ci_pct: tuple[float, float]
    verdict: str  # stats.production_verdict: regression | improvement | no_regression | inconclusive
    deployed_at: str | None
    windows: dict
    change_point: dict | None
    parts: dict  # role ("queue", "compute", ...) -> {metric, statistic, before, after}
    requests: dict

    def describe(self) -> str:
        """"production p99 12.1 -> 30.5 ms (+152%, 95% CI +140% .. +160%) from Triton's
        nv_inference_request_duration_us (queue 1 -> 19 ms, compute 11 -> 11.2 ms)"."""
        what = "average latency" if self.statistic == "average" else self.statistic
        who = f"{self.server_label}'s " if self.server_label and self.server not in ("user", "discovered") else ""
        lo, hi = self.ci_pct
        line = (f"production {what} {_ms(self.before_ms)} -> {_ms(self.after_ms)} ms ({self.change_pct:+.0f}%, 95% CI "
                f"{lo:+.0f}% .. {hi:+.0f}%) from {who}{self.metric}")
        parts = [f"{role} {_ms(part['before'])} -> {_ms(part['after'])} ms" for role, part in self.parts.items()
                 if part.get("before") is not None and part.get("after") is not None]
        return line + (f" ({', '.join(parts)})" if parts else "")

    def grew(self) -> str | None:
        """Which part grew where the server splits them: "queue" (compute steady: capacity or contention),
        "compute" (the model, its runtime or the machine under it), "both", or None."""
        if "queue" not in self.parts or "compute" not in self.parts:
            return None
        # a part grew when it rose by a fifth and carries a tenth of the headline's rise at least: a queue going
        # from 0.9 to 1.2 ms beside a compute time that doubled is no queue growth
        total = self.after_ms - self.before_ms if self.after_ms is not None and self.before_ms is not None else 0.0
        floor = max(0.1, 0.1 * total)

        def up(part: dict) -> bool:
            before, after = part.get("before"), part.get("after")
            return before is not None and after is not None and after > before * 1.2 and after - before > floor

        queue, compute = up(self.parts["queue"]), up(self.parts["compute"])
        return "both" if queue and compute else "queue" if queue else "compute" if compute else None

    def to_dict(self) -> dict:
        return {"source": self.source, "server": self.server, "server_label": self.server_label,
                "metric": self.metric, "statistic": self.statistic, "before_ms": self.before_ms,
                "after_ms": self.after_ms, "change_pct": self.change_pct, "ci_pct": list(self.ci_pct),
                "verdict": self.verdict, "deployed_at": self.deployed_at, "windows": self.windows,
                "change_point": self.change_point, "parts": self.parts, "requests": self.requests}


@dataclass(frozen=True)
class Effect:
    """One term of the factorial: its size, CI, and share of the whole change."""

    effect_ms: float
    ci_ms: tuple[float, float]
    effect_pct: float | None
    share: float | None
    significant: bool

    @classmethod
    def from_dict(cls, d: dict | None) -> Effect | None:
        if not d:
            return None
        return cls(d["effect_ms"], tuple(d["ci_ms"]), d.get("effect_pct"), d.get("share"), bool(d["significant"]))

    def to_dict(self) -> dict:
        return {"effect_ms": self.effect_ms, "ci_ms": list(self.ci_ms), "effect_pct": self.effect_pct,
                "share": self.share, "significant": self.significant}


@dataclass(frozen=True)
class Attribution:
    """The change split between model and inputs (2x2 factorial), with the cells that could not run."""

    method: str
    cells: dict
    unavailable: dict
    model: Effect | None
    input: Effect | None
    interaction: Effect | None
    note: str = ""
    total_ms: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Attribution:
        return cls(method=d["method"], cells=dict(d.get("cells") or {}), unavailable=dict(d.get("unavailable") or {}),
                   model=Effect.from_dict(d.get("model")), input=Effect.from_dict(d.get("input")),
                   interaction=Effect.from_dict(d.get("interaction")), note=d.get("note") or "", total_ms=d.get("total_ms"))

    def effect(self, side: str) -> Effect | None:
        return {"model": self.model, "input": self.input, "interaction": self.interaction}[side]

    def to_dict(self) -> dict:
        out = {"method": self.method, "cells": self.cells, "unavailable": self.unavailable,
               "model": self.model and self.model.to_dict(), "input": self.input and self.input.to_dict(),
               "interaction": self.interaction and self.interaction.to_dict(), "note": self.note}
        if self.total_ms is not None:
            out["total_ms"] = self.total_ms
        return out


@dataclass(frozen=True)
class CellSummary:
    """One benchmark cell (a model on a request set) in a few medians."""

    n: int
    p50_ms: float
    preprocess_p50_ms: float
    infer_p50_ms: float
    input_elements_mean: float
    input_signature: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Hypothesis:
    """One cause, scored in [0, 1], with the evidence lines behind it: the uniform result of every rule."""

    cause: str
    score: float
    summary: str
    evidence: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # evidence that would confirm or refute it but is absent (its score is lower)

    def __post_init__(self):
        for name in ("evidence", "next_steps", "missing"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict:
        return {"cause": self.cause, "score": self.score, "summary": self.summary, "evidence": list(self.evidence),
                "next_steps": list(self.next_steps), "missing": list(self.missing)}


@dataclass(frozen=True)
class RuleError:
    """A cause rule that raised: recorded on the report, as a failing collector is, never a crash."""

    rule: str
    causes: tuple[str, ...]
    error: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "causes": list(self.causes), "error": self.error}


@dataclass(frozen=True)
class ProfileSection:
    """The trace diff's part of the report: plain-words findings, totals, the top rows of each table."""

    findings: tuple[str, ...]
    totals: dict
    tables: dict
    traces: dict
    logdir: str

    def to_dict(self) -> dict:
        return {"findings": list(self.findings), "totals": self.totals, "tables": self.tables, "traces": self.traces,
                "logdir": self.logdir}


@dataclass(frozen=True)
class DriftSection:
    """Schema changes, drifted features, and how much of the latency change the input shift explains."""

    identical: bool | None
    schema_changes: tuple[dict, ...]
    expected_schema: tuple[dict, ...]
    drifted: tuple[dict, ...]
    features_tested: int
    settings: dict | None
    latency_tie: dict
    # {feature, drift, quantiles: {p, old, new}} or {feature, drift, categories: {values, old, new}}: the drifted
    # features first, then the largest statistics, for plots that overlay the two sides
    distributions: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {"identical": self.identical, "schema_changes": list(self.schema_changes),
                "expected_schema": list(self.expected_schema), "drifted": list(self.drifted),
                "features_tested": self.features_tested, "settings": self.settings, "latency_tie": self.latency_tie,
                "distributions": list(self.distributions)}


@dataclass(frozen=True)
class FixSection:
    """The verify stage's outcome: each variant's latency and accuracy, the Pareto front, the verdict."""

    status: str  # confirmed | partial | none
    verdict: str
    best: str | None
    version: str
    old: str | None
    thresholds: dict
    variants: tuple[dict, ...]
    not_measured: tuple[dict, ...]
    old_p50_ms: float | None = None
    rounds: int | None = None
    accuracy_requests: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> FixSection:
        return cls(status=d["status"], verdict=d["verdict"], best=d.get("best"), version=d["version"], old=d.get("old"),
                   thresholds=d["thresholds"], variants=tuple(d["variants"]), not_measured=tuple(d["not_measured"]),
                   old_p50_ms=d.get("old_p50_ms"), rounds=d.get("rounds"), accuracy_requests=d.get("accuracy_requests"))

    def to_dict(self) -> dict:
        return {"version": self.version, "old": self.old, "thresholds": self.thresholds, "variants": list(self.variants),
                "not_measured": list(self.not_measured), "old_p50_ms": self.old_p50_ms, "rounds": self.rounds,
                "accuracy_requests": self.accuracy_requests, "status": self.status, "best": self.best,
                "verdict": self.verdict}


@dataclass(frozen=True)
class SourceStatus:
    """How one evidence source fared: ok, unavailable (with why) or error (with the first line of it)."""

    status: str
    reason: str | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.source:
            out["source"] = self.source
        return out


@dataclass(frozen=True)
class Timeline:
    """One production signal over time, around the deploy (for a plot): `t` in unix seconds, a value per point
    (None where nothing was recorded), and the limit the signal runs up against, if any (the memory limit)."""

    # latency_p99_ms, latency_p50_ms, latency_avg_ms, throttled_ratio, memory_working_set_bytes, restarts, gpu_sm_clock_mhz
    name: str
    label: str
    unit: str
    t: tuple[float, ...]
    values: tuple[float | None, ...]
    limit: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "unit": self.unit, "t": list(self.t), "values": list(self.values),
                "limit": self.limit}


@dataclass(frozen=True)
class Timelines:
    """Production's signals across the deploy, with the deploy time and where the latency jumped."""

    source: str
    deployed_at_s: float | None
    change_point_s: float | None
    series: tuple[Timeline, ...]

    def to_dict(self) -> dict:
        return {"source": self.source, "deployed_at_s": self.deployed_at_s, "change_point_s": self.change_point_s,
                "series": [s.to_dict() for s in self.series]}


@dataclass(frozen=True)
class GateCheck:
    """One gated statistic (p50, p90 or p99): its change, and whether it breaks the budget (diagnose.gate)."""

    metric: str
    max_pct: float
    change_pct: float | None
    ci_pct: tuple[float, float] | None
    significant: bool  # the change is a regression the statistics stand behind (the verdict's own tests)
    status: str  # pass | fail | inconclusive
    message: str

    def to_dict(self) -> dict:
        return {"metric": self.metric, "max_pct": self.max_pct, "change_pct": self.change_pct,
                "ci_pct": self.ci_pct and list(self.ci_pct), "significant": self.significant, "status": self.status,
                "message": self.message}


@dataclass(frozen=True)
class Gate:
    """The CI gate on this run: the latency budgets, each statistic's check, and the gate's status. A run that
    `diagnose ci` did not make is gated on the default budgets (`source` "default"), which is what CI would say."""

    source: str  # "ci" | "default"
    strict: bool
    checks: tuple[GateCheck, ...]
    status: str  # fail when a check fails; inconclusive when one is (a failure with --strict); else pass

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "fail" else 0

    def to_dict(self) -> dict:
        return {"source": self.source, "strict": self.strict, "status": self.status,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class Slo:
    p99_ms: float | None
    old_within: bool | None
    new_within: bool | None

    def to_dict(self) -> dict:
        return {"p99_ms": self.p99_ms, "old_within": self.old_within, "new_within": self.new_within}


@dataclass(frozen=True)
class RunInfo:
    dir: str
    started_at: str | None
    budget_s: float | None
    rounds: int | None
    elapsed_s: float | None
    stopped: str | None
    registry: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Report:
    """Everything one compare found; `to_dict()` is report.json."""

    tool: dict
    model: str
    old: str
    new: str
    verdict: str
    summary: str
    latency: Latency | None  # None only with verdict not_measured
    attribution: Attribution | None
    cells: dict[str, CellSummary]
    hypotheses: tuple[Hypothesis, ...]
    profile: ProfileSection | None
    drift: DriftSection | None
    fix: FixSection | None
    evidence_sources: dict[str, SourceStatus]
    slo: Slo
    warnings: tuple[str, ...]
    run: RunInfo
    rule_errors: tuple[RuleError, ...] = ()
    incomplete: str | None = None  # the INCOMPLETE marker's reason: the run was interrupted and evidence may be missing
    regression_kind: str | None = None  # "median" (p50 moved) | "tail" (only p99 moved) | None: no regression
    production: Production | None = None  # production latency across the deploy, when signals cover it
    lab_verdict: str | None = None  # the benchmark's own verdict (not_measured without one)
    verdict_source: str | None = None  # "lab" | "production" | "lab and production": what carries the verdict
    unjudged: tuple[dict, ...] = ()  # {cause, missing}: causes no rule could judge for want of evidence
    gate: Gate | None = None  # the CI gate's verdict on this run (None: not measured)
    timelines: Timelines | None = None  # production's signals over time, for plots
    environment: dict = field(default_factory=dict)  # side -> the sample set's environment (CPU, cores, libraries)
    reproduce: tuple[str, ...] = ()  # shell commands that remake this report and rerun this comparison
    baseline: dict | None = None  # {dir, version, started_at}: the old side's samples came from this saved run
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "tool": self.tool,
            "model": self.model,
            "old": self.old,
            "new": self.new,
            "verdict": self.verdict,
            "regression_kind": self.regression_kind,
            "summary": self.summary,
            "lab_verdict": self.lab_verdict,
            "verdict_source": self.verdict_source,
            "latency": self._latency_dict(),
            "attribution": self.attribution and self.attribution.to_dict(),
            "cells": {key: cell.to_dict() for key, cell in self.cells.items()},
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "unjudged": list(self.unjudged),
            "profile": self.profile and self.profile.to_dict(),
            "drift": self.drift and self.drift.to_dict(),
            "fix": self.fix and self.fix.to_dict(),
            "evidence_sources": {name: s.to_dict() for name, s in self.evidence_sources.items()},
            "rule_errors": [e.to_dict() for e in self.rule_errors],
            "slo": self.slo.to_dict(),
            "warnings": list(self.warnings),
            "run": self.run.to_dict(),
            "incomplete": self.incomplete,
            "gate": self.gate and self.gate.to_dict(),
            "timelines": self.timelines and self.timelines.to_dict(),
            "environment": self.environment,
            "reproduce": list(self.reproduce),
            "baseline": self.baseline,
        }

    def _latency_dict(self) -> dict | None:
        """The lab's figures (null when not measured) with production's under `production`."""
        if self.latency is None and self.production is None:
            return None
        out = self.latency.to_dict() if self.latency else {
            "unit": "ms", "old": None, "new": None, "delta": None, "noise_floor_pct": None, "alpha": None, "tail": None}
        out["production"] = self.production and self.production.to_dict()
        return out
