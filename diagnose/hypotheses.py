"""Rank causes of a latency change from the evidence in a run folder.

Every rule reads the same `Context` and returns zero or one `Hypothesis` (one uniform result type, as
k8sgpt's analyzers do); `RULES` registers each rule with the cause ids it may return, in one place. Scores
are in [0, 1]: the share of the change that the attributed side explains, weighted by how directly the
evidence points at the cause. When the verdict is not a significant
regression no hypothesis may score above 0.5. Results are sorted by score, then by cause id, so the same
evidence always gives the same ranking.

Two sources can carry a regression, and each side's causes are scaled by its own: model, input and serving
causes by the lab's verdict (`Context.base`: the benchmark measured them), the environment's (CPU throttling,
memory, GPU) by production's (`Context.env_base`: a replay on this machine cannot show them, production's own
latency can). A hypothesis names the evidence that would settle it but is absent (`missing`), and a rule whose
evidence is absent altogether says so through `Rule.needs` (report.json `unjudged`) instead of staying silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable

from diagnose.core import stats
from diagnose.core.errors import first_line
from diagnose.core.report import Hypothesis, Production, RuleError
from diagnose.next_steps import runnable

NOT_SIGNIFICANT_CAP = 0.5
PRECISION_DROP = 0.15  # a fall in the share of low-precision op time that counts as a precision change


@dataclass
class Context:
    """What the rules may read; built from the run folder by `diagnose.analysis`."""

    verdict: str  # the report's: the lab's and production's joined (stats.joint_verdict)
    delta: dict
    attribution: dict
    versions: dict  # {"old": {...}, "new": {...}} from evidence/versions.json
    requests: dict  # {"old": describe(), "new": describe()} from evidence/requests.json
    cells: dict  # cell key -> {"p50_ms", "preprocess_p50_ms", "infer_p50_ms", "input_elements_mean", "input_signature"}
    environment_diff: list[str] = field(default_factory=list)
    profile: dict | None = None  # report["profile"]: trace-diff findings and signals, None when not profiled
    signals: dict = field(default_factory=dict)  # source -> evidence dict (cgroup, gpu, kubernetes) with status "ok"
    drift: dict | None = None  # report["drift"]: schema changes, drifted features, the latency tie; None when not run
    run: dict = field(default_factory=dict)  # run.json's model, old, new, registry and the run folder (`dir`)
    lab_verdict: str | None = None  # the benchmark's verdict; None reads as `verdict` (older callers)
    production: Production | None = None  # production latency across the deploy (diagnose.production)

    def signal(self, source: str) -> dict:
        """The `data` of an evidence source that is ok, else {}."""
        entry = self.signals.get(source) or {}
        return entry.get("data", {}) if entry.get("status") == "ok" else {}

    def signal_summary(self, source: str) -> list[str]:
        entry = self.signals.get(source) or {}
        return [f"{source}: {line}" for line in entry.get("summary", [])] if entry.get("status") == "ok" else []

    def findings(self, limit: int = 3) -> list[str]:
        """The trace diff's plain-words top rows, as evidence lines."""
        if not self.profile:
            return []
        return [f"profile: {line}" for line in self.profile["findings"][:limit]]

    @property
    def precision_drop(self) -> float:
        """How much of the op time left low precision or quantized ops (old share - new share), from the profile."""
        if not self.profile:
            return 0.0
        signals = self.profile["totals"]
        return signals["old_precision"]["low_precision_share"] - signals["new_precision"]["low_precision_share"]

    def signal_ratio(self, name: str) -> float | None:
        """new / old of a trace-diff signal such as "flops_per_step"; None when not profiled or zero."""
        if not self.profile:
            return None
        signals = self.profile["totals"]
        return _ratio(signals.get(f"old_{name}"), signals.get(f"new_{name}"))

    @property
    def base(self) -> float:
        """How much a cause the lab measures (model, inputs, serving config) can matter: a settled lab regression
        counts fully, anything else at most 0.4."""
        return 1.0 if (self.lab_verdict or self.verdict) == "regression" else 0.4

    @property
    def env_base(self) -> float:
        """How much an environment cause (CPU, memory, GPU) can matter, from production's latency: fully when it
        regressed, little when it shows nothing (such a cause cannot lead then); without production latency,
        as much as the verdict allows."""
        verdict = self.production and self.production.verdict
        if verdict == "regression":
            return 1.0
        if verdict in ("no_regression", "improvement"):
            return 0.15
        if verdict == "inconclusive":
            return 0.5
        return 0.6 if self.verdict == "regression" else 0.4

    def production_lines(self) -> list[str]:
        """Production's latency across the deploy, as an evidence line."""
        return [self.production.describe()] if self.production else []

    def missing_production(self) -> list[str]:
        return [] if self.production else [
            "production latency across the deploy (the serving system's metrics in Prometheus): without it, whether "
            "this slowed requests is unknown"]

    def grew(self) -> str | None:
        """Which of production's parts grew: "queue", "compute", "both" or None (Production.grew)."""
        return self.production and self.production.grew()

    def missing_lab(self) -> list[str]:
        """What the lab did not measure that would confirm or refute a model-side cause."""
        out = []
        if not self.attribution or self.attribution.get("model") is None:
            out.append("the factorial (--no-factorial or a cell that could not run): the model's share is unknown")
        if not self.profile:
            out.append("the profile (--no-profile, or the stage failed): no operator-level diff")
        return out

    def share(self, side: str) -> float:
        """The part of the change that `side` ("model" or "input") explains, 0 when not significant or within the
        noise floor: with many samples a 0.05% effect is "significant", and over a near-zero total change (an A/A
        compare) its share is several hundred percent, which explains nothing."""
        effect = self.attribution.get(side)
        if not effect or not effect.get("significant") or effect.get("share") is None or effect["effect_ms"] <= 0:
            return 0.0  # a side that made it faster explains no part of a slowdown
        if effect.get("effect_pct") is not None and effect["effect_pct"] < stats.NOISE_FLOOR_PCT:
            return 0.0
        return max(0.0, min(1.0, effect["share"]))

    def effect_text(self, side: str) -> str:
        effect = self.attribution.get(side) or {}
        if "effect_ms" not in effect:
            return f"{side} effect: not measured"
        low, high = effect["ci_ms"]
        share = f", {100 * effect['share']:.0f}% of the change" if effect.get("share") is not None else ""
        return f"{side} effect {effect['effect_ms']:+.2f} ms (95% CI {low:+.2f} .. {high:+.2f}){share}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def same_weights(old: dict, new: dict) -> bool | None:
    """Whether two versions carry the same weights: parameter counts within 1%, else (an ONNX artifact has no
    parameter count) weight bytes within 5% (its graph adds a little); None when neither is known."""
    params = _ratio(old.get("param_count"), new.get("param_count"))
    if params is not None:
        return abs(params - 1) <= 0.01
    size = _ratio(old.get("weight_bytes"), new.get("weight_bytes"))
    return abs(size - 1) <= 0.05 if size is not None else None


def preprocessing_change(ctx: Context) -> Hypothesis | None:
    old, new = ctx.versions["old"], ctx.versions["new"]
    if old.get("preprocess_sha256") == new.get("preprocess_sha256") and old.get("preprocess") == new.get("preprocess"):
        return None
    oo, no = ctx.cells.get("old_model/old_requests", {}), ctx.cells.get("new_model/old_requests", {})
    if not no and ctx.requests.get("identical"):  # one request log for both: the new/new cell saw the old requests
        no = ctx.cells.get("new_model/new_requests", {})
    size_ratio = _ratio(oo.get("input_elements_mean"), no.get("input_elements_mean"))
    pre_ratio = _ratio(oo.get("preprocess_p50_ms"), no.get("preprocess_p50_ms"))
    if old.get("preprocess") != new.get("preprocess"):
        evidence = [f"preprocess changed: {old.get('preprocess')} -> {new.get('preprocess')}"]
    else:
        evidence = [f"preprocess code {new.get('preprocess')} changed (sha256 {str(old.get('preprocess_sha256'))[:12]} -> "
                    f"{str(new.get('preprocess_sha256'))[:12]})"]
    weight = 0.3
    if size_ratio and abs(size_ratio - 1) > 0.05:
        weight = 0.95
        evidence.append(
            f"the same requests become {size_ratio:.2f}x the model input ({oo['input_elements_mean']:.0f} -> "
            f"{no['input_elements_mean']:.0f} elements per batch; "
            f"shapes {oo.get('input_signature')} -> {no.get('input_signature')})"
        )
    if pre_ratio and pre_ratio > 1.2:
        weight = max(weight, 0.8)
        evidence.append(f"preprocessing itself takes {pre_ratio:.1f}x longer "
                        f"({oo['preprocess_p50_ms']:.2f} -> {no['preprocess_p50_ms']:.2f} ms p50)")
    traced = ctx.signal_ratio("input_elements_per_step")
    if traced and abs(traced - 1) > 0.05:
        weight = max(weight, 0.9)
        evidence.append(f"profiled on the same requests, the tensors entering the model are {traced:.2f}x as large")
    evidence.append(ctx.effect_text("model"))
    evidence += ctx.findings()
    score = ctx.base * ctx.share("model") * weight
    return Hypothesis(
        "preprocessing.change", score,
        "The new version's preprocessing turns the same requests into "
        + (f"{size_ratio:.1f}x larger model inputs" if size_ratio and size_ratio > 1.05 else "different model inputs"),
        evidence,
        ["Diff the two preprocess functions (padding, truncation, resizing, max length)",
         "Rerun with the old preprocessing on the new model to confirm"],
        missing=ctx.missing_lab(),
    )


def serving_config_change(ctx: Context) -> Hypothesis | None:
    old, new = ctx.versions["old"]["serving"], ctx.versions["new"]["serving"]
    changed = {k: (old[k], new[k]) for k in ("threads", "batch_size", "device") if old.get(k) != new.get(k)}
    if not changed:
        return None
    weight = 0.9 if ("threads" in changed and new["threads"] < old["threads"]) or "device" in changed else 0.6
    evidence = [f"serving.{k}: {a} -> {b}" for k, (a, b) in changed.items()] + [ctx.effect_text("model")]
    if "threads" in changed and ctx.signal("host").get("contended"):
        # more threads than free cores wait on the busiest core: the measured direction is the neighbours'
        evidence += ctx.signal_summary("host")
    return Hypothesis(
        "serving.config_change", ctx.base * ctx.share("model") * weight,
        "The serving configuration changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
        evidence,
        ["Restore the old serving settings on the new model and re-benchmark",
         "Check the deployment's config change for this version"],
    )


def precision_change(ctx: Context) -> Hypothesis | None:
    """Declared (serving.precision) or observed (low-precision ops in the old trace, fp32 in the new)."""
    old, new = ctx.versions["old"]["serving"]["precision"], ctx.versions["new"]["serving"]["precision"]
    evidence, weight = [], 0.0
    if old != new:
        order = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}
        weight = 0.9 if order[new] > order[old] else 0.5
        evidence.append(f"serving.precision: {old} -> {new}")
    if ctx.precision_drop > PRECISION_DROP:
        low_old = ctx.profile["totals"]["old_precision"]["low_precision_share"]
        low_new = ctx.profile["totals"]["new_precision"]["low_precision_share"]
        weight = max(weight, 0.85)
        evidence.append(f"profile: low-precision or quantized ops took {100 * low_old:.0f}% of op time in the old "
                        f"version, {100 * low_new:.0f}% in the new "
                        f"(dtypes {ctx.profile['totals']['new_precision']['dtypes']})")
    if not evidence:
        return None
    evidence += [ctx.effect_text("model")] + ctx.findings()
    return Hypothesis(
        "model.precision_change", ctx.base * ctx.share("model") * weight,
        f"Precision changed: {evidence[0]}" if old != new else "The new model runs in higher precision than the old one",
        evidence,
        ["Serve the new model at the old precision (or quantize it) and compare accuracy and latency"],
        missing=ctx.missing_lab(),
    )


def model_change(ctx: Context) -> Hypothesis | None:
    """A changed artifact: more parameters or FLOPs means more work; the same work slower points at operators."""
    old, new = ctx.versions["old"], ctx.versions["new"]
    if old.get("artifact_sha256") == new.get("artifact_sha256"):
        return None
    if ctx.precision_drop > PRECISION_DROP:
        # Quantized weights are packed (not parameters) and quantized ops carry no FLOP estimate, so size and
        # FLOP comparisons would mislead; the precision rule explains this artifact change.
        return None
    params = _ratio(old.get("param_count"), new.get("param_count"))
    same = same_weights(old, new)
    if old.get("format") != new.get("format") and same:
        return None  # the same weights in another runtime: the library rule explains this artifact change
    flops, calls = ctx.signal_ratio("flops_per_step"), ctx.signal_ratio("calls_per_step")
    totals = (ctx.profile or {}).get("totals") or {}
    replaced = bool(totals.get("ops_removed") and totals.get("ops_added"))
    if same and replaced:
        # The same weights through other ops (a fused attention written out as matmuls, a fused norm by hand): the
        # profiler estimates FLOPs for some ops only (none for fused attention), so their ratio is not more work.
        flops = calls = None
    evidence = [f"artifact changed: {old.get('artifact')} (sha256 {str(old.get('artifact_sha256'))[:12]}) -> "
                f"{new.get('artifact')} (sha256 {str(new.get('artifact_sha256'))[:12]})"]
    if params is not None:
        evidence.append(f"parameters: {old['param_count']:,} -> {new['param_count']:,} ({params:.2f}x); weights "
                        f"{(old.get('weight_bytes') or 0) / 2**20:.1f} -> {(new.get('weight_bytes') or 0) / 2**20:.1f} MiB")
    if flops is not None:
        evidence.append(f"profile: FLOPs per step {flops:.2f}x, operator calls per step {calls:.2f}x" if calls else
                        f"profile: FLOPs per step {flops:.2f}x")
    evidence.append(ctx.effect_text("model"))
    evidence += ctx.findings()
    steps = ["Profile both versions and diff the operators (diagnose diff-traces on the run folder's profile/ traces)"]
    # call counts stand in for FLOPs only where no FLOPs were estimated: added casts are more calls, not more work
    more_work = (params is not None and params > 1.05) or (flops is not None and flops > 1.10) or \
                (flops is None and calls is not None and calls > 1.15)
    if more_work:
        weight = 0.9 if (params or 1) > 1.05 and (flops or 1) > 1.10 else 0.85
        what = f"{params:.2f}x the parameters" if params and params > 1.05 else f"{flops:.2f}x the FLOPs" if flops else "more ops"
        return Hypothesis("model.compute_increase", ctx.base * ctx.share("model") * weight,
                          f"The new model does more work per request: {what}", evidence,
                          steps + ["Check whether the larger architecture was intended; weigh a distilled or quantized variant"],
                          missing=ctx.missing_lab())
    weight = 0.5
    if same and replaced:
        evidence.append(f"profile: the same weights through other ops: {', '.join(totals['ops_removed'][:3])} replaced "
                        f"by {', '.join(totals['ops_added'][:5])}")
        weight = 0.8 if totals.get("delta_self_ms_per_step", 0) > 0 else 0.6
    elif flops is not None and ctx.profile:
        signals = ctx.profile["totals"]
        if signals["ops_added"]:
            evidence.append(f"profile: ops only in the new version: {', '.join(signals['ops_added'][:5])}")
        copies = signals["new_copy_ms_per_step"] - signals["old_copy_ms_per_step"]
        if copies > 0.05:
            evidence.append(f"profile: copies and casts take {copies:+.2f} ms/step more")
        weight = 0.8 if 0.9 <= flops <= 1.1 and signals["delta_self_ms_per_step"] > 0 else 0.6
    return Hypothesis("model.operator_regression", ctx.base * ctx.share("model") * weight,
                      "The new model does about the same work on slower operators", evidence, steps,
                      missing=ctx.missing_lab())


def _tie(ctx: Context) -> dict:
    """The drift stage's latency tie when it ran and found a size feature that drives latency, else {}."""
    tie = (ctx.drift or {}).get("latency_tie") or {}
    return tie if tie.get("status") == "ok" else {}


def input_distribution_shift(ctx: Context) -> Hypothesis | None:
    """The factorial's input effect, and the drift stage's size feature tied to latency, point at the requests."""
    share = ctx.share("input")
    tie = _tie(ctx)
    tie_share = max(0.0, min(1.0, tie["share"])) if tie.get("significant") and tie.get("share") is not None else 0.0
    oo, on = ctx.cells.get("old_model/old_requests", {}), ctx.cells.get("old_model/new_requests", {})
    size_ratio = _ratio(oo.get("input_elements_mean"), on.get("input_elements_mean"))
    evidence = [ctx.effect_text("input")]
    if tie:
        evidence.append(f"tied to latency: {tie['text']}")
    # size features first: they are what moves latency
    drifted = sorted((ctx.drift or {}).get("drifted", []), key=lambda f: (not f.get("derived"), f["feature"]))
    evidence += [f"drift: {f['text']}" for f in drifted[:4]]
    if ctx.drift is None:  # a run folder without the drift stage: fall back on the request logs' lengths
        for column, old_col in ctx.requests.get("old", {}).get("columns", {}).items():
            new_col = ctx.requests.get("new", {}).get("columns", {}).get(column)
            if new_col and "mean_len" in old_col and "mean_len" in new_col and old_col["mean_len"]:
                r = new_col["mean_len"] / old_col["mean_len"]
                if abs(r - 1) > 0.1:
                    drifted.append({"feature": column})
                    evidence.append(f"column {column!r}: mean length {old_col['mean_len']:.1f} -> "
                                    f"{new_col['mean_len']:.1f} ({r:.2f}x)")
    if size_ratio and abs(size_ratio - 1) > 0.05:
        evidence.append(f"through the old model's preprocessing the new requests are {size_ratio:.2f}x the input elements")
    explained = max(share, tie_share)
    if explained == 0 and not drifted:
        return None
    weight = 0.95 if share > 0 and tie_share > 0.5 else 0.9
    if tie and explained > 0:
        ratio = f" ({tie['mix_ratio']:.1f}x)" if tie.get("mix_ratio") else ""
        summary = (f"The requests changed: {tie['feature']} moved{ratio}, and under the new mix the old model is "
                   f"{tie['shift_ms']:+.1f} ms slower at p50, {100 * tie['share']:.0f}% of the change"
                   if tie.get("share") is not None else f"The requests changed: {tie['feature']} moved{ratio}")
    elif explained > 0:
        summary = "The requests changed: the old model is slower on the new requests too"
    else:
        summary = "The requests drifted, but that explains no significant part of the change"
    return Hypothesis(
        "input.distribution_shift", ctx.base * explained * weight, summary, evidence,
        ["Compare request size distributions (lengths, shapes) before and after the deploy (diagnose drift)",
         "Check which clients changed what they send; cap or bucket request sizes if the new mix is here to stay"],
    )


def _kind_text(col: dict) -> str:
    return col["kind"] + ("/" + col["dtype"] if "dtype" in col else "")


def _signature_change(ctx: Context) -> str | None:
    """What the same (old) model was fed from each request log, when the dtypes differ: the benchmark's own view
    of a schema change, which replays requests as logged."""
    oo, on = ctx.cells.get("old_model/old_requests", {}), ctx.cells.get("old_model/new_requests", {})
    old_sig, new_sig = oo.get("input_signature"), on.get("input_signature")
    if not old_sig or not new_sig:
        return None
    dtypes = [re.findall(r"([a-z]+\d*)\[", sig) for sig in (old_sig, new_sig)]
    if dtypes[0] == dtypes[1]:
        return None
    return f"the old model is fed {old_sig} from the old requests and {new_sig} from the new"


def input_schema_change(ctx: Context) -> Hypothesis | None:
    """Column by column, from the drift stage (or, for older run folders, from the request logs' descriptions)."""
    broken = ctx.attribution.get("unavailable", {}).get("old_model/new_requests")
    if ctx.drift is not None:
        changes = [c for c in ctx.drift.get("schema_changes", []) if c.get("change") != "length"]
        expected = ctx.drift.get("expected_schema", [])
        evidence = [f"schema: {c['text']}" for c in changes] + [f"the model expects: {c['text']}" for c in expected]
    else:
        old_cols = ctx.requests.get("old", {}).get("columns", {})
        new_cols = ctx.requests.get("new", {}).get("columns", {})
        added, removed = sorted(set(new_cols) - set(old_cols)), sorted(set(old_cols) - set(new_cols))
        expected = []
        evidence = ([f"columns added: {', '.join(added)}"] if added else []) + \
                   ([f"columns removed: {', '.join(removed)}"] if removed else []) + \
                   [f"column {c!r}: {_kind_text(old_cols[c])} -> {_kind_text(new_cols[c])}"
                    for c in sorted(set(old_cols) & set(new_cols)) if _kind_text(old_cols[c]) != _kind_text(new_cols[c])]
    if not evidence:
        return None
    if broken:
        evidence.append(f"the old model cannot serve the new requests: {broken}")
    measured = _signature_change(ctx)
    if measured:
        evidence.append(f"measured: {measured}; {ctx.effect_text('input')}")
    weight = max(ctx.share("input"), 0.6 if broken else 0.45 if expected else 0.2)
    columns = sorted({c["column"] for c in (ctx.drift or {}).get("schema_changes", []) + list(expected)})
    summary = "The request schema changed" + (f": {', '.join(columns[:5])}" if columns else "")
    return Hypothesis("input.schema_change", ctx.base * weight, summary, evidence,
                      ["Check the client and feature pipeline changes that altered the schema",
                       "Validate requests against the model's expected schema at the edge (manifest inputs.schema)"])


RUNTIMES = {"python": "torch eager", "torchscript": "TorchScript", "exported": "torch.export", "onnx": "ONNX Runtime"}


def library_change(ctx: Context) -> Hypothesis | None:
    """The runtime under the model changed: another artifact format (torch eager, TorchScript, torch.export,
    ONNX Runtime) between the versions, measured in the lab; or library versions that differ between sample sets
    (only with --allow-env-mismatch)."""
    old_fmt, new_fmt = ctx.versions["old"].get("format"), ctx.versions["new"].get("format")
    libs = [line for line in ctx.environment_diff if line.startswith(("libraries", "python"))]
    if old_fmt != new_fmt and old_fmt and new_fmt:
        old_rt, new_rt = RUNTIMES.get(old_fmt, old_fmt), RUNTIMES.get(new_fmt, new_fmt)
        evidence = [f"the runtime changed: {old_rt} ({old_fmt}) -> {new_rt} ({new_fmt})"]
        same_model = bool(same_weights(ctx.versions["old"], ctx.versions["new"]))
        if same_model:
            evidence.append("the same weights in both (parameters, else weight bytes): the model is the same, its "
                            "runtime is not")
        evidence += [ctx.effect_text("model")] + libs + ctx.findings()
        return Hypothesis(
            "runtime.library_change", ctx.base * ctx.share("model") * (0.9 if same_model else 0.6),
            f"The new version runs on another runtime: {old_rt} -> {new_rt}", evidence,
            ["Serve the new model in the old runtime (or tune the new one's session options) and re-benchmark"],
            missing=ctx.missing_lab())
    if not libs:
        return None
    return Hypothesis("runtime.library_change", ctx.base * 0.5, "The two sample sets ran on different library versions",
                      libs, ["Re-measure both versions in one environment"])


def _environment_hypothesis(ctx: Context, cause: str, weight: float, summary: str, evidence: list[str],
                            steps: list[str]) -> Hypothesis:
    """An environment cause, scaled by production's verdict (`Context.env_base`), with production's latency and
    which of its parts grew as evidence."""
    grew = ctx.grew()
    if grew:
        evidence = evidence + [f"production's {grew} time grew" + (
            ", compute steady: the requests waited, they did not get slower to serve" if grew == "queue" else "")]
    return Hypothesis(cause, ctx.env_base * weight, summary, evidence + ctx.production_lines(), steps,
                      missing=ctx.missing_production())


def cpu_throttling(ctx: Context) -> Hypothesis | None:
    """The pods' CFS throttling ratio after the deploy against before (kubernetes-mixin's CPUThrottlingHigh is 25%)."""
    ratio = ctx.signal("prometheus").get("throttled_ratio") or {}
    before, after = ratio.get("before") or 0.0, ratio.get("after")
    if after is None or after < 0.1 or after - before < 0.05:
        return None
    weight = min(0.9, 0.3 + 1.5 * (after - before))
    return _environment_hypothesis(
        ctx, "runtime.cpu_throttling", weight,
        f"The pods were CPU-throttled in {100 * after:.0f}% of CFS periods after the deploy ({100 * before:.0f}% before)",
        ctx.signal_summary("prometheus"),
        ["Compare the new version's CPU use per request with the pod's CPU limit", "Raise the CPU limit or lower threads"])


def memory_pressure(ctx: Context) -> Hypothesis | None:
    """OOM kills and restarts of the serving pods (Kubernetes, Prometheus), or OOM kills and low headroom in the
    benchmark's cgroup."""
    k8s, cgroup, prom = ctx.signal("kubernetes"), ctx.signal("cgroup"), ctx.signal("prometheus")
    oom = max(k8s.get("oom_kills") or 0, prom.get("oom_events") or 0) + (cgroup.get("oom_kills") or 0)
    restarts = max(k8s.get("restarts") or 0, prom.get("restarts") or 0)
    headroom = min((h for h in (cgroup.get("memory_headroom"), prom.get("memory_headroom_after")) if h is not None),
                   default=None)
    if oom:
        weight = 0.85
    elif restarts:
        weight = 0.5
    elif headroom is not None and headroom < 0.1:
        weight = 0.4
    else:
        return None
    return _environment_hypothesis(
        ctx, "runtime.memory_pressure", weight,
        f"{oom} OOM kill(s)" + (f" and {restarts} restart(s)" if restarts else "") + " around the new version"
        if oom else f"{restarts} restart(s) of the serving pods" if restarts else "Memory is close to its limit",
        ctx.signal_summary("kubernetes") + ctx.signal_summary("prometheus") + ctx.signal_summary("cgroup"),
        ["Compare the new version's peak memory with the pod's memory limit", "Raise the limit or lower the batch size"])


def gpu_clock_throttling(ctx: Context) -> Hypothesis | None:
    """From nvidia-smi or NVML samples, else from the DCGM series in Prometheus."""
    gpu = ctx.signal("gpu") or {"clock_drop_pct": (ctx.signal("prometheus").get("gpu") or {}).get("clock_drop_pct"),
                                "throttle_reasons": (ctx.signal("prometheus").get("gpu") or {}).get("throttle_reasons_after")}
    drop = gpu.get("clock_drop_pct") or 0.0
    reasons = gpu.get("throttle_reasons") or []
    if drop < 10 and not reasons:
        return None
    # a drop of 25% counts fully; the driver's own throttle reasons (heat, power cap) say why it clocked down
    weight = min(0.9, max(drop, 0) / 25 + (0.3 if reasons else 0.0)) if drop >= 10 else 0.3
    return _environment_hypothesis(
        ctx, "gpu.clock_throttling", weight,
        f"The GPU clocked down {drop:.0f}%" + (f" ({', '.join(reasons)})" if reasons else ""),
        ctx.signal_summary("gpu") or ctx.signal_summary("prometheus"),
        ["Check GPU temperature, power cap and cooling on the node", "Compare SM clocks before and after the deploy"])


def gpu_contention(ctx: Context) -> Hypothesis | None:
    """Other processes on the GPU (live NVML names them), or a GPU already saturated before the deploy at steady
    clocks (nvidia-smi or NVML samples, else dcgm-exporter's series in Prometheus)."""
    gpu = ctx.signal("gpu")
    foreign = gpu.get("foreign_processes") or 0
    busy_before = [g for g in gpu.get("gpus", []) if g.get("saturated") and (g.get("util_pct_before") or 0) >= 90]
    dcgm = ctx.signal("prometheus").get("gpu") or {}
    dcgm_busy = not gpu and (dcgm.get("util_pct") or {}).get("before") is not None and \
        dcgm["util_pct"]["before"] >= 90 and (dcgm.get("clock_drop_pct") or 0.0) < 10
    if not foreign and not busy_before and not dcgm_busy:
        return None
    summary = f"{foreign} other process(es) share the GPU" if foreign else \
        "The GPU was already saturated before the deploy: another workload may share it"
    evidence = ctx.signal_summary("gpu")
    if dcgm_busy:
        util = dcgm["util_pct"]
        after = f", {util['after']:.0f}% after" if util.get("after") is not None else ""
        evidence = [f"prometheus: DCGM GPU utilization {util['before']:.0f}% before the deploy{after}, SM clock "
                    f"steady ({dcgm.get('clock_drop_pct') or 0:+.0f}% drop)"] + evidence
    return _environment_hypothesis(ctx, "gpu.contention", 0.6 if foreign else 0.45, summary, evidence,
                                   ["Find what else runs on the node's GPU (nvidia-smi, the pod list)"])


def capacity(ctx: Context) -> Hypothesis | None:
    """Production's queue time grew while its compute time held: the requests waited for a free model instance,
    they were not slower to serve. Too few replicas or instances for the traffic (more traffic, or fewer or
    smaller pods than before), or a batcher's delay; not the model. Needs a server that splits queue from
    compute (Triton, TorchServe, OVMS, ...). A two-deployment load test whose new side's queue alone grew under
    the same schedule (the `loadtest` signal) shows the same without production's metrics."""
    grew = ctx.grew()
    load = ctx.signal("loadtest")
    queued = any(f["cause"] == "serving.capacity" for f in load.get("findings", []))
    if grew not in ("queue", "both"):
        if not queued:
            return None
        regressed = (load.get("comparison") or {}).get("verdict") == "regression"
        return Hypothesis("serving.capacity", ctx.env_base * (0.75 if regressed else 0.45),
                          "Under the same load, the new deployment's requests waited longer in its queue while its "
                          "compute held: it has less capacity at that rate",
                          ctx.signal_summary("loadtest") + ctx.production_lines(),
                          ["Compare the two deployments' replicas, instances per model and dynamic batching",
                           "Find the highest rate each keeps under the SLO: diagnose loadtest URL --find-max --slo "
                           "p99=200ms"])
    p = ctx.production
    queue, compute = p.parts["queue"], p.parts["compute"]
    evidence = [f"queue {queue['before']:.3g} -> {queue['after']:.3g} ms, compute {compute['before']:.3g} -> "
                f"{compute['after']:.3g} ms ({queue['metric']}, {compute['metric']})"]
    before, after = (p.requests or {}).get("before"), (p.requests or {}).get("after")
    traffic = _ratio(before, after)
    weight = 0.85 if grew == "queue" else 0.4  # both grew: slower compute queues requests too
    if traffic and traffic > 1.2:
        evidence.append(f"requests served {before:,} -> {after:,} in the hour ({traffic:.2f}x the traffic)")
        weight = min(0.9, weight + 0.05)
    if queued:  # the load test saw it too, under a schedule both deployments shared
        evidence += ctx.signal_summary("loadtest")
        weight = min(0.9, weight + 0.05)
    throttled = (ctx.signal("prometheus").get("throttled_ratio") or {}).get("after") or 0.0
    restarts = max(ctx.signal("prometheus").get("restarts") or 0, ctx.signal("kubernetes").get("restarts") or 0)
    if throttled >= 0.1 or restarts:
        # a throttled or restarting pod serves fewer requests at a time: the queue follows from that cause
        evidence.append(f"but the pods were {'CPU-throttled' if throttled >= 0.1 else 'restarting'} after the deploy "
                        "too: the queue may follow from that")
        weight *= 0.5
    summary = ("Production's requests waited longer in the queue while compute held steady: too little capacity "
               "for the traffic" if grew == "queue" else
               "Production's queue grew with its compute time: slower requests back up the queue")
    return Hypothesis("serving.capacity", ctx.env_base * weight, summary, evidence + ctx.production_lines(),
                      ["Compare replicas, instances per model and the dynamic batcher's settings before and after the "
                       "deploy", "Scale out, or cap the batcher's queue delay"])


def _benchmarked(ctx: Context) -> str | None:
    return "a benchmark (--no-benchmark): the lab replay measures this cause" \
        if (ctx.lab_verdict or ctx.verdict) == "not_measured" else None


def _prometheus(ctx: Context) -> str | None:
    return None if ctx.signal("prometheus") else \
        "the deployment's Prometheus series (--prometheus URL, or --signals DIR with metrics.om)"


def _pods(ctx: Context) -> str | None:
    return None if ctx.signal("prometheus") or ctx.signal("kubernetes") else \
        "the serving pods' state (--signals DIR with kubernetes/*.json or metrics.om, or a cluster to read)"


def _gpu(ctx: Context) -> str | None:
    on_gpu = any(ctx.versions[side]["serving"].get("device") == "cuda" for side in ("old", "new"))
    if not on_gpu or ctx.signal("gpu") or (ctx.signal("prometheus").get("gpu") or {}).get("gpus"):
        return None
    return "GPU readings (NVML here, --signals DIR with nvidia-smi.csv, or DCGM series in Prometheus)"


@dataclass(frozen=True)
class Rule:
    """A cause rule: the cause ids it may return, and the check that reads the Context."""

    causes: tuple[str, ...]
    check: Callable[[Context], Hypothesis | None]
    needs: Callable[[Context], str | None] | None = None  # what evidence is absent that it needs, or None

    @property
    def name(self) -> str:
        return getattr(self.check, "__name__", type(self.check).__name__)


# The one registry of causes: a new cause is a rule function plus one line here. The order is only the order
# in which rules run; results are sorted by score, then cause id.
RULES: tuple[Rule, ...] = (
    Rule(("preprocessing.change",), preprocessing_change, _benchmarked),
    Rule(("serving.config_change",), serving_config_change, _benchmarked),
    Rule(("model.precision_change",), precision_change, _benchmarked),
    Rule(("model.compute_increase", "model.operator_regression"), model_change, _benchmarked),
    Rule(("input.distribution_shift",), input_distribution_shift, _benchmarked),
    Rule(("input.schema_change",), input_schema_change),
    Rule(("runtime.library_change",), library_change, _benchmarked),
    Rule(("runtime.cpu_throttling",), cpu_throttling, _prometheus),
    Rule(("runtime.memory_pressure",), memory_pressure, _pods),
    Rule(("gpu.clock_throttling",), gpu_clock_throttling, _gpu),
    Rule(("gpu.contention",), gpu_contention, _gpu),
    Rule(("serving.capacity",), capacity),
)


def causes(rules: tuple[Rule, ...] | None = None) -> tuple[str, ...]:
    """Every cause id the rules may return, in registry order."""
    return tuple(cause for rule in (RULES if rules is None else rules) for cause in rule.causes)


CAUSES = causes()


def rank(ctx: Context, rules: tuple[Rule, ...] | None = None) -> tuple[list[Hypothesis], list[RuleError], list[dict]]:
    """Every rule's hypothesis, clipped to [0, 1] (at most NOT_SIGNIFICANT_CAP without a settled regression),
    sorted by score then cause id; a rule that raises or returns a cause it did not register is an error; a rule
    that found nothing while evidence it needs is absent is `unjudged` ({cause, missing}, by cause id)."""
    found, errors, unjudged = [], [], []
    for rule in RULES if rules is None else rules:
        try:
            hypothesis = rule.check(ctx)
            if hypothesis is None and rule.needs is not None and (missing := rule.needs(ctx)):
                unjudged += [{"cause": cause, "missing": missing} for cause in rule.causes]
            if hypothesis is not None and hypothesis.cause not in rule.causes:
                raise ValueError(f"returned cause id {hypothesis.cause!r}, not one of {', '.join(rule.causes)}")
        except Exception as exc:  # one broken rule never hides the others' findings
            errors.append(RuleError(rule.name, rule.causes, f"{type(exc).__name__}: {first_line(exc)}"))
            continue
        if hypothesis is None:
            continue
        score = max(0.0, min(1.0, hypothesis.score))
        if ctx.verdict != "regression":
            score = min(score, NOT_SIGNIFICANT_CAP)
        steps = tuple(hypothesis.next_steps) + tuple(runnable(hypothesis.cause, ctx))  # the words, then commands
        found.append(replace(hypothesis, score=round(score, 3), next_steps=steps))
    return sorted(found, key=lambda h: (-h.score, h.cause)), errors, sorted(unjudged, key=lambda u: u["cause"])
