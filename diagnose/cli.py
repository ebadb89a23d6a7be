"""The `diagnose` command line: parse options into typed objects, call the engine, render.

Only the standard library is imported at start-up, so `diagnose --help` answers at once; each command
imports the engine (numpy, pandas, torch) when it runs. Exit codes: 0 ran (whatever the verdict),
2 user error (one line naming the file and key), 1 internal failure, 130 interrupted; `ci` is the exception:
1 means a regression beyond the budget, so every error there is 2 (docs/ci.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from diagnose import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130

COMPARE_EXAMPLES = """examples:
  diagnose compare --old v1 --new v2                      # default model of the embedded registry
  diagnose compare --model recsys --old v1 --new v2 --budget 60
  diagnose compare --registry ./models --model textclf --old v1 --new v2 \\
      --new-requests logs/today.parquet --json > report.json
  diagnose compare --old v1 --new v2 --signals signals/ --no-benchmark   # from production's signals alone
"""
PROFILE_EXAMPLES = """examples:
  diagnose profile v2                                     # default model of the embedded registry
  diagnose profile v1 --model recsys --steps 10 --out prof-v1
  tensorboard --logdir prof-v1                            # the folder is a TensorBoard profiler logdir
"""
DIFF_EXAMPLES = """examples:
  diagnose diff-traces runs/RUN/profile/old-v1 runs/RUN/profile/new-v2
  diagnose diff-traces base.pt.trace.json.gz test.pt.trace.json.gz --json > diff.json
  diagnose diff-traces control/ test/ --rank 3 --iterations 1009-1011   # rank 3's trace, ProfilerStep#1009-1011
  diagnose diff-traces old.json.gz new.json.gz --iterations 1010 --new-iterations 57
"""
COLLECT_EXAMPLES = """examples:
  diagnose collect v2 --out signals/                      # the manifest's deployment: cluster, GPU
  diagnose collect v2 --model textclf --prometheus http://prometheus:9090 --out signals/
  diagnose compare --old v1 --new v2 --signals signals/   # use them later, or attach them to a ticket
"""
DRIFT_EXAMPLES = """examples:
  diagnose drift --old-requests logs/last_week.parquet --new-requests logs/today.parquet
  diagnose drift --old v1 --new v3                        # the two versions' manifest requests
  diagnose drift --old-requests a.csv --new-requests b.csv --method psi --json > drift.json
"""
OPTIMIZE_EXAMPLES = """examples:
  diagnose optimize v2                                    # every variant of the default model's v2
  diagnose optimize v2 --variants ort-all,ort-int8,torch-int8 --budget 20
  diagnose optimize v2 --model imgclf --json > fix.json
variants: torch-eager torch-int8 torch-compile ort-disabled ort-basic ort-extended ort-all
  ort-transformers ort-int8 ort-int8-static ort-tuned openvino-fp32 openvino-int8 tensorrt-fp16 tensorrt-int8
"""
LATENCY_METRIC_HELP = ("latency metric to read before the serving presets (a histogram, summary or <name>_sum/_count "
                       "counters, unit from its suffix); wins over deployment.latency_metric (docs/signals.md)")
EVAL_EXAMPLES = """examples:
  diagnose eval                                           # the shipped suite, fixtures/scenarios
  diagnose eval --only aa_tabular,compute_recsys_ranker --json > eval.json
  diagnose eval my-scenarios/ --out runs/eval-today --budget-scale 2
"""
REPORT_EXAMPLES = """examples:
  diagnose report runs/20261128T101500Z-textclf-v1-vs-v2 --format html   # writes report.html in the run folder
  diagnose report RUN_DIR --format pdf --out incident.pdf                # A4, through a headless Chromium
  diagnose report RUN_DIR --format junit --out - > junit.xml
"""
CI_EXAMPLES = """examples:
  diagnose ci --old v1 --new v2 --max-regression p99=5%
  diagnose ci --old v1 --new v2 --max-regression p50=3% --max-regression p99=10% --junit junit.xml
  diagnose ci --baseline runs/main-latest --new v2 --max-regression p99=5%   # old side from a saved run
exit codes: 0 within budget (inconclusive passes unless --strict), 1 a significant regression beyond a budget,
  2 an error; $GITHUB_STEP_SUMMARY, when set, gets a Markdown summary (docs/ci.md)
"""
LOADTEST_EXAMPLES = """examples:
  diagnose loadtest http://127.0.0.1:8080 --protocol torchserve --version v2 --rate 50 --duration 30
  diagnose loadtest http://triton:8000 --protocol v2 --server-model textclf --version v2 --find-max --slo p99=200ms \\
      --metrics http://triton:8002/metrics --target-rps 500
  diagnose loadtest --old http://blue:8080 --new http://green:8080 --protocol torchserve --version v2 --rate 100
  diagnose loadtest grpc://triton:8001 --protocol grpc-v2 --server-model textclf --version v2 --rate 200
latency is measured from each request's intended send time (open loop, no coordinated omission); docs/loadtest.md
"""
SERVE_EXAMPLES = """examples:
  diagnose serve v1                                       # the default model behind TorchServe on 127.0.0.1:8080
  diagnose serve v2 --model textclf --port 9080 --batch-size 8 --max-batch-delay 10 --workers 2
  diagnose serve v1 --variant ort-all --batch-size 8      # its ONNX Runtime variant, behind the same preprocessing
  diagnose serve v1 --swap-to v2 --swap-after 20          # v2 replaces v1 under load: loadtest across it
  diagnose loadtest http://127.0.0.1:8080 --protocol torchserve --version v1 --metrics http://127.0.0.1:8082/metrics
needs Java 11+ (Debian: openjdk-17-jre-headless); inference on PORT, management PORT+1, metrics PORT+2 (docs/serve.md)
"""
APP_EXAMPLES = """examples:
  diagnose app                 # the runs under ./runs, at http://127.0.0.1:8501
  diagnose app runs/ --port 8600
  diagnose app runs/ --host 0.0.0.0   # reachable from other machines: the app has no authentication
"""
GRAFANA_EXAMPLES = """examples:
  diagnose grafana runs/20261128T101500Z-textclf-v1-vs-v2          # writes grafana.json in the run folder
  diagnose grafana --version v2 --model textclf --server triton --out textclf-v2.json   # the manifest's deployment
  diagnose grafana RUN_DIR --server torchserve --out incident.json      # TorchServe's metrics, not the run's
import the file in Grafana (Dashboards > New > Import); its Prometheus variable picks the data source
panels from the series the run found (docs/grafana.md); --server: a serving preset of docs/signals.md (triton,
  torchserve, tfserving, kserve, mlserver, seldon, bentoml, ovms, http, ...)
"""
ANALYZE_EXAMPLES = """examples:
  diagnose analyze runs/20261128T101500Z-textclf-v1-vs-v2
  diagnose analyze RUN_DIR --format markdown > incident.md
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or not value > 0:  # an infinite budget would never end
        raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
    return value


def _count(minimum: int):
    """An integer option of at least `minimum` (rows, steps, a seed): refused at parse time, not deep in a run."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def _variant_list(text: str) -> list[str]:
    from profilers.variants import VARIANTS  # small: names only, no torch at import

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown) or text!r}; choose from {', '.join(VARIANTS)}")
    return names


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    """Where versions come from: the same two options on every command that resolves a version."""
    parser.add_argument("--model", help="model name (default: the registry's only or default model)")
    parser.add_argument("--registry", help="registry folder (default: $DIAGNOSE_REGISTRY, ./models, else the embedded one)")


def _add_format_option(parser: argparse.ArgumentParser, text: str, default: str = "summary") -> None:
    """--format, its choices taken from the format registry (reports.FORMATS)."""
    import reports

    choices = reports.names()
    parser.add_argument("--format", choices=choices, default=default, help=f"{text}; one of: {', '.join(choices)}")


def _add_saved_run_options(parser: argparse.ArgumentParser) -> None:
    """What a command that reads a saved run folder (analyze, report) may be allowed to read."""
    parser.add_argument("--allow-env-mismatch", action="store_true", help="compare sample sets from different environments")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="read a run that was interrupted after its samples were saved; the report says so")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diagnose",
        description="Find out why a model update made serving latency jump.",
        epilog="example:\n  diagnose compare --old v1 --new v2\n\nrun 'diagnose COMMAND --help' for each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diagnose {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare", help="benchmark two versions, attribute the change, rank causes",
        description="Benchmark the old and new version under the same conditions, split the change between "
                    "model and inputs (2x2 factorial), rank the likely causes, and save a run folder.",
        epilog=COMPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("--old", required=True, help="baseline version, e.g. v1")
    compare.add_argument("--new", required=True, help="version under suspicion, e.g. v2")
    _add_registry_options(compare)
    compare.add_argument("--old-requests", type=Path, help="request log for the old side (.parquet/.csv), overrides the manifest")
    compare.add_argument("--new-requests", type=Path, help="request log for the new side, overrides the manifest")
    compare.add_argument("--budget", type=_positive_float, default=30.0,
                         help="seconds of measurement; stops earlier once the verdict is settled (default 30)")
    compare.add_argument("--seed", type=_count(0), default=0, help="seed for request order and bootstrap (default 0)")
    compare.add_argument("--no-factorial", action="store_true", help="measure only old/old and new/new (no attribution)")
    compare.add_argument("--no-profile", action="store_true", help="skip the profiler stage (no op-level diff)")
    compare.add_argument("--no-benchmark", action="store_true",
                         help="replay nothing here (no benchmark, profile or variants): rank the causes from the "
                              "recorded signals and the request logs alone, e.g. for a GPU model on a laptop")
    compare.add_argument("--out", type=Path, help="run folder to write (default runs/<timestamp>-<model>-<old>-vs-<new>)")
    compare.add_argument("--allow-env-mismatch", action="store_true", help="compare sample sets from different environments")
    compare.add_argument("--signals", type=Path, metavar="DIR",
                         help="recorded signals: nvidia-smi.csv, kubernetes/{pods,events,replicasets}.json (docs/signals.md)")
    compare.add_argument("--prometheus", metavar="URL",
                         help="Prometheus to query around the manifest's deployment.deployed_at (docs/signals.md)")
    compare.add_argument("--prometheus-auth", type=Path, metavar="FILE",
                         help="Prometheus credentials: a file of one line, user:password or a bearer token (docs/signals.md)")
    compare.add_argument("--latency-metric", metavar="NAME", help=LATENCY_METRIC_HELP)
    verify = compare.add_mutually_exclusive_group()
    verify.add_argument("--verify", dest="verify", action="store_true", default=None,
                        help="always build and time optimized variants of the new version (default: when the model side "
                             "leads a regression)")
    verify.add_argument("--no-verify", dest="verify", action="store_false", help="skip the verify stage")
    compare.add_argument("--variants", type=_variant_list, metavar="A,B",
                         help="variants for the verify stage (default torch-int8,ort-all,ort-int8,tensorrt-fp16)")
    compare.add_argument("--verify-budget", type=_positive_float,
                         help="seconds of measurement for the variants (default: 12, or --budget when smaller)")
    _add_format_option(compare, "what to print (default summary); the run folder keeps report.json and report.md")
    compare.add_argument("--json", dest="format", action="store_const", const="json", help="the same as --format json")
    compare.set_defaults(handler=_compare)

    analyze = commands.add_parser(
        "analyze", help="re-rank and re-render a saved run folder without running any model",
        description="Rebuild the report of a run folder from its saved evidence.",
        epilog=ANALYZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    _add_format_option(analyze, "what to print (default summary); report.json and report.md are rewritten either way")
    _add_saved_run_options(analyze)
    analyze.set_defaults(handler=_analyze)

    report = commands.add_parser(
        "report", help="render a run folder's report: md, html, json, junit or pdf",
        description="Render the report of a saved run folder in one format, into the run folder (or --out). HTML is "
                    "one self-contained file with plots that opens offline; PDF is that file printed on A4.",
        epilog=REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    _add_format_option(report, "the format (default html)", default="html")
    report.add_argument("--out", metavar="FILE", help="where to write it (default: the format's file in RUN_DIR; - for "
                                                      "standard output)")
    _add_saved_run_options(report)
    report.set_defaults(handler=_report)

    ci = commands.add_parser(
        "ci", help="gate a model update in CI: fail on a significant regression beyond a latency budget",
        description="Compare two versions at a CI-sized budget (or the new one against a saved baseline run) and gate "
                    "the change: a statistic fails its budget only when the regression is significant and beyond it.",
        epilog=CI_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ci.add_argument("--old", help="baseline version (not needed with --baseline)")
    ci.add_argument("--new", required=True, help="version under test")
    _add_registry_options(ci)
    ci.add_argument("--baseline", type=Path, metavar="RUN_DIR",
                    help="a saved run folder whose samples stand for the old side: its new version (or --old, when that "
                         "names its old one); refused when measured on another CPU or other library versions")
    ci.add_argument("--max-regression", action="append", metavar="METRIC=PCT", default=[],
                    help="the budget of p50, p90 or p99, e.g. p99=5%% (repeatable; default p50=5%% and p99=5%%)")
    ci.add_argument("--strict", action="store_true", help="fail the build on an inconclusive check too")
    ci.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML, one test case per gated statistic")
    # 25 s: at 15 s a true +10% p99 failed 18 of 20 builds (benchmarks/ci_gate.py); a clear regression stops earlier
    ci.add_argument("--budget", type=_positive_float, default=25.0,
                    help="seconds of measurement; stops earlier once the verdict is settled (default 25)")
    ci.add_argument("--seed", type=_count(0), default=0, help="seed for request order and bootstrap (default 0)")
    ci.add_argument("--no-profile", action="store_true", help="skip the profiler stage (no op-level causes)")
    ci.add_argument("--verify", action="store_true", help="also build and time optimized variants of the new version")
    ci.add_argument("--out", type=Path, help="run folder to write (default runs/<timestamp>-<model>-<old>-vs-<new>)")
    ci.add_argument("--allow-env-mismatch", action="store_true",
                    help="compare against a baseline measured in another environment")
    ci.set_defaults(handler=_ci)

    profile = commands.add_parser(
        "profile", help="profile one version with torch.profiler and list its top operators",
        description="Run a version's requests under torch.profiler (record_shapes, module hierarchy, memory), save "
                    "the trace as a TensorBoard logdir and Chrome trace, and print the operators that take the time.",
        epilog=PROFILE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("version", metavar="VERSION")
    _add_registry_options(profile)
    profile.add_argument("--requests", type=Path, help="request log to replay (default: the manifest's)")
    profile.add_argument("--steps", type=_count(1), default=5, help="profiled batches after 2 warm-up batches (default 5)")
    profile.add_argument("--top", type=_count(1), default=15, help="rows to print (default 15)")
    profile.add_argument("--out", type=Path, help="logdir to write (default runs/<timestamp>-<model>-<version>-profile)")
    profile.set_defaults(handler=_profile)

    collect = commands.add_parser(
        "collect", help="pull a version's signals (Kubernetes, Prometheus, GPU) into a folder",
        description="Read the version's deployment (manifest `deployment`) from the cluster and Prometheus, sample the "
                    "GPUs, print what each source saw, and save it in the formats --signals reads.",
        epilog=COLLECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    collect.add_argument("version", metavar="VERSION")
    _add_registry_options(collect)
    collect.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    collect.add_argument("--prometheus-auth", type=Path, metavar="FILE",
                         help="Prometheus credentials: a file of one line, user:password or a bearer token (docs/signals.md)")
    collect.add_argument("--latency-metric", metavar="NAME", help=LATENCY_METRIC_HELP)
    collect.add_argument("--gpu-seconds", type=_positive_float, default=5.0, help="seconds of NVML sampling (default 5)")
    collect.add_argument("--out", type=Path, required=True, help="folder to write (usable as --signals)")
    collect.set_defaults(handler=_collect)

    optimize = commands.add_parser(
        "optimize", help="build optimized variants (ONNX Runtime, OpenVINO, int8, TensorRT), check accuracy, time them",
        description="Build optimized variants of a version, compare their outputs with the version's on its own "
                    "requests (max/mean abs and rel error, cosine, top-1 agreement), time them side by side with the "
                    "version, and print the Pareto table of latency against accuracy drop with a verdict.",
        epilog=OPTIMIZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    optimize.add_argument("version", metavar="VERSION")
    _add_registry_options(optimize)
    optimize.add_argument("--variants", type=_variant_list, metavar="A,B", help="variants to build (default: all)")
    optimize.add_argument("--requests", type=Path, help="request log (default: the manifest's)")
    optimize.add_argument("--budget", type=_positive_float, default=20.0, help="seconds of measurement (default 20)")
    optimize.add_argument("--seed", type=_count(0), default=0, help="seed for request order and bootstrap (default 0)")
    optimize.add_argument("--out", type=Path, help="folder to write (default runs/<timestamp>-<model>-<version>-optimize)")
    optimize.add_argument("--json", action="store_true", help="print the fix section as JSON")
    optimize.set_defaults(handler=_optimize)

    drift = commands.add_parser(
        "drift", help="schema and distribution drift between two request logs",
        description="Compare two request logs: schema changes column by column (added, removed, dtype, nulls, "
                    "categories, list and tensor shapes), and per-feature distribution drift, size features included "
                    "(text lengths, list lengths, image sizes, payload bytes), corrected for testing many features.",
        epilog=DRIFT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drift.add_argument("--old-requests", type=Path, help="baseline request log (.parquet/.csv)")
    drift.add_argument("--new-requests", type=Path, help="request log to check")
    drift.add_argument("--old", help="take the baseline requests from this version's manifest")
    drift.add_argument("--new", help="take the new requests from this version's manifest")
    _add_registry_options(drift)
    drift.add_argument("--method", choices=("auto", "ks", "chisquare", "wasserstein", "jensenshannon", "psi"), default="auto",
                       help="drift test for every feature (default auto: KS / chi-square up to 1000 rows, "
                            "normed Wasserstein / Jensen-Shannon above)")
    drift.add_argument("--alpha", type=_probability, default=0.05, help="family-wise error rate, Holm-corrected (default 0.05)")
    drift.add_argument("--threshold", type=_positive_float, help="distance threshold (default 0.1; PSI 0.2)")
    drift.add_argument("--out", type=Path, help="folder to save evidence/drift.json, request sizes and drift.md")
    drift.add_argument("--json", action="store_true", help="print the whole drift report as JSON")
    drift.set_defaults(handler=_drift)

    diff = commands.add_parser(
        "diff-traces", help="op-level diff of two profiler traces (files or folders)",
        description="Diff two PyTorch profiler (Kineto) traces, .json or .json.gz, recorded here or elsewhere: per "
                    "operator, operator and shapes, module, aligned call tree, and region (record_function "
                    "annotations, nccl:* collectives, the ProfilerStep), ranked by contribution.",
        epilog=DIFF_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("old", type=Path, metavar="OLD", help="baseline trace file, or a folder holding one trace")
    diff.add_argument("new", type=Path, metavar="NEW", help="changed trace file, or a folder holding one trace")
    diff.add_argument("--top", type=_count(1), default=15, help="rows per table (default 15)")
    diff.add_argument("--json", action="store_true", help="print the whole diff as JSON")
    diff.add_argument("--iterations", metavar="STEPS",
                      help="diff only these ProfilerStep#N steps, e.g. 1009-1011 or 1009,1010 (default: every step)")
    diff.add_argument("--new-iterations", metavar="STEPS", help="the new trace's steps, when numbered otherwise "
                      "(default: --iterations)")
    diff.add_argument("--rank", type=_count(0), help="the rank to diff: its trace in a folder of per-rank traces "
                      "(by distributedInfo.rank or a rank-N file name); a single file must record that rank")
    diff.add_argument("--new-rank", type=_count(0), help="the new side's rank, when it differs (default: --rank)")
    diff.set_defaults(handler=_diff_traces)

    evaluate = commands.add_parser(
        "eval", help="run a labelled scenario suite and score the ranked causes (AC@1, AC@3, Avg@3)",
        description="Run every scenario of a suite (a folder of <name>/scenario.yaml, docs/eval.md) through the "
                    "compare and score its ranked causes against the true ones.",
        epilog=EVAL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("suite", nargs="?", type=Path, help="suite folder (default: the shipped fixtures/scenarios)")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="output folder: a run folder per scenario and eval.json "
                                                   "(default runs/<timestamp>-eval)")
    evaluate.add_argument("--only", metavar="NAME,...", type=lambda t: [n.strip() for n in t.split(",") if n.strip()],
                          help="run only these scenarios")
    evaluate.add_argument("--budget-scale", type=_positive_float, default=1.0, metavar="X",
                          help="multiply every scenario's benchmark budget (default 1)")
    evaluate.add_argument("--json", action="store_true", help="print the whole result as JSON")
    evaluate.set_defaults(handler=_eval)

    load = commands.add_parser(
        "loadtest", help="open-loop load on real endpoints: latency under a rate, the highest rate under an SLO, "
                         "two deployments under one schedule",
        description="Send a version's logged requests to a serving endpoint at a target rate (open loop, constant "
                    "or Poisson arrivals), measure latency from each request's intended send time, and save a run "
                    "folder. --find-max searches the highest rate whose p99 keeps the SLO; --old/--new drive two "
                    "deployments with the same interleaved arrival schedule and judge them (docs/loadtest.md).",
        epilog=LOADTEST_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("url", nargs="?", help="the endpoint's base URL, e.g. http://127.0.0.1:8080 (with --protocol "
                      "grpc-v2 its gRPC address, grpc://HOST:PORT or HOST:PORT)")
    load.add_argument("--old", metavar="URL", help="the old deployment's base URL (with --new: judged side by side)")
    load.add_argument("--new", metavar="URL", help="the new deployment's base URL")
    load.add_argument("--protocol", choices=("v2", "torchserve", "tfserving", "grpc-v2"), default="v2",
                      help="v2: the Open Inference Protocol over REST (Triton, KServe, MLServer, OVMS); torchserve: "
                           "/predictions/MODEL; tfserving: /v1/models/MODEL:predict; grpc-v2: the Open Inference "
                           "Protocol over gRPC, ModelInfer (default v2)")
    load.add_argument("--server-model", metavar="NAME", help="the model's name on the server (default: the registry's)")
    load.add_argument("--server-version", metavar="V", help="the model version on the server, when its URL names one")
    load.add_argument("--version", help="the registry version whose request log is sent, e.g. v2")
    _add_registry_options(load)
    load.add_argument("--requests", type=Path, help="a request log (.parquet/.csv) to send instead of a version's")
    load.add_argument("--rate", type=_positive_float, default=10.0, help="arrivals per second (with --find-max: "
                      "the first rate tried; default 10)")
    load.add_argument("--duration", type=_positive_float, default=30.0, help="measured seconds a step (default 30)")
    load.add_argument("--warmup", type=_positive_float, default=5.0, help="unmeasured seconds first (default 5)")
    load.add_argument("--window", type=_positive_float, default=5.0,
                      help="seconds a stability window; a step is stable when its last three agree (default 5)")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant", help="arrival process")
    load.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds before a request counts as timed out")
    load.add_argument("--batch-size", type=_count(1), default=1, help="request rows per HTTP request (default 1)")
    load.add_argument("--seed", type=_count(0), default=0, help="seed of the Poisson arrivals and the bootstrap")
    load.add_argument("--metrics", metavar="URL", help="the server's Prometheus /metrics, scraped around each step")
    load.add_argument("--old-metrics", metavar="URL", help="the old deployment's /metrics")
    load.add_argument("--new-metrics", metavar="URL", help="the new deployment's /metrics")
    load.add_argument("--find-max", action="store_true", help="search the highest rate that keeps the --slo")
    load.add_argument("--slo", metavar="p99=200ms", help="the latency objective a step must keep")
    load.add_argument("--max-steps", type=_count(1), default=10, help="steps of the search at most (default 10)")
    load.add_argument("--target-rps", type=_positive_float, help="with --find-max: the replicas this rate needs")
    load.add_argument("--headroom", type=_probability, default=0.3, help="share of a replica kept free (default 0.3)")
    load.add_argument("--out", type=Path, help="run folder to write (default runs/<timestamp>-loadtest-...)")
    load.add_argument("--json", action="store_true", help="print evidence/loadtest.json")
    load.set_defaults(handler=_loadtest)

    serve = commands.add_parser(
        "serve", help="serve a version behind TorchServe (dynamic batching, Prometheus metrics) until Ctrl-C",
        description="Serve a registry version behind a real TorchServe on 127.0.0.1, with the version's own "
                    "preprocessing, TorchServe's dynamic batching and its Prometheus metrics; one line says where, "
                    "Ctrl-C or SIGTERM stops it (docs/serve.md).",
        epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("version", metavar="VERSION")
    _add_registry_options(serve)
    serve.add_argument("--port", type=_count(1), default=8080,
                       help="inference port; management on PORT+1, metrics on PORT+2 (default 8080)")
    serve.add_argument("--batch-size", type=_count(1), metavar="N",
                       help="TorchServe's batch_size: requests one model call takes (default: serving.batch_size)")
    serve.add_argument("--max-batch-delay", type=_count(0), metavar="MS",
                       help="TorchServe's max_batch_delay: ms a batch waits to fill (default 10)")
    serve.add_argument("--workers", type=_count(1), default=1, metavar="N",
                       help="worker processes, each with its own copy of the model (default 1)")
    serve.add_argument("--variant", metavar="NAME",
                       help="serve an optimized variant of the version instead (ort-all, ort-int8, torch-int8, ...: "
                            "`diagnose optimize` lists them), built from its requests with a dynamic batch size")
    serve.add_argument("--swap-to", metavar="VERSION",
                       help="after --swap-after seconds, serve this version of the same model in place of VERSION "
                            "(loaded beside it, made the default, the old one unloaded): run a loadtest across it")
    serve.add_argument("--swap-after", type=_positive_float, default=30.0, metavar="S",
                       help="seconds after the server is ready that --swap-to happens (default 30)")
    serve.set_defaults(handler=_serve)

    app = commands.add_parser(
        "app", help="the investigation app in a browser: runs, overview, latency, ops, signals, drift, fix",
        description="Start the Streamlit investigation app on the run folders under RUNS_DIR (docs/app.md). It binds "
                    "to 127.0.0.1 unless --host says otherwise; it has no authentication.",
        epilog=APP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    app.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"), metavar="RUNS_DIR",
                     help="the folder holding run folders (default ./runs; new investigations are written there)")
    app.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    app.add_argument("--port", type=_count(1), default=8501, help="port (default 8501)")
    app.set_defaults(handler=_app)

    grafana = commands.add_parser(
        "grafana", help="a Grafana dashboard of the series behind a diagnosis (a run folder, or a deployment)",
        description="Write a dashboard in Grafana's JSON model: the production latency in the serving system's own "
                    "metric names, queue against compute, CFS throttling, memory against the limit, OOM events and "
                    "restarts, DCGM clocks and throttle reasons; the deploy and the change point as annotations; "
                    "namespace, pod and container variables (docs/grafana.md).",
        epilog=GRAFANA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grafana.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR",
                         help="a run folder: the panels whose series its Prometheus evidence found")
    grafana.add_argument("--version", help="instead of a run folder: this registry version's manifest deployment")
    _add_registry_options(grafana)
    grafana.add_argument("--server", metavar="PRESET",
                         help="chart this serving preset's latency metrics (default: those the run found)")
    grafana.add_argument("--latency-metric", metavar="NAME",
                         help="chart this latency histogram or summary (default: the run's, else deployment.latency_metric)")
    grafana.add_argument("--out", metavar="FILE", help="where to write it (default: RUN_DIR/grafana.json, or "
                                                       "grafana-<model>-<version>.json here; - for standard output)")
    grafana.set_defaults(handler=_grafana)
    return parser


def _print_report(report, fmt: str) -> None:
    import reports

    rendered = reports.get(fmt).render(report)
    if isinstance(rendered, bytes):  # a binary format (pdf) goes to standard output as it is
        sys.stdout.flush()
        sys.stdout.buffer.write(rendered)
        return
    sys.stdout.write(rendered.rstrip("\n") + "\n")


def _compare(args: argparse.Namespace) -> int:
    from diagnose.compare import CompareOptions, run_compare
    from diagnose.sources import latency_metric_option, prometheus_access

    options = CompareOptions(
        old=args.old, new=args.new, model=args.model, registry=args.registry,
        old_requests=args.old_requests, new_requests=args.new_requests, budget_s=args.budget, seed=args.seed,
        factorial=not args.no_factorial, profile=not args.no_profile, benchmark=not args.no_benchmark,
        out=args.out, signals=args.signals,
        prometheus=prometheus_access(args.prometheus, args.prometheus_auth),
        latency_metric=latency_metric_option(args.latency_metric),
        allow_env_mismatch=args.allow_env_mismatch, verify=args.verify,
        variants=tuple(args.variants) if args.variants else None, verify_budget_s=args.verify_budget,
        argv=tuple(sys.argv),
    )
    _, report = run_compare(options)
    _print_report(report, args.format)
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    """Rewrite the reports of a saved folder. The INCOMPLETE marker is never removed here: an interrupted run stays
    marked, and is analyzed only when asked (--allow-incomplete), its report saying it is incomplete."""
    from diagnose.compare import write_reports

    folder = _readable_folder(args.run_dir, args.allow_incomplete)
    report = write_reports(folder, allow_env_mismatch=args.allow_env_mismatch)
    _print_report(report, args.format)
    return EXIT_OK


def _readable_folder(run_dir: Path, allow_incomplete: bool):
    """A run folder analyze/report can read: complete, or interrupted after its samples when asked."""
    from diagnose.core.errors import UserError
    from diagnose.core.runfolder import RunFolder

    folder = RunFolder(run_dir)
    folder.check_complete()
    reason = folder.incomplete()
    if reason is not None and not allow_incomplete:
        raise UserError(f"the run was interrupted ({reason}); pass --allow-incomplete to analyze what it saved", folder.path)
    return folder


def _report(args: argparse.Namespace) -> int:
    """One format of a run folder's report, into the folder (its usual file), a file, or standard output."""
    import reports
    from diagnose.analysis import analyze
    from diagnose.core.runfolder import write_text

    folder = _readable_folder(args.run_dir, args.allow_incomplete)
    fmt = reports.get(args.format)
    report = analyze(folder, allow_env_mismatch=args.allow_env_mismatch)
    if args.out == "-" or (args.out is None and fmt.filename is None):
        _print_report(report, fmt.name)
        return EXIT_OK
    path = Path(args.out) if args.out else folder.file(fmt.filename)
    write_text(path, fmt.render(report))
    print(f"{fmt.name}: {path}")
    return EXIT_OK


def _ci(args: argparse.Namespace) -> int:
    from diagnose.ci import CiOptions, run_ci
    from diagnose.compare import CompareOptions
    from diagnose.core.errors import UserError
    from diagnose.gate import DEFAULT_MAX_REGRESSION, parse_budget

    if args.old is None and args.baseline is None:
        raise UserError("give the version to compare against: --old VERSION or --baseline RUN_DIR", key="--old")
    if args.verify and args.baseline is not None:  # variants are timed beside the old model, which a baseline lacks
        raise UserError("times the variants beside the old version, which --baseline does not load; drop one",
                        key="--verify")
    budgets = dict(parse_budget(text) for text in args.max_regression) or dict(DEFAULT_MAX_REGRESSION)
    options = CompareOptions(
        old=args.old, new=args.new, model=args.model, registry=args.registry, budget_s=args.budget, seed=args.seed,
        profile=not args.no_profile, out=args.out, allow_env_mismatch=args.allow_env_mismatch,
        verify=True if args.verify else False, argv=tuple(sys.argv),
        gate={"max_regression": budgets, "strict": args.strict}, baseline=args.baseline,
    )
    _, code, text = run_ci(CiOptions(options, args.junit))
    sys.stdout.write(text)
    return code


def _profile(args: argparse.Namespace) -> int:
    from diagnose.profiles import profile_command

    sys.stdout.write(profile_command(args.version, args.model, args.registry, args.requests, args.steps, args.top, args.out))
    return EXIT_OK


def _collect(args: argparse.Namespace) -> int:
    from diagnose.core.runfolder import make_dir
    from diagnose.registry import resolve_registry
    from diagnose.signals import collect_live, sample_for
    from diagnose.sources import latency_metric_option, prometheus_access

    latency_metric = latency_metric_option(args.latency_metric)
    prometheus = prometheus_access(args.prometheus, args.prometheus_auth)
    registry = resolve_registry(args.registry)
    manifest = registry.manifest(args.model or registry.default_model(), args.version)
    make_dir(args.out)
    found = collect_live(manifest, args.out, prometheus, latency_metric) | sample_for(args.gpu_seconds, args.out)
    for source, evidence in sorted(found.items()):
        print(f"{source}: {evidence.status}" + (f" ({evidence.reason})" if evidence.reason else ""))
        for line in evidence.summary:
            print(f"  {line}")
    print(f"saved in {args.out}; use it with: diagnose compare ... --signals {args.out}")
    return EXIT_OK


def _optimize(args: argparse.Namespace) -> int:
    from diagnose.verify import optimize_command

    sys.stdout.write(optimize_command(args.version, args.model, args.registry, args.requests, args.variants, args.budget,
                                      args.seed, args.out, args.json))
    return EXIT_OK


def _drift(args: argparse.Namespace) -> int:
    from diagnose.drift_stage import drift_command

    sys.stdout.write(drift_command(args.old_requests, args.new_requests, args.old, args.new, args.model, args.registry,
                                   args.method, args.alpha, args.threshold, args.out, args.json))
    return EXIT_OK


def _diff_traces(args: argparse.Namespace) -> int:
    from diagnose.profiles import diff_command

    sys.stdout.write(diff_command(args.old, args.new, args.top, args.json, iterations=args.iterations, rank=args.rank,
                                  new_iterations=args.new_iterations, new_rank=args.new_rank))
    return EXIT_OK


def _loadtest(args: argparse.Namespace) -> int:
    from diagnose.loadtest import as_json, describe, options_from_args, run_loadtest

    folder, evidence = run_loadtest(options_from_args(args, tuple(sys.argv)))
    sys.stdout.write(as_json(evidence) if args.json else describe(folder, evidence))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from diagnose.serve import serve_command

    return serve_command(args.version, args.model, args.registry, args.port, args.batch_size, args.max_batch_delay,
                         args.workers, args.variant, args.swap_to, args.swap_after)


def _grafana(args: argparse.Namespace) -> int:
    from diagnose.grafana import grafana_command
    from diagnose.sources import latency_metric_option

    sys.stdout.write(grafana_command(args.run_dir, args.version, args.model, args.registry, args.server,
                                     latency_metric_option(args.latency_metric), args.out))
    return EXIT_OK


def _app(args: argparse.Namespace) -> int:
    from diagnose.app_server import serve

    return serve(args.runs_dir, args.host, args.port)


def _eval(args: argparse.Namespace) -> int:
    from diagnose.evaluation import eval_command

    sys.stdout.write(eval_command(args.suite, args.out, args.only, args.json, args.budget_scale))
    return EXIT_OK


def _refuse_nul_bytes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No file name or version holds a NUL byte; the OS would refuse it deep inside a command, as a traceback."""
    from diagnose.core.errors import UserError

    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    for action in command._actions:
        if "\0" in str(getattr(args, action.dest, "")):
            name = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
            raise UserError("must not contain a NUL byte", key=name)


# ---- library output (issue 12): stderr holds the progress bars and the tool's own lines ----------------------------
def _quiet_library_output() -> None:
    """Before any library loads: transformers' and matplotlib's logging to errors only, Hugging Face's progress bars
    ("Loading weights") off, and warnings raised inside transformers / huggingface_hub (FutureWarnings, the TracerWarnings of
    the embedded registry's first build) ignored. The profiler's and the exporters' C-level output is caught where
    they run (`diagnose.core.quiet`). DIAGNOSE_LIBRARY_OUTPUT=1 leaves all of it on."""
    from diagnose.core.quiet import library_output_shown

    if library_output_shown():
        return
    import logging
    import warnings

    # matplotlib (report.html's plots) logs "building the font cache" on a machine's first plot, and a config-folder
    # fallback where $HOME is read-only: warnings through logging's last-resort handler, straight to stderr
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module=r"(transformers|huggingface_hub)(\.|$)")
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from disk; never reach for a hub
    _quiet_library_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER
    from diagnose.core.errors import UserError

    try:
        _refuse_nul_bytes(parser, args)
        return args.handler(args)
    except UserError as exc:
        print(f"diagnose: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("diagnose: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from diagnose.compare import Interrupted

        if isinstance(exc, Interrupted):
            print(f"diagnose: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        import traceback

        traceback.print_exc()
        print(f"diagnose: internal error: {type(exc).__name__}: {exc} (please report this with the traceback above)",
              file=sys.stderr)
        # `ci`'s 1 means "a regression beyond the budget": a failure of the tool itself must not read as one
        return EXIT_USER if args.command == "ci" else EXIT_INTERNAL
