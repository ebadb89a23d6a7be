"""How accurate the open-loop load generator is, and how fast it can go alone (issue 16).

1. Accuracy: against a v2 server with a fixed 5 ms delay (tests/loadtest_server.py with enough workers that no
   request queues), `profilers.loadgen.run_load` at 1,000 requests/s: its p50 against the truth, which is the 5 ms
   the server sleeps, and against the server's own mean time per request (its Triton-style counters, scraped before
   and after). Goal: the p50 within 0.5 ms of the truth on 2 cores.
2. The generator alone: rising rates against the same server with no delay until the generator's self-check calls
   itself the bottleneck (its send lag p90 over 2 ms) or the achieved rate falls under 95% of the target; the highest
   rate it sustained is printed.
3. The same accuracy run with Debian's `hey` (closed loop, workers x per-worker rate = 1,000 requests/s) and `wrk`
   (closed loop, as fast as its connections go) side by side, where they are installed.

Prints the CPU, its core count and the load average first: the generator and the server share this machine's cores,
so other work moves every figure.

Usage: python benchmarks/loadgen_accuracy.py [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from loadtest_server import running  # noqa: E402
from verdict_rates import cpu_model  # noqa: E402

from collectors.metrics_scrape import metrics_delta, parse_metrics  # noqa: E402
from profilers.loadgen import LoadPlan, Target, run_load  # noqa: E402

BODY = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}'
DELAY_MS = 5.0
GOAL_MS = 0.5
ALONE_RATES = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)


def _scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


def _server_mean_ms(before: dict, after: dict) -> float | None:
    moved = metrics_delta(before, after)
    count = sum(v for k, v in moved.items() if k.startswith("nv_inference_request_success"))
    total_us = sum(v for k, v in moved.items() if k.startswith("nv_inference_request_duration_us"))
    return total_us / count / 1e3 if count else None


def _target(url: str) -> Target:
    return Target("", f"{url}/v2/models/m/infer", "v2", (BODY,))


def accuracy(rate: int, seconds: float) -> dict:
    with running(DELAY_MS, workers=100_000) as url:
        run_load([_target(url)], LoadPlan(rate_rps=min(rate, 200), duration_s=1, warmup_s=0))  # connections, JIT
        before = _scrape(url)
        summary = run_load([_target(url)], LoadPlan(rate_rps=rate, duration_s=seconds, warmup_s=1)).summary()
        server_ms = _server_mean_ms(before, _scrape(url))
        closed = {name: tool(f"{url}/v2/models/m/infer", rate, seconds) for name, tool in (("hey", _hey), ("wrk", _wrk))}
    return {"summary": summary, "server_ms": server_ms, "closed": closed}


def alone(seconds: float) -> tuple[int | None, list[str]]:
    best, lines = None, []
    with running(0.0, workers=100_000) as url:
        for rate in ALONE_RATES:
            summary = run_load([_target(url)], LoadPlan(rate_rps=rate, duration_s=seconds, warmup_s=0.5)).summary()
            generator = summary["generator"]
            kept = summary["achieved_rps"] >= 0.95 * rate and not generator["bottleneck"] and not summary["errors"]
            lines.append(f"  {rate:6d} rps: achieved {summary['achieved_rps']:8.1f}, send lag p90 "
                         f"{generator['lag_p90_ms']:6.2f} ms, p50 {summary['latency_ms']['p50']:6.2f} ms"
                         + ("" if kept else f"  <- {generator.get('reason') or 'errors: ' + str(summary['errors'])}"))
            if not kept:
                break
            best = rate
    return best, lines


def _hey(url: str, rate: int, seconds: float) -> str:
    if shutil.which("hey") is None:
        return "not installed (apt-get install hey)"
    workers = 20
    out = subprocess.run(["hey", "-z", f"{seconds:g}s", "-c", str(workers), "-q", str(rate // workers), "-m", "POST",
                          "-T", "application/json", "-d", BODY.decode(), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    p50 = re.search(r"^\s*50%+ in ([\d.]+) secs", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (p50 and rps):
        return "no figures in its output"
    return f"p50 {float(p50.group(1)) * 1e3:.2f} ms at {float(rps.group(1)):.0f} rps ({workers} workers)"


def _wrk(url: str, rate: int, seconds: float) -> str:
    if shutil.which("wrk") is None:
        return "not installed (apt-get install wrk)"
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = '{BODY.decode()}'\n"
                     "wrk.headers['Content-Type'] = 'application/json'\n")
        script.flush()
        out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds:g}s", "--latency", "-s", script.name, url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (p50 and rps):
        return "no figures in its output"
    ms = float(p50.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    return f"p50 {ms:.2f} ms at {float(rps.group(1)):.0f} rps (8 connections, no rate: its own pace)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.2f}")
    found = accuracy(args.rate, args.seconds)
    summary, q = found["summary"], found["summary"]["latency_ms"]
    error = q["p50"] - DELAY_MS
    print(f"accuracy at {args.rate} rps for {args.seconds:g} s against a fixed {DELAY_MS:g} ms delay:")
    print(f"  diagnose loadtest: p50 {q['p50']:.2f} ms (p90 {q['p90']:.2f}, p99 {q['p99']:.2f}), achieved "
          f"{summary['achieved_rps']:.1f} rps, send lag p90 {summary['generator']['lag_p90_ms']:.2f} ms")
    if found["server_ms"] is not None:
        print(f"  the server's own mean time a request: {found['server_ms']:.2f} ms")
    print(f"  p50 - truth: {error:+.2f} ms  {'PASS' if abs(error) <= GOAL_MS else 'FAIL'} (goal within {GOAL_MS} ms)")
    for name, line in found["closed"].items():
        print(f"  {name}: {line}")
    best, lines = alone(3)
    print("the generator alone (a server that answers at once):")
    print("\n".join(lines))
    print(f"  highest rate sustained: {best or 'none of the rates tried'} rps")


if __name__ == "__main__":
    main()
