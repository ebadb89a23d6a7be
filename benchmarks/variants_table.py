"""ONNX Runtime and OpenVINO variants timed as served, beside spinning off, against torch eager and a standalone timing.

    python benchmarks/variants_table.py [--model textclf:v2] [--budget 20] [--variants ort-all,ort-int8]
    python benchmarks/variants_table.py --variants ort-all,ort-int8,openvino-fp32,openvino-int8 --configs served

textclf v2 pads every request to 128 tokens and serves batch 1 on 2 threads: MiniLM at the issue's setting.
One harness run (the verify stage's: blocks of batches per cell, an untimed settle between cells) times, side
by side: torch eager (the version) and each ORT variant three ways: `served` (ORT's default session options,
pools spinning inside a run, as a server that sets nothing runs it; the benchmark adds only that the spinning
stops when a run returns), `spin after run` (ORT's literal default, pools still spinning after the run), and
`no-spin` (allow_spinning 0, what the benchmark used to force). OpenVINO variants read no ORT session
options: they are built once, as served (latency hint, the version's threads; int8 calibrated on up to 300
requests). Then the same cells once more with the old scheme (one batch per cell visit, no settle, no lead-in),
and each cell alone in a tight loop (standalone: no other runtime on the cores). The fair scheme is the one whose
interleaved figures match the standalone ones; the issue's goal is within 10% for the served rows.
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
from profilers.variant_samples import calibration_inputs  # noqa: E402
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
    parser.add_argument("--schemes", default="blocks + settle;one batch, no settle",
                        help="';'-separated: blocks + settle (the harness's defaults); blocks, no settle; "
                             "one batch, no settle")
    parser.add_argument("--configs", default="served,spin after run,no-spin", help="ORT session configs to time")
    args = parser.parse_args()
    model, version = args.model.split(":")
    manifest, requests = version_with_requests(None, model, version, None)
    base = load_version(manifest)
    batch = manifest.serving.batch_size
    samples = [base.prepare(requests.iloc[i * batch:(i + 1) * batch]) for i in range(4)]
    names = args.variants.split(",")
    calibration = calibration_inputs(base, requests) if "openvino-int8" in names else None

    def configured(config: dict):
        serving = dataclasses.replace(manifest.serving, ort_session_config=config)
        return dataclasses.replace(base, manifest=dataclasses.replace(manifest, serving=serving))

    versions = {"torch-eager": base}
    configs = (("served", base), ("spin after run", configured({"session.force_spinning_stop": "0"})),
               ("no-spin", configured(NO_SPINNING)))
    for label, source in (c for c in configs if c[0] in args.configs.split(",")):
        wanted = names if label == "served" else [n for n in names if n.startswith("ort-")]  # the ORT options only
        for variant in build_variants(source, samples, wanted, calibration_inputs=calibration) if wanted else []:
            if variant.status != "ok":
                print(f"{variant.name}: {variant.status}: {variant.reason}")
                continue
            versions[f"{variant.name} ({label})"] = variant.as_loaded(source)
    cells = tuple(Cell(name, "r") for name in versions)
    print(f"CPU: {cpu_model()}; {model} {version}: batch {batch}, {manifest.serving.threads} threads; "
          f"{args.budget:g} s per interleaved run")
    figures: dict[str, dict[str, float]] = {name: {} for name in versions}
    schemes = {"blocks + settle": BenchmarkPlan(cells=cells, budget_s=args.budget),
               "blocks, no settle": BenchmarkPlan(cells=cells, budget_s=args.budget, settle_s=0.0),
               "one batch, no settle": BenchmarkPlan(cells=cells, budget_s=args.budget, max_block=1, settle_s=0.0,
                                                     lead_in=0)}
    schemes = {name: schemes[name] for name in args.schemes.split(";")}
    for scheme, plan in schemes.items():
        result = run_benchmark(plan, versions, {"r": requests})
        print(f"{scheme}: {result.rounds} rounds, block {result.block}, settle {result.settle_ms}")
        for name in versions:
            x = result.samples.loc[result.samples["model"] == name, "latency_ms"].to_numpy()
            figures[name][scheme] = float(np.median(x)) if x.size else float("nan")
    for name, version_ in versions.items():
        figures[name]["standalone"] = standalone_ms(version_, requests, args.standalone)
    eager = figures["torch-eager"]
    names = list(schemes)
    print("\n| cell | " + " | ".join(f"{n} p50 ms" for n in names) + " | standalone p50 ms | "
          + " | ".join(f"{n} / standalone" for n in names) + " | vs eager (" + names[0] + ") | vs eager (standalone) |")
    print("|---|" + "---:|" * (2 * len(names) + 3))
    for name, f in figures.items():
        print(f"| {name} | " + " | ".join(f"{f[n]:.2f}" for n in names) + f" | {f['standalone']:.2f} | "
              + " | ".join(f"{f[n] / f['standalone']:.2f}" for n in names)
              + f" | {eager[names[0]] / f[names[0]]:.2f}x | {eager['standalone'] / f['standalone']:.2f}x |")


if __name__ == "__main__":
    main()
