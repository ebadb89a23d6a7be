"""Hypothesis ranking: which evidence ranks which cause, capped when nothing is significant, sorted stably."""

from __future__ import annotations

from dataclasses import replace

import pytest

from diagnose.core.report import Production
from diagnose.hypotheses import CAUSES, Context, Hypothesis, Rule
from diagnose.hypotheses import rank as rank_with_errors


def rank(ctx, rules=None):
    """The ranked hypotheses, after checking that no rule failed."""
    ranked, errors, _ = rank_with_errors(ctx, rules)
    assert errors == []
    return ranked


def effect(ms, share, significant=True):
    return {"effect_ms": ms, "ci_ms": [ms - 1, ms + 1], "effect_pct": ms * 10, "share": share, "significant": significant}


def version(**over):
    base = {"artifact": "model.pt", "artifact_sha256": "a" * 64, "param_count": 1000, "preprocess": "pre:fn",
            "preprocess_sha256": "p" * 64, "serving": {"device": "cpu", "batch_size": 1, "threads": 2, "precision": "fp32"}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def context(verdict="regression", old=None, new=None, model=(10, 0.95), inputs=(0.5, 0.05), requests=None, cells=None,
            env=()):
    return Context(
        verdict=verdict, delta={}, attribution={"model": effect(*model), "input": effect(*inputs, significant=inputs[1] > 0.2),
                                                "interaction": None, "unavailable": {}},
        versions={"old": old or version(), "new": new or version()},
        requests=requests or {"old": {"columns": {"x": {"kind": "list", "mean_len": 10}}},
                              "new": {"columns": {"x": {"kind": "list", "mean_len": 10}}}},
        cells=cells or {}, environment_diff=list(env),
    )


def test_preprocessing_change_with_larger_inputs_ranks_first():
    ctx = context(new=version(preprocess_sha256="q" * 64),
                  cells={"old_model/old_requests": {"input_elements_mean": 40, "preprocess_p50_ms": 0.2,
                                                    "input_signature": "int64[1, 20]"},
                         "new_model/old_requests": {"input_elements_mean": 256, "preprocess_p50_ms": 0.2,
                                                    "input_signature": "int64[1, 128]"}})
    ranked = rank(ctx)
    assert ranked[0].cause == "preprocessing.change" and ranked[0].score > 0.85
    assert any("6.40x the model input" in line for line in ranked[0].evidence)


def test_larger_model_is_compute_increase_same_size_is_operator_regression():
    bigger = rank(context(new=version(artifact_sha256="b" * 64, param_count=4000)))
    assert bigger[0].cause == "model.compute_increase"
    same = rank(context(new=version(artifact_sha256="b" * 64)))
    assert same[0].cause == "model.operator_regression" and same[0].score < bigger[0].score


def test_fewer_threads_is_serving_config_change():
    ranked = rank(context(new=version(serving={"threads": 1})))
    assert ranked[0].cause == "serving.config_change" and "threads 2 -> 1" in ranked[0].summary


def test_precision_change():
    ranked = rank(context(old=version(serving={"precision": "fp16"})))
    assert ranked[0].cause == "model.precision_change"


def test_input_shift_ranks_by_input_share():
    ctx = context(model=(1, 0.1, False), inputs=(9, 0.9),
                  requests={"old": {"columns": {"text": {"kind": "text", "mean_len": 50}}},
                            "new": {"columns": {"text": {"kind": "text", "mean_len": 200}}}})
    ranked = rank(ctx)
    assert ranked[0].cause == "input.distribution_shift" and ranked[0].score > 0.7
    assert any("4.00x" in line for line in ranked[0].evidence)


def test_schema_change_names_columns():
    ctx = context(requests={"old": {"columns": {"a": {"kind": "number", "dtype": "float32"}}},
                            "new": {"columns": {"a": {"kind": "number", "dtype": "float64"}, "b": {"kind": "text"}}}})
    hyp = next(h for h in rank(ctx) if h.cause == "input.schema_change")
    assert "columns added: b" in hyp.evidence and any("float32 -> number/float64" in e for e in hyp.evidence)


@pytest.mark.parametrize("verdict", ["no_regression", "inconclusive", "improvement"])
def test_nothing_significant_caps_scores(verdict):
    ranked = rank(context(verdict=verdict, new=version(artifact_sha256="b" * 64, param_count=9000, serving={"threads": 1})))
    assert ranked and all(h.score <= 0.5 for h in ranked)


def test_sorted_by_score_then_cause_id():
    ranked = rank(context(new=version(artifact_sha256="b" * 64, param_count=9000, serving={"threads": 1, "batch_size": 8},
                                      preprocess_sha256="z" * 64), env=["libraries: {'torch': '1'} -> {'torch': '2'}"]))
    keys = [(-h.score, h.cause) for h in ranked]
    assert keys == sorted(keys) and len(ranked) >= 4


def test_unknown_cause_id_is_refused():
    """A rule may only return the cause ids it registered; anything else is a recorded rule error, not a cause."""
    rules = (Rule(("model.compute_increase",), lambda ctx: Hypothesis("model.magic", 0.5, "x")),)
    ranked, errors, _ = rank_with_errors(context(), rules)
    assert ranked == [] and len(errors) == 1 and "'model.magic'" in errors[0].error
    assert len(CAUSES) == 13


def with_signals(ctx: Context, **signals) -> Context:
    ctx.signals = {name: {"status": "ok", "data": data, "summary": [f"{name} line"]} for name, data in signals.items()}
    return ctx


def production(verdict: str, pct: float = 150.0, parts: dict | None = None) -> Production:
    ci = {"regression": (120.0, 180.0), "no_regression": (-3.0, 3.0), "inconclusive": (-5.0, 30.0)}[verdict]
    return Production(source="prometheus", server="triton", server_label="Triton", metric="nv_inference_request_duration_us",
                      statistic="average", before_ms=12.0, after_ms=12.0 * (1 + pct / 100), change_pct=pct, ci_pct=ci,
                      verdict=verdict, deployed_at="2026-11-20T10:00:00Z", windows={}, change_point=None,
                      parts=parts or {}, requests={})


# each environment cause: the signals that point at it, and its weight when production regressed
ENVIRONMENT = [
    ("runtime.memory_pressure", {"kubernetes": {"oom_kills": 2, "restarts": 4}}, 0.85),
    ("runtime.cpu_throttling", {"prometheus": {"throttled_ratio": {"before": 0.02, "after": 0.45}}}, 0.9),
    ("gpu.clock_throttling", {"gpu": {"clock_drop_pct": 22.0, "throttle_reasons": ["HwThermalSlowdown"]}}, 0.9),
    ("gpu.clock_throttling", {"gpu": {"clock_drop_pct": 12.5, "throttle_reasons": ["SwPowerCap"]}}, 0.8),
    ("gpu.clock_throttling", {"gpu": {"clock_drop_pct": 15.0, "throttle_reasons": []}}, 0.6),
    ("gpu.contention", {"gpu": {"foreign_processes": 1}}, 0.6),
    ("gpu.contention", {"prometheus": {"gpu": {"util_pct": {"before": 96.0, "after": 97.0}, "clock_drop_pct": 0.4}}},
     0.45),  # dcgm-exporter alone: saturated before the deploy, clocks steady
]


@pytest.mark.parametrize("gpu", [
    {"util_pct": {"before": 55.0, "after": 97.0}, "clock_drop_pct": 0.0},  # busy only after: the new version's work
    {"util_pct": {"before": 96.0, "after": 97.0}, "clock_drop_pct": 22.0},  # clocked down: throttling, not a tenant
    {"util_pct": {"before": None, "after": 97.0}, "clock_drop_pct": None},  # nothing before the deploy
])
def test_dcgm_contention_needs_a_gpu_saturated_before_the_deploy_at_steady_clocks(gpu):
    ctx = with_signals(context(verdict="regression", model=(0.1, 0.0, False)), prometheus={"gpu": gpu})
    ctx.lab_verdict, ctx.production = "no_regression", production("regression")
    assert "gpu.contention" not in [h.cause for h in rank(ctx)]


@pytest.mark.parametrize("cause, signals, weight", ENVIRONMENT, ids=[f"{c}-{w}" for c, _, w in ENVIRONMENT])
def test_environment_cause_for_against_and_missing(cause, signals, weight):
    """For: production regressed and the lab did not: the cause leads at its full weight, with production's
    latency as evidence. Against: production held its latency: the cause cannot lead. Missing: no production
    latency: it scores lower and says what is missing."""
    def hyp(prod, lab="no_regression"):
        ctx = with_signals(context(verdict="regression" if "regression" in (lab, prod and prod.verdict) else lab,
                                   model=(0.1, 0.0, False)), **signals)
        ctx.lab_verdict, ctx.production = lab, prod
        ranked = rank(ctx)
        return ranked[0], next(h for h in ranked if h.cause == cause)

    top, found = hyp(production("regression"))
    assert top.cause == cause and found.score == pytest.approx(weight)
    assert found.evidence[-1].startswith("production average latency 12 -> 30 ms (+150%") and not found.missing
    _, against = hyp(production("no_regression", pct=1.0), lab="regression")
    assert against.score <= round(0.15 * weight, 3) + 0.001
    _, unknown = hyp(None, lab="regression")
    assert found.score / 2 < unknown.score < found.score and "production latency" in unknown.missing[0]


def test_queue_growth_with_steady_compute_is_capacity():
    """For: production's queue grew, compute held, traffic rose: capacity leads. Against: compute grew as much (the
    requests are slower to serve): it cannot lead. Missing: a server without the split: no hypothesis."""
    def ranked(parts, requests=None):
        ctx = context(verdict="regression", model=(0.1, 0.0, False))
        ctx.lab_verdict = "no_regression"
        ctx.production = replace(production("regression", parts=parts), requests=requests or {})
        return rank(ctx)

    queue = ranked({"queue": {"metric": "q", "before": 1.0, "after": 19.0},
                    "compute": {"metric": "c", "before": 11.0, "after": 11.2}}, {"before": 36000, "after": 54000})
    assert queue[0].cause == "serving.capacity" and queue[0].score == pytest.approx(0.9)
    assert any("1.50x the traffic" in line for line in queue[0].evidence)
    both = ranked({"queue": {"metric": "q", "before": 1.0, "after": 19.0},
                   "compute": {"metric": "c", "before": 11.0, "after": 30.0}})
    assert next(h for h in both if h.cause == "serving.capacity").score <= 0.4
    assert "serving.capacity" not in {h.cause for h in ranked({})}


def test_queue_growth_with_steady_compute_is_said():
    ctx = with_signals(context(model=(0.1, 0.0, False)), prometheus={"throttled_ratio": {"before": 0.02, "after": 0.45}})
    ctx.production = production("regression", parts={"queue": {"metric": "q", "before": 1.0, "after": 19.0},
                                                     "compute": {"metric": "c", "before": 11.0, "after": 11.2}})
    cpu = next(h for h in rank(ctx) if h.cause == "runtime.cpu_throttling")
    assert any("queue time grew, compute steady" in line for line in cpu.evidence)


def test_model_side_cause_cannot_lead_when_the_new_model_is_no_slower():
    """A bigger model whose factorial shows no model effect, beside throttling that production confirms."""
    ctx = with_signals(context(new=version(artifact_sha256="b" * 64, param_count=4000), model=(0.2, 0.02, False)),
                       prometheus={"throttled_ratio": {"before": 0.02, "after": 0.45}})
    ctx.lab_verdict, ctx.production = "no_regression", production("regression")
    ranked = rank(ctx)
    assert ranked[0].cause == "runtime.cpu_throttling"
    assert next(h for h in ranked if h.cause == "model.compute_increase").score == 0


def test_two_causes_at_once_both_rank_high():
    """A bigger model (lab regression, model share 0.6) and throttling that production shows: both lead."""
    ctx = with_signals(context(new=version(artifact_sha256="b" * 64, param_count=4000), model=(6, 0.6)),
                       prometheus={"throttled_ratio": {"before": 0.02, "after": 0.45}})
    ctx.lab_verdict, ctx.production = "regression", production("regression")
    top = [h.cause for h in rank(ctx)[:2]]
    assert set(top) == {"runtime.cpu_throttling", "model.compute_increase"}


def test_unjudged_causes_say_what_is_missing():
    ctx = context(verdict="not_measured", old=version(serving={"device": "cuda"}))
    ctx.lab_verdict = "not_measured"
    _, _, unjudged = rank_with_errors(ctx)
    missing = {u["cause"]: u["missing"] for u in unjudged}
    assert "Prometheus" in missing["runtime.cpu_throttling"] and "GPU readings" in missing["gpu.clock_throttling"]
    assert "--no-benchmark" in missing["preprocessing.change"] and "kubernetes" in missing["runtime.memory_pressure"]
    assert [u["cause"] for u in unjudged] == sorted(u["cause"] for u in unjudged)
    cpu_only = context()
    assert "gpu.contention" not in {u["cause"] for u in rank_with_errors(cpu_only)[2]}  # a CPU model: not applicable


def test_runtime_change_of_the_same_model_is_library_change():
    ctx = context(old=version(format="torchscript"), new=version(format="onnx", artifact_sha256="b" * 64))
    ranked = rank(ctx)
    assert ranked[0].cause == "runtime.library_change" and "TorchScript -> ONNX Runtime" in ranked[0].summary
    assert "model.operator_regression" not in {h.cause for h in ranked}
    same_runtime = rank(context(new=version(artifact_sha256="b" * 64)))
    assert "runtime.library_change" not in {h.cause for h in same_runtime}


def test_unavailable_signals_rank_nothing():
    ctx = context()
    ctx.signals = {"gpu": {"status": "unavailable", "reason": "no GPU"}, "kubernetes": {"status": "error", "reason": "403"}}
    assert not {h.cause for h in rank(ctx)} & {"gpu.clock_throttling", "gpu.contention", "runtime.memory_pressure"}


# --- next steps you can run --------------------------------------------------------------------------------------


RUN = {"model": "intent", "old": "v7", "new": "v8", "registry": "/srv/models", "dir": "/tmp/runs/r1"}


def throttled(namespace="ml-prod", selector="app=intent,tier in (web,api)", pod_regex="intent-serving-.+"):
    ctx = context(new={**version(), "deployment": {"namespace": namespace, "selector": selector}})
    ctx.run = dict(RUN)
    ctx.signals = {"prometheus": {"status": "ok", "summary": ["throttled"],
                                  "data": {"throttled_ratio": {"before": 0.02, "after": 0.45},
                                           "target": {"namespace": namespace, "pod_regex": pod_regex}}}}
    return ctx


def test_each_cause_has_commands_and_every_command_is_one_a_shell_takes():
    import shlex

    from diagnose.next_steps import COMMANDS

    assert set(COMMANDS) == set(CAUSES)  # every cause id the rules may return has runnable steps
    ctx = throttled()
    for cause in CAUSES:
        from diagnose.next_steps import runnable

        steps = runnable(cause, ctx)
        assert steps, cause
        for step in steps:
            assert step.startswith(("$ ", "PromQL: ")), step
            if step.startswith("$ "):
                shlex.split(step[2:], comments=True)  # quoted so that a shell reads it as written


def test_cpu_throttling_next_steps_read_the_limits_and_the_throttling_of_these_pods():
    ranked = rank(throttled())
    cpu = next(h for h in ranked if h.cause == "runtime.cpu_throttling")
    kubectl = next(s for s in cpu.next_steps if s.startswith("$ kubectl"))
    assert "-n ml-prod" in kubectl and "-l 'app=intent,tier in (web,api)'" in kubectl and "limits.cpu" in kubectl
    promql = next(s for s in cpu.next_steps if s.startswith("PromQL: "))
    assert 'container_cpu_cfs_throttled_periods_total{namespace="ml-prod", pod=~"intent-serving-.+"}' in promql
    assert cpu.next_steps[0] == "Compare the new version's CPU use per request with the pod's CPU limit"  # words first


def test_model_side_next_steps_name_the_versions_registry_and_traces():
    ctx = context(new=version(preprocess_sha256="q" * 64, artifact_sha256="b" * 64, param_count=4000))
    ctx.run = dict(RUN)
    ctx.profile = {"traces": {"old": "profile/old-v7/a.pt.trace.json.gz", "new": "profile/new-v8/b.pt.trace.json.gz"},
                   "findings": [], "totals": {"old_precision": {"low_precision_share": 0},
                                              "new_precision": {"low_precision_share": 0}}}
    ranked = {h.cause: h for h in rank(ctx)}
    pre = ranked["preprocessing.change"].next_steps
    assert "$ diagnose compare --registry /srv/models --model intent --old v7 --new v8 --verify" in pre[-1]
    model = ranked["model.compute_increase"].next_steps
    assert model[-1] == ("$ diagnose diff-traces /tmp/runs/r1/profile/old-v7/a.pt.trace.json.gz "
                         "/tmp/runs/r1/profile/new-v8/b.pt.trace.json.gz")
    embedded = context(new=version(preprocess_sha256="q" * 64))
    embedded.run = {**RUN, "registry": "embedded registry (/root/.cache/diagnose/registry-1)"}
    assert "--registry" not in rank(embedded)[0].next_steps[-1]


def test_without_a_deployment_there_is_no_kubectl_and_without_a_run_no_command():
    ctx = throttled(selector=None)
    ctx.versions["new"]["deployment"] = {}
    cpu = next(h for h in rank(ctx) if h.cause == "runtime.cpu_throttling")
    assert not any(s.startswith("$ kubectl") for s in cpu.next_steps)
    ctx.run = {}
    cpu = next(h for h in rank(ctx) if h.cause == "runtime.cpu_throttling")
    assert all(not s.startswith(("$ ", "PromQL: ")) for s in cpu.next_steps)


# --- every lab-side rule: evidence for it, against it, and missing ----------------------------------------------

SIZE_CELLS = {
    "old_model/old_requests": {"input_elements_mean": 40, "preprocess_p50_ms": 0.2, "input_signature": "int64[1, 20]"},
    "new_model/old_requests": {"input_elements_mean": 256, "preprocess_p50_ms": 0.2, "input_signature": "int64[1, 128]"}}
LONGER = {"old": {"columns": {"text": {"kind": "text", "mean_len": 50}}},
          "new": {"columns": {"text": {"kind": "text", "mean_len": 200}}}}
# cause -> (what the versions, requests and cells say, which side's effect carries it)
LAB_SIDE = {
    "preprocessing.change": (dict(new=version(preprocess_sha256="q" * 64), cells=SIZE_CELLS), "model"),
    "serving.config_change": (dict(new=version(serving={"threads": 1})), "model"),
    "model.precision_change": (dict(old=version(serving={"precision": "int8"})), "model"),
    "model.compute_increase": (dict(new=version(artifact_sha256="b" * 64, param_count=4000)), "model"),
    "model.operator_regression": (dict(new=version(artifact_sha256="b" * 64)), "model"),
    "runtime.library_change": (dict(old=version(format="torchscript"), new=version(format="onnx", artifact_sha256="b" * 64)),
                               "model"),
    "input.distribution_shift": (dict(requests=LONGER), "input"),
}


@pytest.mark.parametrize("cause", sorted(LAB_SIDE))
def test_lab_side_cause_for_against_and_missing(cause):
    """For: a lab regression that the cause's side explains: it leads. Against: that side explains none of the change
    (the new model is no slower on the old requests; the old model no slower on the new requests): it cannot lead,
    and scores 0. Missing: without a profile, a model-side cause scores lower (operator_regression 0.5 instead of
    up to 0.8) and says the operator-level diff is missing."""
    setup, side = LAB_SIDE[cause]
    explains, nothing = (9.5, 0.95), (0.1, 0.01, False)
    pairs = {"model": (explains, nothing), "input": (nothing, explains)} if side == "model" else \
        {"model": (nothing, explains), "input": (explains, nothing)}
    for_it = rank(context(**setup, model=pairs["model"][0], inputs=pairs["input"][0][:2]))
    assert for_it[0].cause == cause and for_it[0].score >= 0.45, for_it
    against = rank(context(**setup, model=pairs["model"][1], inputs=pairs["input"][1][:2]))
    found = next((h for h in against if h.cause == cause), None)
    assert found is None or found.score == 0 or against[0].cause != cause
    if cause.startswith(("model.", "preprocessing.")):
        assert any("profile" in line for line in for_it[0].missing)


def test_schema_change_for_against():
    """A changed dtype the old model cannot serve leads; one that changes nothing measurable stays low."""
    requests = {"old": {"columns": {"a": {"kind": "number", "dtype": "float32"}}},
                "new": {"columns": {"a": {"kind": "number", "dtype": "float64"}}}}
    ctx = context(requests=requests, model=(0.1, 0.01, False), inputs=(9.5, 0.95))
    ctx.attribution["unavailable"] = {"old_model/new_requests": "expected float32, got float64"}
    assert rank(ctx)[0].cause == "input.schema_change"
    harmless = next(h for h in rank(context(requests=requests, model=(9.5, 0.95))) if h.cause == "input.schema_change")
    assert harmless.score <= 0.2 < rank(ctx)[0].score


def test_an_a_a_context_lists_nothing_above_a_tenth():
    ranked = rank(context(verdict="no_regression", model=(0.01, 0.0, False), inputs=(0.01, 0.0)))
    assert all(h.score <= 0.1 for h in ranked)


def test_a_tiny_significant_effect_over_a_near_zero_change_explains_nothing():
    """An A/A compare with many samples: a 0.03% input effect is "significant", and over a near-zero total it is
    280% of the change; it is still noise, so no cause reads it as the requests' doing."""
    ranked = rank(context(verdict="no_regression", model=(-0.002, -1.8, False), inputs=(0.003, 2.8)))
    assert all(h.score <= 0.1 for h in ranked), ranked
    real = rank(context(verdict="no_regression", model=(0.1, 0.1, False), inputs=(0.9, 0.9)))
    assert real[0].cause == "input.distribution_shift" and real[0].score > 0.1  # 9% of the old median: no noise


def test_a_fused_op_written_out_is_operator_regression_not_more_compute():
    """The same weights, fused attention replaced by matmuls: the profiler counts FLOPs for the matmuls but none for
    the fused op, so the FLOP ratio is not more work."""
    ctx = context(new=version(artifact_sha256="b" * 64))
    ctx.profile = {"findings": [], "totals": {
        "old_precision": {"low_precision_share": 0}, "new_precision": {"low_precision_share": 0},
        "old_flops_per_step": 2.0e8, "new_flops_per_step": 2.75e8, "old_calls_per_step": 227, "new_calls_per_step": 331,
        "ops_added": ["aten::bmm", "aten::_softmax"], "ops_removed": ["aten::scaled_dot_product_attention"],
        "delta_self_ms_per_step": 2.0, "old_copy_ms_per_step": 0.0, "new_copy_ms_per_step": 0.1}}
    ranked = rank(ctx)
    assert ranked[0].cause == "model.operator_regression" and ranked[0].score >= 0.75
    assert any("scaled_dot_product_attention replaced by aten::bmm" in line for line in ranked[0].evidence)
    bigger = context(new=version(artifact_sha256="b" * 64, param_count=4000))
    bigger.profile = ctx.profile
    assert rank(bigger)[0].cause == "model.compute_increase"  # more parameters is more work, whatever the ops


def test_preprocessing_with_one_request_log_reads_the_diagonal_cell():
    ctx = context(new=version(preprocess_sha256="q" * 64),
                  cells={"old_model/old_requests": {"input_elements_mean": 1024, "input_signature": "float32[8, 1, 32, 32]"},
                         "new_model/new_requests": {"input_elements_mean": 4096, "input_signature": "float32[8, 1, 64, 64]"}})
    ctx.requests["identical"] = True
    top = rank(ctx)[0]
    assert top.cause == "preprocessing.change" and top.score > 0.85 and any("4.00x the model input" in e for e in top.evidence)


def test_a_faster_side_explains_no_slowdown():
    """An improvement: the model effect is negative with a share of the (negative) change; it explains no slowdown."""
    ctx = context(verdict="improvement", new=version(artifact_sha256="b" * 64), model=(-5.0, 1.0))
    assert all(h.score == 0 for h in rank(ctx))


@pytest.mark.parametrize("queue, compute, grew", [
    ((0.9, 1.2), (13.0, 29.7), "compute"),  # the queue's +0.3 ms is no part of a +17 ms rise
    ((0.8, 15.1), (9.6, 9.8), "queue"),
    ((2.0, 9.0), (10.0, 20.0), "both"),
    ((1.0, 1.05), (10.0, 10.2), None),
])
def test_a_part_grew_when_it_carries_a_share_of_the_rise(queue, compute, grew):
    parts = {"queue": {"before": queue[0], "after": queue[1]}, "compute": {"before": compute[0], "after": compute[1]}}
    p = replace(production("regression"), before_ms=queue[0] + compute[0], after_ms=queue[1] + compute[1], parts=parts)
    assert p.grew() == grew
