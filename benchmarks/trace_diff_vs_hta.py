"""Parse and diff HTA's real trace_diff pair: diagnose diff-traces beside HTA's TraceDiff.compare_traces.

Both run as whole processes on the same pair (A100 control, about 109k events; V100 test, about 105k), in
alternation, several times; each process's wall time and peak RSS (from wait4) are printed with the
ratios. Goal: diagnose at least 3x faster and at most a third of HTA's peak memory.

HTA is installed for this benchmark only, in its own virtual environment that sees this one's packages:
    python -m venv --system-site-packages /tmp/htavenv
    /tmp/htavenv/bin/pip install --no-deps HolisticTraceAnalysis && /tmp/htavenv/bin/pip install plotly pydot psutil
Usage: python benchmarks/trace_diff_vs_hta.py [--hta-python /tmp/htavenv/bin/python] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "traces" / "hta" / "trace_diff"
HTA_CODE = "import sys\nfrom hta.trace_diff import TraceDiff\nTraceDiff.compare_traces(sys.argv[1], sys.argv[2])\n"


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hta-python", default=os.environ.get("HTA_PYTHON", "/tmp/htavenv/bin/python"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    control, test = TRACES / "control", TRACES / "test"
    if not control.is_dir():
        raise SystemExit(f"{TRACES} not found: run from a checkout beside ../shared")
    ours = [sys.executable, "-m", "diagnose", "diff-traces", str(control), str(test), "--json"]
    hta = [args.hta_python, "-c", HTA_CODE, str(control), str(test)]
    results: dict[str, list[tuple[float, float]]] = {"diagnose diff-traces": [], "HTA TraceDiff.compare_traces": []}
    for _ in range(args.repeat):
        results["diagnose diff-traces"].append(measure(ours))
        results["HTA TraceDiff.compare_traces"].append(measure(hta))
    print(f"pair: {control.name} vs {test.name} ({TRACES}), {args.repeat} alternating runs each, {os.cpu_count()} cores\n")
    print("| tool | wall s (median) | peak RSS MiB (median) |")
    print("|---|---:|---:|")
    medians = {}
    for name, runs in results.items():
        walls, rss = sorted(w for w, _ in runs), sorted(m for _, m in runs)
        medians[name] = (walls[len(walls) // 2], rss[len(rss) // 2])
        print(f"| {name} | {medians[name][0]:.2f} | {medians[name][1]:.0f} |")
    (ow, om), (hw, hm) = medians["diagnose diff-traces"], medians["HTA TraceDiff.compare_traces"]
    print(f"\ndiagnose is {hw / ow:.1f}x faster (goal >= 3x) and uses {om / hm:.2f} of HTA's peak memory (goal <= 0.33)")


if __name__ == "__main__":
    main()
