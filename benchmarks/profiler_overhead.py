"""Profiler overhead on the default model: per-batch latency with and without torch.profiler, side by side.

Alternates plain batches and profiled batches (the settings `diagnose compare` profiles with: record_shapes,
with_modules, profile_memory, module annotations) on textclf v1's requests, and prints p50/p90 of each and
their ratio. This is why latency figures come from the benchmark harness and never from traces.

Usage: python benchmarks/profiler_overhead.py [--model textclf] [--version v1] [--batches 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diagnose.core.requestlog import load_requests  # noqa: E402
from diagnose.registry import resolve_registry  # noqa: E402
from profilers.runners import load_version  # noqa: E402
from profilers.torchprof import module_annotations  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="textclf")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    manifest = resolve_registry(None).manifest(args.model, args.version)
    version = load_version(manifest)
    requests = load_requests(manifest.requests_path)
    torch.set_num_threads(manifest.serving.threads)
    plain, profiled = [], []
    with torch.inference_mode():
        for i in range(5):
            version(version.prepare(requests.iloc[[i]]))
        for i in range(args.batches):
            frame = requests.iloc[[i % len(requests)]]
            t0 = time.perf_counter()
            version(version.prepare(frame))
            plain.append((time.perf_counter() - t0) * 1000)
            with module_annotations(version.model), profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                                                             with_modules=True, profile_memory=True):
                t0 = time.perf_counter()
                version(version.prepare(frame))
                profiled.append((time.perf_counter() - t0) * 1000)
    p = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    print(f"{args.model} {args.version}, batch {manifest.serving.batch_size}, {manifest.serving.threads} threads, "
          f"{args.batches} alternating batches each (same requests)\n")
    print("| | p50 ms | p90 ms |")
    print("|---|---:|---:|")
    print(f"| plain | {p(plain, 50):.2f} | {p(plain, 90):.2f} |")
    print(f"| under torch.profiler | {p(profiled, 50):.2f} | {p(profiled, 90):.2f} |")
    print(f"\nprofiler overhead: p50 x{p(profiled, 50) / p(plain, 50):.2f}, p90 x{p(profiled, 90) / p(plain, 90):.2f}")


if __name__ == "__main__":
    main()
