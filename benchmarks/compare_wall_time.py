"""Whole-process wall time of `diagnose compare --old v1 --new v2` on the default model (goal: <= 90 s).

Each run is a fresh process, as a user types it: interpreter start, imports, model loading, the 4-cell
factorial benchmark (default budget, early stop), analysis and the report files. With --cold, the first run
uses an empty cache, so it also builds the embedded registry's artifacts (a one-time cost).

Usage: python benchmarks/compare_wall_time.py [--runs 3] [--cold] [-- extra compare options]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(extra: list[str], env: dict, workdir: Path) -> tuple[float, dict]:
    out = workdir / f"run-{time.time_ns()}"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "diagnose", "compare", "--old", "v1", "--new", "v2", "--json",
                             "--out", str(out), *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"compare failed ({result.returncode}): {result.stderr[-2000:]}")
    return wall, json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="first run on an empty cache (includes building)")
    parser.add_argument("extra", nargs="*", help="extra options for diagnose compare")
    args = parser.parse_args()
    env = {**os.environ, "DIAGNOSE_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows = []
        if args.cold:
            wall, report = run_once(args.extra, {**env, "DIAGNOSE_CACHE": str(workdir / "cache")}, workdir)
            rows.append(("cold cache (builds artifacts)", wall, report))
        for i in range(args.runs):
            wall, report = run_once(args.extra, env, workdir)
            rows.append((f"warm run {i + 1}", wall, report))
    print("| run | wall s | verdict | p50 change | rounds | measured s | stopped |")
    print("|---|---:|---|---:|---:|---:|---|")
    for name, wall, report in rows:
        run = report["run"]
        print(f"| {name} | {wall:.1f} | {report['verdict']} | {report['latency']['delta']['p50_pct']:+.1f}% "
              f"| {run['rounds']} | {run['elapsed_s']:.1f} | {run['stopped']} |")
    warm = [wall for name, wall, _ in rows if name.startswith("warm")]
    print(f"\nwarm runs: max {max(warm):.1f} s (goal <= 90 s), on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
