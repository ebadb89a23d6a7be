"""One result type for every evidence source (cgroup, NVML, Kubernetes, Prometheus, ...).

Like k8sgpt's analyzers, every source answers with the same shape, so the run folder, report.json's
`collectors` section and the hypotheses read all sources alike, and a source that cannot run on this machine
(no GPU, no cluster) says so with a reason instead of failing the whole diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from diagnose.core.errors import first_line
from diagnose.core.redact import redact_text

STATUSES = ("ok", "unavailable", "error")


@dataclass(frozen=True)
class Evidence:
    """What one source saw; frozen once built (a collector assembles its data first, then makes the Evidence).

    `data` holds the numbers (JSON-able) for machines; `summary` holds plain-words lines that quote those
    numbers for the engineer on call, so no reader has to re-derive a sentence from the data.
    """

    source: str
    status: str
    reason: str = ""
    data: dict = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A typo in a status would silently drop evidence from the report; fail where it is made instead.
        if self.status not in STATUSES:
            raise ValueError(f"Evidence status must be one of {STATUSES}, not {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The evidence-file shape of docs/run-folder.md: `reason` appears only when status is not ok."""
        out: dict = {"status": self.status, "source": self.source}
        if self.status != "ok":
            out["reason"] = self.reason
        out["data"] = self.data
        out["summary"] = list(self.summary)
        return out

    @classmethod
    def unavailable(cls, source: str, reason: str) -> Evidence:
        """The source cannot see anything here (no GPU, no cgroup file, no cluster): expected, not a bug."""
        return cls(source=source, status="unavailable", reason=reason)

    @classmethod
    def error(cls, source: str, exc: BaseException) -> Evidence:
        """The source failed unexpectedly; one line so it fits report.json and the terminal summary."""
        name = type(exc).__name__
        line = redact_text(first_line(exc))  # an error may quote a URL or header with credentials in it
        return cls(source=source, status="error", reason=name if line == name else f"{name}: {line}")


@runtime_checkable
class Collector(Protocol):
    """Anything with a `name` and a `collect()` that returns Evidence."""

    name: str

    def collect(self) -> Evidence: ...


def collect_safely(collector) -> Evidence:
    """Run one collector; a failing source becomes an `error` Evidence and never stops the diagnosis.

    Only `Exception` is caught: Ctrl-C and SystemExit must still interrupt the run (it is then marked
    INCOMPLETE), rather than being recorded as a collector error.
    """
    try:
        source = str(getattr(collector, "name", "") or type(collector).__name__)
    except Exception:  # a broken `name` property must not escape either
        source = type(collector).__name__
    try:
        result = collector.collect()
    except Exception as exc:
        return Evidence.error(source, exc)
    if not isinstance(result, Evidence):
        return Evidence.error(source, TypeError(f"collect() returned {type(result).__name__}, not Evidence"))
    return result
