"""`diagnose loadtest`: open-loop load on real endpoints, the highest rate under an SLO, and two deployments judged
under one arrival schedule (docs/loadtest.md).

The generator is profilers/loadgen.py (open loop, latency from the intended send time, HDR histograms, stability
windows, its own lag checked). This module decides what to run (one rate, a search for the highest rate that keeps
the SLO, or the same schedule on two deployments), scrapes each server's /metrics around every step to split queue
from compute, and writes a run folder: run.json, evidence/loadtest.json and every request in load_samples.parquet,
with loadtest.md. Two deployments are judged with the compare's own statistics (the p50's Mann-Whitney test and
CIs, the tail's block bootstrap, the verdict), blocks of one second of arrivals, since under load neighbouring
requests share a queue and are not independent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.core import stats
from diagnose.core.errors import UserError, first_line
from diagnose.core.evidence import Evidence
from diagnose.core.progress import Bar
from diagnose.core.redact import redact_url
from diagnose.core.runfolder import RunFolder, new_dir

KNEE_RISE = 1.5  # the knee: past it, p99 has risen this many times over its value at the lowest rate
PASS_RATE = 0.95  # a step keeps up when the server completed this share of the target rate
MAX_ERROR_SHARE = 0.01  # and failed at most this share of requests


@dataclass(frozen=True)
class Endpoint:
    """One deployment: its base URL, its /metrics URL (optional) and its side's name ("" alone, "old"/"new")."""

    name: str
    url: str
    metrics_url: str | None = None


@dataclass(frozen=True)
class LoadtestOptions:
    endpoints: tuple[Endpoint, ...]
    protocol: str
    server_model: str  # the model's name on the server (its URL path)
    server_version: str | None
    requests: pd.DataFrame  # a version's request log: the bodies sent
    requests_source: str
    rate_rps: float
    duration_s: float
    warmup_s: float
    arrival: str
    timeout_s: float
    seed: int
    batch_size: int = 1
    window_s: float = 5.0
    find_max: bool = False
    slo_p99_ms: float | None = None
    max_steps: int = 10
    target_rps: float | None = None
    headroom: float = 0.3
    out: Path | None = None
    argv: tuple[str, ...] = ()


def parse_slo(text: str) -> float:
    """"p99=200ms" (or "p99=0.2s", "p99=200") -> 200.0 milliseconds."""
    metric, sep, value = text.partition("=")
    if not sep or metric.strip().lower() != "p99":
        raise UserError(f"expected p99=<latency>, e.g. p99=200ms; got {text!r}", key="--slo")
    value = value.strip().lower()
    scale = 1000.0 if value.endswith("s") and not value.endswith("ms") else 1.0
    try:
        ms = float(value.removesuffix("ms").removesuffix("s")) * scale
    except ValueError:
        raise UserError(f"expected a latency such as 200ms or 0.2s; got {value!r}", key="--slo") from None
    if not 0 < ms < math.inf:
        raise UserError(f"the SLO must be a positive latency; got {value!r}", key="--slo")
    return ms


def options_from_args(args, argv: tuple[str, ...]) -> LoadtestOptions:
    """The CLI's options, checked together: one URL or --old and --new; a version or --requests; --slo with
    --find-max and --target-rps."""
    if args.url and (args.old or args.new):
        raise UserError("give one endpoint URL, or --old URL and --new URL, not both", key="--old")
    if not args.url and not (args.old and args.new):
        raise UserError("give the endpoint's URL, or --old URL and --new URL", key="URL")
    if args.find_max and not args.slo:
        raise UserError("the search needs the objective it keeps, e.g. --slo p99=200ms", key="--find-max")
    if args.target_rps and not args.find_max:
        raise UserError("a capacity plan needs the highest rate one replica keeps: add --find-max", key="--target-rps")
    if args.duration < 3 * args.window:
        raise UserError(f"a step is judged stable on its last three {args.window:g} s windows: give --duration "
                        f"{3 * args.window:g} or more, or a shorter --window", key="--duration")
    if args.find_max and args.old:
        raise UserError("searches one endpoint's highest rate; compare two at one --rate", key="--find-max")
    for option in ("url", "old", "new", "metrics", "old_metrics", "new_metrics"):
        value, key = getattr(args, option), "URL" if option == "url" else f"--{option.replace('_', '-')}"
        if value and args.protocol == "grpc-v2" and option in ("url", "old", "new"):
            from profilers.grpc_v2 import stubs
            from profilers.protocols import grpc_address

            grpc_address(value, key)  # grpc://HOST:PORT or HOST:PORT, else one line saying so
            stubs()  # the gRPC package, before any run folder: else one line naming the pip requirement
        elif value and not value.startswith(("http://", "https://")):
            hint = " (a gRPC address needs --protocol grpc-v2)" if value.startswith("grpc://") else ""
            raise UserError(f"expected an http:// or https:// URL, got {redact_url(value)!r}{hint}", key=key)
    if args.version is None and args.requests is None:
        raise UserError("which requests to send: --version V (its request log) or --requests FILE", key="--version")
    if args.version is not None:
        from diagnose.registry import version_with_requests

        manifest, requests = version_with_requests(args.registry, args.model, args.version, args.requests)
        source, name = str(manifest.requests_or(args.requests, "--requests")), manifest.name
    else:
        from diagnose.core.requestlog import load_requests

        requests, source, name = load_requests(args.requests), str(args.requests), None
    if not (args.server_model or name):
        raise UserError("name the model as the server knows it: --server-model NAME", key="--server-model")
    endpoints = ((Endpoint("", args.url, args.metrics),) if args.url else
                 (Endpoint("old", args.old, args.old_metrics), Endpoint("new", args.new, args.new_metrics)))
    return LoadtestOptions(
        endpoints=endpoints, protocol=args.protocol, server_model=args.server_model or name,
        server_version=args.server_version, requests=requests, requests_source=source, rate_rps=args.rate,
        duration_s=args.duration, warmup_s=args.warmup, arrival=args.arrival, timeout_s=args.timeout, seed=args.seed,
        batch_size=args.batch_size, window_s=args.window, find_max=args.find_max,
        slo_p99_ms=parse_slo(args.slo) if args.slo else None,
        max_steps=args.max_steps, target_rps=args.target_rps, headroom=args.headroom, out=args.out, argv=argv)


# --- one step: a rate on every endpoint ------------------------------------------------------------------------------
def _targets(opts: LoadtestOptions):
    from profilers.loadgen import Target
    from profilers.protocols import bodies, endpoint

    payloads = tuple(bodies(opts.requests, opts.protocol, opts.batch_size, opts.server_model, opts.server_version))
    if not payloads:
        raise UserError("the request log has no rows to send", opts.requests_source)
    return [Target(e.name, endpoint(e.url, opts.protocol, opts.server_model, opts.server_version), opts.protocol,
                   payloads) for e in opts.endpoints]


def _scrape_all(opts: LoadtestOptions) -> dict[str, dict | str]:
    """Each endpoint's /metrics now, or why it could not be read (the breakdown is optional evidence)."""
    from collectors.metrics_scrape import scrape

    out: dict[str, dict | str] = {}
    for e in opts.endpoints:
        if e.metrics_url:
            try:
                out[e.name] = scrape(e.metrics_url)
            except Exception as exc:  # an evidence source: recorded, never fatal
                out[e.name] = f"{type(exc).__name__}: {first_line(exc)}"[:300]
    return out


def _by_name(series: dict[str, float]) -> dict[str, float]:
    """Series summed over their labels, by sample name."""
    totals: dict[str, float] = {}
    for key, value in series.items():
        name = key.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict | None:
    """The server's own average latency over a step and its parts (queue, compute, ...), from the first serving preset
    (collectors/serving_metrics.py) whose time and count counters moved: Triton, TorchServe, KServe, MLServer, TF
    Serving, OVMS... The average is what counters give; it splits queue from compute, which the client cannot."""
    from collectors.serving_metrics import COUNTERS, candidates

    b, a = _by_name(before), _by_name(after)

    def moved(name: str) -> float | None:
        return a[name] - b.get(name, 0.0) if name in a else None

    for preset in candidates():
        total = preset.metric if preset.kind == COUNTERS else f"{preset.metric}_sum"
        count = preset.count if preset.kind == COUNTERS else f"{preset.metric}_count"
        spent, calls = moved(total), moved(count or "")
        if spent is None or not calls or calls <= 0:
            continue
        parts = {}
        for role, name in preset.parts:
            part = moved(name if preset.kind == COUNTERS else f"{name}_sum")
            if part is not None:
                parts[role] = round(part / calls * preset.to_ms, 4)
        return {"server": preset.name, "label": preset.label, "metric": preset.metric, "requests": calls,
                "latency_ms": round(spent / calls * preset.to_ms, 4), "parts": parts}
    return None


def run_step(opts: LoadtestOptions, rate_rps: float, bar: Bar | None = None, done_s: float = 0.0,
             targets: list | None = None):
    """One rate on every endpoint (two: the same interleaved schedule): the LoadResult and each side's summary and
    server breakdown. The servers' counters are read when the warm-up ends (from a timer thread, so the event loop
    sending the load never waits on a scrape) and after the step: the breakdown covers the measured part, not a
    cold worker's first requests. `targets` (from `_targets`) are built here when not given: a search builds them
    once for all its steps."""
    import threading

    from profilers.loadgen import LEAD_S, LoadPlan, run_load

    plan = LoadPlan(rate_rps=rate_rps, duration_s=opts.duration_s, warmup_s=opts.warmup_s, arrival=opts.arrival,
                    timeout_s=opts.timeout_s, seed=opts.seed, window_s=opts.window_s)
    targets = targets or _targets(opts)  # the bodies built first: the warm-up timer below starts with the load
    before = _scrape_all(opts)
    warm: dict[str, dict | str] = {}
    timer = threading.Timer(LEAD_S + opts.warmup_s, lambda: warm.update(_scrape_all(opts)))
    if opts.warmup_s > 0 and before:
        timer.start()

    def progress(fraction: float) -> None:
        if bar is not None:
            bar.update_to(done_s + fraction * (opts.warmup_s + opts.duration_s), f"{rate_rps:g} rps")

    try:
        result = run_load(targets, plan, progress)
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
    before = warm or before
    after = _scrape_all(opts)
    sides = {}
    for e in opts.endpoints:
        summary = result.summary(e.name)
        if e.metrics_url:
            b, a = before.get(e.name), after.get(e.name)
            if isinstance(b, str) or isinstance(a, str):
                summary["server"] = {"status": "error", "reason": b if isinstance(b, str) else a}
            else:
                found = breakdown(b or {}, a or {})
                summary["server"] = {"status": "ok", **found} if found else {
                    "status": "unavailable", "reason": "no serving preset's time and count counters moved at "
                                                       f"{redact_url(e.metrics_url)}"}
        sides[e.name] = summary
    return result, {"rate_rps": rate_rps, "sides": sides}


def passes(step: dict, slo_p99_ms: float | None) -> tuple[bool, str]:
    """Whether every side kept up at this rate: completed the target rate, few errors, stable windows, p99 under the
    SLO. A step whose generator was the bottleneck is not judged (the server was not given the load), unless the
    server's own failures (errors, timeouts, bad answers: not the requests the generator dropped) already fail it:
    those are the story whatever the generator's lag."""
    for name, side in step["sides"].items():
        who = f"{name}: " if name else ""
        failed = side["requests"] - side["ok"]
        answered_badly = failed - side.get("errors", {}).get("dropped", 0)
        if side["requests"] and answered_badly / side["requests"] > MAX_ERROR_SHARE:
            return False, f"{who}{answered_badly} of {side['requests']} requests failed"
        if side["generator"]["bottleneck"]:
            return False, f"{who}the load generator, not the server, was the bottleneck ({side['generator']['reason']})"
        if side["requests"] and failed / side["requests"] > MAX_ERROR_SHARE:
            return False, f"{who}{failed} of {side['requests']} requests failed or were dropped"
        if side["achieved_rps"] < PASS_RATE * step["rate_rps"]:
            return False, f"{who}completed {side['achieved_rps']:.1f} of {step['rate_rps']:g} rps"
        if not side["stable"]:
            return False, f"{who}latency did not settle ({side.get('unstable_reason') or 'windows differ'})"
        p99 = side["latency_ms"]["p99"]
        if slo_p99_ms is not None and (p99 is None or p99 > slo_p99_ms):
            return False, f"{who}p99 {p99:.1f} ms is over the {slo_p99_ms:g} ms SLO"
    return True, "kept up"


def knee(steps: list[dict], side: str) -> float | None:
    """The knee of the latency curve: the last rate tried before p99 first rose past KNEE_RISE times its value at the
    lowest rate (None when it never did)."""
    points = sorted((round(s["rate_rps"], 2), s["sides"][side]["latency_ms"]["p99"]) for s in steps
                    if s["sides"][side]["latency_ms"]["p99"] is not None)
    if len(points) < 2:
        return None
    base = points[0][1]
    for (rate, _), (_, p99) in zip(points, points[1:], strict=False):
        if p99 > KNEE_RISE * base:
            return rate
    return None


def capacity_plan(max_rps: float | None, target_rps: float, headroom: float) -> dict:
    """Replicas for a target rate: the highest rate one replica kept under the SLO, less the headroom."""
    if not max_rps:
        return {"target_rps": target_rps, "replicas": None,
                "reason": "no rate met the SLO, so one replica's capacity is unknown"}
    per_replica = max_rps * (1 - headroom)
    return {"target_rps": target_rps, "headroom": headroom, "per_replica_rps": round(per_replica, 2),
            "replicas": max(1, math.ceil(target_rps / per_replica)),
            "assumptions": ["replicas scale linearly behind the load balancer (no shared bottleneck: database, "
                            "feature store, network)",
                            "every replica runs on hardware like the one tested, with the same workers and batching",
                            "production's request mix is the request log's",
                            f"{headroom:.0%} headroom for bursts, a replica lost in a rollout, and noisy neighbours"]}


# --- the search ------------------------------------------------------------------------------------------------------
def search(opts: LoadtestOptions, bar: Bar | None = None) -> tuple[list, list[dict], dict]:
    """The highest rate that keeps the SLO: double from the starting rate until a step fails, then bisect
    (geometrically) until the bracket is within 10%, at most `max_steps` steps, each with its own warm-up and
    stability windows."""
    results, steps = [], []
    good = bad = None
    rate = opts.rate_rps
    step_s = opts.warmup_s + opts.duration_s
    targets = _targets(opts)  # the bodies once: a large request log costs seconds to encode

    def measure(r: float) -> bool:
        result, step = run_step(opts, r, bar, len(steps) * step_s, targets=targets)
        ok, why = passes(step, opts.slo_p99_ms)
        step.update(passes=ok, why=why)
        results.append(result)
        steps.append(step)
        return ok

    while bad is None and len(steps) < opts.max_steps:
        if measure(rate):
            good, rate = rate, rate * 2
        else:
            bad = rate
            if "generator" in steps[-1]["why"]:
                break
    while (good is not None and bad is not None and bad / good > 1.1 and len(steps) < opts.max_steps
           and "generator" not in steps[-1]["why"]):
        rate = math.sqrt(good * bad)
        if measure(rate):
            good = rate
        else:
            bad = rate
    side = opts.endpoints[0].name
    found = {"max_rps": good and round(good, 2), "first_failing_rps": bad and round(bad, 2),
             "slo_p99_ms": opts.slo_p99_ms, "knee_rps": knee(steps, side),
             "limited_by": next((s["why"] for s in reversed(steps) if not s["passes"]), None)}
    return results, steps, found


# --- two deployments -------------------------------------------------------------------------------------------------
def judge(samples: pd.DataFrame, seed: int) -> dict:
    """Old against new from one interleaved schedule, with the compare's statistics: the p50's Mann-Whitney test and
    bootstrap CIs, the tail's block bootstrap over one-second blocks of arrivals, and the verdict."""
    ok = samples[(~samples["warmup"]) & (samples["outcome"] == "ok")]
    old, new = ok[ok["target"] == "old"], ok[ok["target"] == "new"]
    if min(len(old), len(new)) < stats.MIN_SAMPLES:
        return {"verdict": "inconclusive", "reason": f"too few successful requests ({len(old)} old, {len(new)} new)"}
    delta = stats.relative_change(old["latency_ms"].to_numpy(), new["latency_ms"].to_numpy(), seed=seed,
                                  blocks=(np.floor(old["intended_s"]).to_numpy(), np.floor(new["intended_s"]).to_numpy()))
    median = stats.verdict(delta)
    tail = stats.tail_verdict(delta, min(len(old), len(new)))
    verdict, kind = stats.overall_verdict(median, tail, delta)
    return {"verdict": verdict, "regression_kind": kind, "median_verdict": median, "tail_verdict": tail,
            "delta": delta.to_dict(), "samples": {"old": len(old), "new": len(new)}}


def findings(step: dict) -> list[dict]:
    """What the two sides' server breakdowns say, as causes the diagnosis knows (docs/report.md): a queue that grew
    only on the new deployment while its compute held is `serving.capacity`; compute that grew is the model's."""
    old, new = (step["sides"].get(k, {}).get("server") or {} for k in ("old", "new"))
    if old.get("status") != "ok" or new.get("status") != "ok":
        return []
    out = []
    rise = new["latency_ms"] - old["latency_ms"]
    floor = max(0.1, 0.1 * rise)
    grew = {role: new["parts"][role] - old["parts"][role] for role in new["parts"] if role in old["parts"]
            and new["parts"][role] > 1.2 * old["parts"][role] and new["parts"][role] - old["parts"][role] > floor}
    compute_old = old["latency_ms"] - sum(old["parts"].get(r, 0.0) for r in ("queue",))
    compute_new = new["latency_ms"] - sum(new["parts"].get(r, 0.0) for r in ("queue",))
    if "queue" in grew and compute_new <= 1.2 * compute_old:
        out.append({"cause": "serving.capacity", "text": f"the queue grew only on the new deployment: "
                    f"{old['parts']['queue']:.2f} -> {new['parts']['queue']:.2f} ms a request at "
                    f"{step['rate_rps']:g} rps while its compute held ({compute_old:.2f} -> {compute_new:.2f} ms), "
                    f"from {new['label']}'s {new['metric']}"})
    elif compute_new > 1.2 * compute_old and compute_new - compute_old > floor:
        out.append({"cause": "model.compute_increase", "text": f"the server's own time outside the queue grew "
                    f"{compute_old:.2f} -> {compute_new:.2f} ms a request at {step['rate_rps']:g} rps "
                    f"({new['label']}'s {new['metric']}): the model or its runtime, not the load"})
    return out


# --- as a signal of the compare --------------------------------------------------------------------------------------
def read_signal(path: Path) -> Evidence:
    """A two-deployment load test as evidence of the compare: `--signals DIR` holding `loadtest.json` (the
    `evidence/loadtest.json` of `diagnose loadtest --old URL_A --new URL_B`). Its last step's figures per side,
    the verdict under one schedule and the findings (a queue that grew only on the new deployment is
    `serving.capacity`) reach the hypotheses as the `loadtest` signal. A load test of one endpoint compares
    nothing: unavailable, saying so. A file that is not such evidence is one line (UserError)."""
    try:
        doc = json.loads(path.read_text())
        step = doc["steps"][-1]
        sides = {name: {"p50_ms": side["latency_ms"]["p50"], "p99_ms": side["latency_ms"]["p99"],
                        "achieved_rps": side["achieved_rps"], "errors": sum(side["errors"].values()),
                        "server": side.get("server")} for name, side in step["sides"].items()}
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UserError(f"not the evidence of a `diagnose loadtest` run ({first_line(exc)}): copy a load test's "
                        "evidence/loadtest.json", path) from None
    comparison = doc.get("comparison")
    if not comparison or set(sides) != {"old", "new"}:
        return Evidence.unavailable("loadtest", f"{path.name} is a load test of one endpoint: only `diagnose loadtest "
                                    "--old URL_A --new URL_B` compares two deployments")
    findings = [f for f in doc.get("findings", []) if isinstance(f, dict) and "cause" in f and "text" in f]
    old, new = sides["old"], sides["new"]
    lines = [f"under {step['rate_rps']:g} requests/s on one arrival schedule: p50 {_ms(old['p50_ms'])} -> "
             f"{_ms(new['p50_ms'])} ms, p99 {_ms(old['p99_ms'])} -> {_ms(new['p99_ms'])} ms, errors {old['errors']} -> "
             f"{new['errors']}: {comparison['verdict'].replace('_', ' ')}"]
    lines += [f["text"] for f in findings]
    return Evidence("loadtest", "ok", data={"rate_rps": step["rate_rps"], "sides": sides, "comparison": comparison,
                                            "findings": findings}, summary=lines)


# --- the command -----------------------------------------------------------------------------------------------------
def check_reachable(endpoint: Endpoint, timeout_s: float) -> None:
    """One TCP connection to each endpoint before any load: a wrong host or port, or a server that is down, is one
    line now, not a step of connection errors and an empty run folder."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint.url if "//" in endpoint.url else "//" + endpoint.url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UserError(f"{redact_url(endpoint.url)}: {exc}", key="URL") from None
    host = parts.hostname or "127.0.0.1"
    try:
        socket.create_connection((host, port), timeout=min(timeout_s, 5.0)).close()
    except OSError as exc:
        side = f"the {endpoint.name} endpoint " if endpoint.name else ""
        raise UserError(f"{side}{redact_url(endpoint.url)} is unreachable: nothing answers at {host}:{port} "
                        f"({exc.strerror or type(exc).__name__}); is the server up?", key="URL") from None


def run_loadtest(opts: LoadtestOptions) -> tuple[RunFolder, dict]:
    """Run what the options ask, write the run folder, return it with the evidence."""
    for endpoint in opts.endpoints:
        check_reachable(endpoint, opts.timeout_s)
    label = "-vs-".join(e.name for e in opts.endpoints) if len(opts.endpoints) > 1 else "endpoint"
    folder = RunFolder.create(opts.out or new_dir(Path("runs"), f"loadtest-{opts.server_model}-{label}"))
    from datetime import datetime, timezone

    from diagnose.core.redact import redact_argv

    names = [e.name for e in opts.endpoints]
    folder.write_run({"kind": "loadtest", "model": opts.server_model, "old": names[0] or "endpoint",
                      "new": names[-1] or "endpoint", "command": redact_argv(list(opts.argv)),
                      "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "endpoints": [{"name": e.name, "url": redact_url(e.url),
                                     "metrics_url": e.metrics_url and redact_url(e.metrics_url)} for e in opts.endpoints],
                      "protocol": opts.protocol, "requests": opts.requests_source, "seed": opts.seed})
    step_s = opts.warmup_s + opts.duration_s
    total = step_s * (opts.max_steps if opts.find_max else 1)
    with Bar(total, "Load testing") as bar:
        if opts.find_max:
            results, steps, found = search(opts, bar)
        else:
            result, step = run_step(opts, opts.rate_rps, bar)
            ok, why = passes(step, opts.slo_p99_ms)
            step.update(passes=ok, why=why)
            results, steps, found = [result], [step], None
    frames = [r.samples.assign(step=i, rate_rps=s["rate_rps"]) for i, (r, s) in enumerate(zip(results, steps, strict=True))]
    folder.write_load_samples(pd.concat(frames, ignore_index=True))
    evidence = {"status": "ok", "protocol": opts.protocol, "plan": {
        "rate_rps": opts.rate_rps, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s, "arrival": opts.arrival,
        "timeout_s": opts.timeout_s, "batch_size": opts.batch_size, "window_s": opts.window_s}, "steps": steps}
    if found is not None:
        evidence["find_max"] = found
        if opts.target_rps:
            evidence["capacity"] = capacity_plan(found["max_rps"], opts.target_rps, opts.headroom)
    if len(opts.endpoints) == 2:
        evidence["comparison"] = judge(results[-1].samples, opts.seed)
        evidence["findings"] = findings(steps[-1])
    folder.write_evidence("loadtest", evidence)
    folder.write(RunFolder.LOADTEST_MD, render_markdown(evidence, opts))
    folder.finish()
    return folder, evidence


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def standout_windows(windows: list[dict], rise: float = 2.0) -> list[dict]:
    """The windows a step's summary would hide: those with failed requests, or a p99 over `rise` times the median
    window's (a version swap, a restart or a stall in the middle of a step)."""
    p99s = sorted(w["p99_ms"] for w in windows if w.get("p99_ms") is not None)
    typical = p99s[len(p99s) // 2] if p99s else None
    return [w for w in windows if w.get("errors") or (typical and w.get("p99_ms") and w["p99_ms"] > rise * typical)]


def render_text(evidence: dict) -> str:
    """The terminal summary: each step's figures per side, then the search, the capacity plan, the verdict."""
    lines = []
    width = evidence["plan"]["window_s"]
    for step in evidence["steps"]:
        mark = "ok  " if step["passes"] else "FAIL"
        lines.append(f"{mark} {step['rate_rps']:8.1f} rps  {step['why']}")
        for name, side in step["sides"].items():
            q = side["latency_ms"]
            errors = ", ".join(f"{k} {v}" for k, v in side["errors"].items()) or "no errors"
            lines.append(f"     {name or 'endpoint':<8} achieved {side['achieved_rps']:.1f} rps  p50 {_ms(q['p50'])}  "
                         f"p90 {_ms(q['p90'])}  p99 {_ms(q['p99'])}  p99.9 {_ms(q['p99_9'])} ms  {errors}"
                         + ("" if side["stable"] else "  (not stable)"))
            server = side.get("server") or {}
            if server.get("status") == "ok":
                parts = ", ".join(f"{role} {ms:.2f}" for role, ms in server["parts"].items())
                lines.append(f"              server ({server['label']}): {server['latency_ms']:.2f} ms a request"
                             + (f" ({parts})" if parts else ""))
            if side["generator"]["bottleneck"]:
                lines.append(f"              generator: {side['generator']['reason']}")
            for w in standout_windows(side.get("windows", []))[:6]:
                lines.append(f"              window {w['start_s']:g}-{w['start_s'] + width:g} s: p99 {_ms(w['p99_ms'])} "
                             f"ms, {w.get('errors', 0)} failed of {w['requests']}")
    found = evidence.get("find_max")
    if found:
        if found["max_rps"]:
            lines.append(f"highest rate under p99 {found['slo_p99_ms']:g} ms: {found['max_rps']:g} rps"
                         + (f" (fails at {found['first_failing_rps']:g} rps: {found['limited_by']})"
                            if found["first_failing_rps"] else " (the highest tried)"))
        else:
            lines.append(f"no rate kept p99 under {found['slo_p99_ms']:g} ms: {found['limited_by']}")
        if found["knee_rps"]:
            lines.append(f"knee of the latency curve: about {found['knee_rps']:g} rps (p99 rises past {KNEE_RISE}x "
                         "its low-load value beyond it)")
    plan = evidence.get("capacity")
    if plan:
        lines.append(f"capacity for {plan['target_rps']:g} rps: " + (
            f"{plan['replicas']} replicas at {plan['per_replica_rps']:g} rps each ({plan['headroom']:.0%} headroom); "
            "assuming " + "; ".join(plan["assumptions"]) if plan["replicas"] else plan["reason"]))
    comparison = evidence.get("comparison")
    if comparison:
        delta = comparison.get("delta")
        if delta:
            lines.append(f"{comparison['verdict'].upper().replace('_', ' ')}: new against old under the same schedule: "
                         f"p50 {delta['p50_pct']:+.1f}% (95% CI {delta['p50_pct_ci'][0]:+.1f}% .. "
                         f"{delta['p50_pct_ci'][1]:+.1f}%), p99 {delta['p99_pct']:+.1f}% (95% CI "
                         f"{delta['p99_pct_ci'][0]:+.1f}% .. {delta['p99_pct_ci'][1]:+.1f}%), p = {delta['p_value']:.2g}")
        else:
            lines.append(f"INCONCLUSIVE: {comparison['reason']}")
        for finding in evidence.get("findings", []):
            lines.append(f"  {finding['cause']}: {finding['text']}")
    return "\n".join(lines) + "\n"


def render_markdown(evidence: dict, opts: LoadtestOptions) -> str:
    head = (f"# Load test: {opts.server_model} over {opts.protocol}\n\n"
            + "".join(f"- {e.name or 'endpoint'}: `{redact_url(e.url)}`\n" for e in opts.endpoints)
            + f"- requests: {opts.requests_source}, {opts.arrival} arrivals, {opts.warmup_s:g} s warm-up then "
              f"{opts.duration_s:g} s a step\n\n")
    return head + "```\n" + render_text(evidence) + "```\n"


def describe(folder: RunFolder, evidence: dict) -> str:
    return render_text(evidence) + f"run folder: {folder.path}\n"


def as_json(evidence: dict) -> str:
    return json.dumps(evidence, indent=2, default=str) + "\n"
