"""Next steps you can run: per cause, the command or query that confirms or fixes it, filled in from the run.

A rule says in words what to check; these are the same checks as commands a person on call can paste: the
compare that times the old thread count or preprocessing on the new model, the variant to try, the drift of
the two logs, the trace diff, the `kubectl` that reads the pods' limits and the PromQL that shows the series
behind a signal. Values come from the run (model, versions, registry, the deployment's namespace, selector
and pods) and are shell-quoted; nothing here runs anything.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

EMBEDDED = "embedded registry"  # the registry label of the embedded one needs no --registry


def _q(value) -> str:
    return shlex.quote(str(value))


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Run:
    """The run's names, and the deployment the signals came from, as command arguments."""

    def __init__(self, ctx):
        run = ctx.run or {}
        self.model, self.old, self.new = run.get("model"), run.get("old"), run.get("new")
        registry = run.get("registry") or ""
        self.registry = "" if not registry or registry.startswith(EMBEDDED) else f" --registry {_q(registry)}"
        self.dir = run.get("dir")
        self.deployment = (ctx.versions.get("new") or {}).get("deployment") or {}
        target = (ctx.signal("prometheus") or {}).get("target") or {}
        self.pod_regex = target.get("pod_regex") or self.deployment.get("pod_regex")
        self.namespace = self.deployment.get("namespace") or target.get("namespace")
        self.profile = ctx.profile

    def versions(self) -> str:
        return f"{self.registry} --model {_q(self.model)} --old {_q(self.old)} --new {_q(self.new)}"

    def kubectl(self, columns: str) -> str | None:
        selector = self.deployment.get("selector")
        if not selector:
            return None
        namespace = f" -n {_q(self.namespace)}" if self.namespace else ""
        return f"$ kubectl{namespace} get pods -l {_q(selector)} -o {_q('custom-columns=' + columns)}"

    def matchers(self) -> str:
        parts = []
        if self.namespace:
            parts.append(f"namespace={_promql_string(self.namespace)}")
        if self.pod_regex:
            parts.append(f"pod=~{_promql_string(self.pod_regex)}")
        return ", ".join(parts)


def _with(base: str, extra: str) -> str:
    return "{" + ", ".join(p for p in (base, extra) if p) + "}"


def _old_preprocess(run: _Run) -> list[str]:
    return [f"$ diagnose compare{run.versions()} --verify   # times {run.new} with {run.old}'s preprocessing "
            f"({run.old}-preprocess) beside it"]


def _old_config(run: _Run) -> list[str]:
    return [f"$ diagnose compare{run.versions()} --verify   # times {run.new} with {run.old}'s threads "
            f"({run.old}-threads) beside it"]


def _precision(run: _Run) -> list[str]:
    return [f"$ diagnose optimize {_q(run.new)}{run.registry} --model {_q(run.model)} --variants torch-int8,ort-int8"]


def _model(run: _Run) -> list[str]:
    traces = (run.profile or {}).get("traces") or {}
    if run.dir and traces.get("old") and traces.get("new"):
        old, new = (Path(run.dir) / traces[side] for side in ("old", "new"))
        return [f"$ diagnose diff-traces {_q(old)} {_q(new)}"]
    return [f"$ diagnose profile {_q(version)}{run.registry} --model {_q(run.model)}" for version in (run.old, run.new)]


def _inputs(run: _Run) -> list[str]:
    return [f"$ diagnose drift{run.versions()}"]


def _library(run: _Run) -> list[str]:
    return ["$ python -m pip list --format=freeze > libraries.txt   # in each environment, then diff the two files"]


def _cpu(run: _Run) -> list[str]:
    steps = [run.kubectl("POD:.metadata.name,CPU_LIMIT:.spec.containers[*].resources.limits.cpu,"
                         "CPU_REQUEST:.spec.containers[*].resources.requests.cpu")]
    m = run.matchers()
    steps.append(f"PromQL: sum by (pod) (rate(container_cpu_cfs_throttled_periods_total{_with(m, '')}[5m])) / "
                 f"sum by (pod) (rate(container_cpu_cfs_periods_total{_with(m, '')}[5m]))")
    return [s for s in steps if s]


def _memory(run: _Run) -> list[str]:
    steps = [run.kubectl("POD:.metadata.name,MEMORY_LIMIT:.spec.containers[*].resources.limits.memory,"
                         "RESTARTS:.status.containerStatuses[*].restartCount,"
                         "LAST_EXIT:.status.containerStatuses[*].lastState.terminated.reason")]
    m = run.matchers()
    working_set, limit = _with(m, 'container!=""'), _with(m, 'resource="memory"')
    steps.append(f"PromQL: max by (pod) (container_memory_working_set_bytes{working_set}) / "
                 f"max by (pod) (kube_pod_container_resource_limits{limit})")
    return [s for s in steps if s]


def _gpu_clocks(run: _Run) -> list[str]:
    m = run.matchers()
    return ["$ nvidia-smi -q -d PERFORMANCE,CLOCK,TEMPERATURE,POWER   # on the node: throttle reasons, clocks, power cap",
            f"PromQL: avg by (pod) (DCGM_FI_DEV_SM_CLOCK{_with(m, '')})"]


def _gpu_contention(run: _Run) -> list[str]:
    steps = ["$ nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv   # on the node"]
    listing = run.kubectl("POD:.metadata.name,NODE:.spec.nodeName")
    return steps + ([listing + "   # then: kubectl get pods -A -o wide --field-selector spec.nodeName=NODE"]
                    if listing else [])


def _capacity(run: _Run) -> list[str]:
    selector = run.deployment.get("selector")
    namespace = f" -n {_q(run.namespace)}" if run.namespace else ""
    steps = [f"$ kubectl{namespace} get deployments,hpa -l {_q(selector)} -o wide   # replicas and autoscaling"
             ] if selector else []
    m = run.matchers()
    return steps + [f"PromQL: sum(rate(nv_inference_request_success{_with(m, '')}[5m]))   # request rate (Triton's "
                    "name; use your server's request counter)"]


# cause id -> the commands for it (a cause without an entry keeps its words only)
COMMANDS: dict[str, Callable[[_Run], list[str]]] = {
    "preprocessing.change": _old_preprocess,
    "serving.config_change": _old_config,
    "model.precision_change": _precision,
    "model.compute_increase": _model,
    "model.operator_regression": _model,
    "input.distribution_shift": _inputs,
    "input.schema_change": _inputs,
    "runtime.library_change": _library,
    "runtime.cpu_throttling": _cpu,
    "runtime.memory_pressure": _memory,
    "gpu.clock_throttling": _gpu_clocks,
    "gpu.contention": _gpu_contention,
    "serving.capacity": _capacity,
}


def runnable(cause: str, ctx) -> list[str]:
    """The commands and queries for `cause` in this run; [] when the run does not name its model and versions."""
    build = COMMANDS.get(cause)
    run = _Run(ctx)
    if build is None or not (run.model and run.old and run.new):
        return []
    return build(run)
