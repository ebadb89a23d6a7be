"""junit.xml: the CI gate as JUnit XML, the format GitHub Actions (test reporters), GitLab CI (`artifacts:reports:
junit`) and Jenkins (`junit` step) read. One test case per gated statistic: a failing check is a <failure> whose
message is the check's line and whose text adds the verdict and the top causes; an inconclusive one (it passes unless
--strict) is <skipped> with why, so the CI page shows it was not judged. It validates against the Jenkins JUnit
schema (tests/schemas/junit-10.xsd). A run without a benchmark has no gate: one skipped case says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from reports.sections import split_causes

if TYPE_CHECKING:
    from diagnose.core.report import Report

TOP_CAUSES = 3


def causes_text(report: Report, top: int = TOP_CAUSES) -> list[str]:
    """The top likely causes, one line each with the first piece of evidence and the first next step."""
    likely, _ = split_causes(report.hypotheses)
    lines = []
    for h in likely[:top]:
        lines.append(f"{h.score:.2f} {h.cause}: {h.summary}")
        lines += [f"    because: {e}" for e in h.evidence[:2]]
        lines += [f"    next: {s}" for s in h.next_steps[:1]]
    return lines or ["no likely cause found in the evidence"]


def _clean(text: str) -> str:
    """XML 1.0 forbids most control characters even escaped; a hostile op or model name must not break the file."""
    return "".join(c for c in str(text) if c in "\t\n\r" or ord(c) >= 0x20)


def render(report: Report) -> str:
    gate = report.gate
    suite_name = f"diagnose latency gate: {report.model} {report.old} -> {report.new}"
    classname = f"diagnose.latency.{report.model}"
    checks = gate.checks if gate else ()
    failures = sum(1 for c in checks if c.status == "fail" or (gate.strict and c.status == "inconclusive"))
    skipped = sum(1 for c in checks if c.status == "inconclusive" and not gate.strict) + (0 if gate else 1)
    elapsed = f"{report.run.elapsed_s or 0.0:.3f}"
    root = ET.Element("testsuites", name="diagnose", tests=str(len(checks) or 1), failures=str(failures), errors="0",
                      time=elapsed)
    suite = ET.SubElement(root, "testsuite", name=_clean(suite_name), tests=str(len(checks) or 1),
                          failures=str(failures), errors="0", skipped=str(skipped), time=elapsed,
                          timestamp=(report.run.started_at or "").rstrip("Z") or "1970-01-01T00:00:00")
    props = ET.SubElement(suite, "properties")
    for name, value in (("verdict", report.verdict), ("regression_kind", report.regression_kind or ""),
                        ("gate", gate.status if gate else "none"), ("run_dir", report.run.dir),
                        ("summary", report.summary)):
        ET.SubElement(props, "property", name=name, value=_clean(value))
    detail = "\n".join([report.summary, "", "likely causes:", *causes_text(report), "", f"run folder: {report.run.dir}"])
    if not checks:
        case = ET.SubElement(suite, "testcase", name="latency", classname=_clean(classname), time="0")
        ET.SubElement(case, "skipped", message="not measured: the compare replayed nothing (--no-benchmark)")
    for check in checks:
        case = ET.SubElement(suite, "testcase", name=f"{check.metric} regression <= {check.max_pct:g}%",
                             classname=_clean(classname), time=elapsed)
        if check.status == "fail" or (gate.strict and check.status == "inconclusive"):
            failure = ET.SubElement(case, "failure", message=_clean(check.message), type="LatencyRegression")
            failure.text = _clean(detail)
        elif check.status == "inconclusive":
            ET.SubElement(case, "skipped", message=_clean(f"inconclusive: {check.message}"))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _clean(check.message)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
