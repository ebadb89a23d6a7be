"""`diagnose ci`: a compare at a CI-sized budget, gated on latency budgets (diagnose.gate), for a build to pass or fail.

Exit codes: 0 within budget (an inconclusive check passes unless --strict, and says so), 1 a significant
regression beyond a budget, 2 an error (bad input, or a failure of the tool itself: CI must never read a crash as a
regression, nor a crash as a pass). The gate settings are recorded in run.json, so `diagnose analyze` and
`diagnose report --format junit` on the run folder give the same gate as the build saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from diagnose.core.report import Report
from diagnose.core.runfolder import write_text


@dataclass(frozen=True)
class CiOptions:
    compare: object  # diagnose.compare.CompareOptions, with `gate` set
    junit: Path | None = None


def gate_text(report: Report) -> list[str]:
    """The gate's lines for the terminal: its status, then each check."""
    gate = report.gate
    if gate is None:
        return ["CI GATE: not measured (nothing was replayed)"]
    lines = [f"CI GATE {gate.status.upper()}: {report.model} {report.new} against {report.old}"]
    lines += [f"  {c.status.upper():<12} {c.message}" for c in gate.checks]
    if gate.status == "inconclusive":
        lines.append("  (an inconclusive check passes the build; --strict fails it)")
    return lines


def run_ci(opts: CiOptions) -> tuple[Report, int, str]:
    """Run the gated compare; returns the report, the exit code and the text to print."""
    from diagnose.compare import run_compare
    from reports import get
    from reports.markdown import ci_summary

    _, report = run_compare(opts.compare)
    if opts.junit is not None:
        write_text(opts.junit, get("junit").render(report))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:  # GitHub Actions shows this Markdown on the run's page; appended, as other steps may write too
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(ci_summary(report) + "\n")
    text = "\n".join(gate_text(report) + ["", get("summary").render(report)]) + "\n"
    return report, report.gate.exit_code if report.gate else 2, text
