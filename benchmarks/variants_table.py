"""ONNX Runtime variants timed as served, beside spinning off, against torch eager and a standalone timing.

    python benchmarks/variants_table.py [--model textclf:v2] [--budget 20] [--variants ort-all,ort-int8]

textclf v2 pads every request to 128 tokens and serves batch 1 on 2 threads: MiniLM at the issue's setting.
One harness run (the verify stage's: blocks of batches per cell, an untimed settle between cells) times, side
by side: torch eager (the version), each ORT variant with ORT's default session options (pools spin, as a
server that sets nothing runs it), and the same variant with spinning off. Then the same cells once more with
the old scheme (one batch per cell visit, no settle), and each cell alone in a tight loop (standalone: no
other runtime on the cores). The fair scheme is the one whose interleaved figures match the standalone ones;
the issue's goal is within 10% for the served rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diagnose.registry import version_with_requests  # noqa: E402
from profilers.harness import BenchmarkPlan, Cell, run_benchmark  # noqa: E402
from profilers.ort_session import NO_SPINNING  # noqa: E402
from profilers.runners import load_version  # noqa: E402
from profilers.variants import build_variants  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def standalone_ms(version, requests, seconds: float) -> float:
    """The cell alone: batches back to back for `seconds`, nothing else on the cores; the median in ms."""
    import torch

    torch.set_num_threads(version.manifest.serving.threads)
    batch = version.manifest.serving.batch_size
    times, end, i = [], time.perf_counter() + seconds, 0
    with torch.inference_mode():
        while time.perf_counter() < end or len(times) < 20:
            frame = requests.iloc[(i * batch) % len(requests):][:batch]
            t0 = time.perf_counter_ns()
            version(version.prepare(frame))
            times.append((time.perf_counter_ns() - t0) / 1e6)
            i += 1
    return statistics.median(times[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="textclf:v2", help="model:version of the embedded registry")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of each interleaved run")
    parser.add_argument("--standalone", type=float, default=4.0, help="seconds of each standalone timing")
    parser.add_argument("--variants", default="ort-all,ort-int8")
    args = parser.parse_args()
    model, version = args.model.split(":")
    manifest, requests = version_with_requests(None, model, version, None)
    base = load_version(manifest)
    batch = manifest.serving.batch_size
    samples = [base.prepare(requests.iloc[i * batch:(i + 1) * batch]) for i in range(4)]
    names = args.variants.split(",")
    quiet = dataclasses.replace(manifest, serving=dataclasses.replace(manifest.serving, ort_session_config=NO_SPINNING))
    quiet_base = dataclasses.replace(base, manifest=quiet)
    versions = {"torch-eager": base}
    for label, source in (("served", base), ("no-spin", quiet_base)):
        for variant in build_variants(source, samples, names):
            if variant.status != "ok":
                print(f"{variant.name}: {variant.status}: {variant.reason}")
                continue
            versions[f"{variant.name} ({label})"] = variant.as_loaded(source)
    cells = tuple(Cell(name, "r") for name in versions)
    print(f"CPU: {cpu_model()}; {model} {version}: batch {batch}, {manifest.serving.threads} threads; "
          f"{args.budget:g} s per interleaved run")
    figures: dict[str, dict[str, float]] = {name: {} for name in versions}
    schemes = {"blocks + settle": BenchmarkPlan(cells=cells, budget_s=args.budget),
               "one batch, no settle": BenchmarkPlan(cells=cells, budget_s=args.budget, max_block=1, settle_s=0.0)}
    for scheme, plan in schemes.items():
        result = run_benchmark(plan, versions, {"r": requests})
        print(f"{scheme}: {result.rounds} rounds, block {result.block}, settle {result.settle_ms}")
        for name in versions:
            x = result.samples.loc[result.samples["model"] == name, "latency_ms"].to_numpy()
            figures[name][scheme] = float(np.median(x)) if x.size else float("nan")
    for name, version_ in versions.items():
        figures[name]["standalone"] = standalone_ms(version_, requests, args.standalone)
    eager = figures["torch-eager"]
    print("\n| cell | blocks + settle p50 ms | one batch, no settle p50 ms | standalone p50 ms | "
          "blocks / standalone | one-batch / standalone | vs eager (blocks) | vs eager (standalone) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in figures.items():
        print(f"| {name} | {f['blocks + settle']:.2f} | {f['one batch, no settle']:.2f} | {f['standalone']:.2f} | "
              f"{f['blocks + settle'] / f['standalone']:.2f} | {f['one batch, no settle'] / f['standalone']:.2f} | "
              f"{eager['blocks + settle'] / f['blocks + settle']:.2f}x | {eager['standalone'] / f['standalone']:.2f}x |")


if __name__ == "__main__":
    main()
