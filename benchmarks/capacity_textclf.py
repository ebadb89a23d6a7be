"""The embedded text classifier's capacity behind a real TorchServe, three ways, in one run (issue 16).

`diagnose serve` puts the embedded registry's textclf (MiniLM) behind TorchServe on 127.0.0.1, and `diagnose loadtest
--find-max --slo p99=200ms` (as a user runs it, in a subprocess) searches the highest request rate whose p99 keeps
200 ms, against:
1. no dynamic batching (batch_size 1);
2. dynamic batching (batch_size 8, max_batch_delay 10 ms);
3. the ONNX Runtime variant (`--variant ort-all`) with the same batching.
Each server has one worker with the manifest's threads. The figures are the highest passing rates and their ratios,
measured on this machine in this run; the servers run one at a time, the load generator beside them on the same
cores (a CPU replay: the figures are not a GPU server's).

Prints the CPU, its core count and the load average first.

Usage: python benchmarks/capacity_textclf.py [--version v1] [--duration 6] [--max-steps 7]
(each step is judged stable on three windows of a third of --duration)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from verdict_rates import cpu_model  # noqa: E402

from diagnose.registry import resolve_registry  # noqa: E402
from profilers.serve_torchserve import free_ports, serve  # noqa: E402

SLO = "p99=200ms"
CONFIGS = (("torch, no batching", {"batch_size": 1}),
           ("torch, dynamic batching", {"batch_size": 8, "max_batch_delay_ms": 10}),
           ("ort-all, dynamic batching", {"batch_size": 8, "max_batch_delay_ms": 10, "variant": "ort-all"}))


def capacity(manifest, version: str, config: dict, args, workdir: Path) -> dict:
    inference, management, metrics = free_ports(3)
    with serve(manifest, workdir, inference, management_port=management, metrics_port=metrics, **config) as server:
        command = [sys.executable, "-m", "diagnose", "loadtest", server.url, "--protocol", "torchserve",
                   "--server-model", server.model_name, "--version", version, "--metrics", server.metrics_url,
                   "--find-max", "--slo", SLO, "--rate", str(args.start_rate), "--duration", str(args.duration),
                   "--warmup", str(args.warmup), "--window", str(args.duration / 3), "--max-steps", str(args.max_steps), "--json",
                   "--out", str(workdir / "run")]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DIAGNOSE_PROGRESS": "0"})
    if done.returncode != 0:
        raise SystemExit(f"diagnose loadtest failed: {done.stderr.strip().splitlines()[-1:]}")
    evidence = json.loads(done.stdout)
    return {"found": evidence["find_max"], "steps": evidence["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="v1")
    parser.add_argument("--start-rate", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=7)
    args = parser.parse_args()
    registry = resolve_registry(None)
    manifest = registry.manifest(registry.default_model(), args.version)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.2f}")
    print(f"{manifest.name} {manifest.version} on TorchServe, 1 worker x {manifest.serving.threads} threads; "
          f"highest rate with {SLO} ({args.duration:g} s steps after {args.warmup:g} s warm-up, "
          f"at most {args.max_steps} steps):")
    found = {}
    for label, config in CONFIGS:
        with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
            result = capacity(manifest, args.version, config, args, Path(tmp))
        best = result["found"]["max_rps"]
        found[label] = best
        tried = ", ".join(f"{s['rate_rps']:g}{'' if s['passes'] else ' (fail)'}" for s in result["steps"])
        print(f"  {label:28s} {best or 0:8.1f} rps   knee {result['found']['knee_rps'] or '-'}   steps: {tried}")
    base, batched, ort = (found[label] for label, _ in CONFIGS)
    if base and batched:
        print(f"dynamic batching / none: {batched / base:.2f}x")
    if batched and ort:
        print(f"ort-all / torch, both batched: {ort / batched:.2f}x")


if __name__ == "__main__":
    main()
