"""Production latency from the serving system's own metrics: one `Preset` per serving system, in `PRESETS`.

Each preset names the series a server exports for its request latency, their kind and unit:

- `histogram`: `<metric>_bucket` (with `le`), quantiles as histogram_quantile computes them;
- `summary`: `<metric>{quantile="0.5"|"0.99"}`, the quantiles the server itself computed (a mean over the
  window's points and the deployment's series: summary quantiles cannot be aggregated exactly);
- `counters`: a cumulative time counter and a request counter (Triton, TorchServe), which give only an
  average: increase(time) / increase(requests) over each window, reset-aware.

`parts` name the series of the request's stages where the server splits them (queue, compute, pre- and
postprocess): queue growth with steady compute points at capacity or contention, compute growth at the model,
the runtime or the GPU. A part is read with the same kind and unit as the preset's total.

Which preset: the first in `candidates(user_metric)` whose series exist for the deployment's pods: the user's
`latency_metric` first (its kind found from the series: `_bucket` -> histogram, a `quantile` label ->
summary, `_sum` and `_count` -> counters; its unit from the name's suffix, `unit_to_ms`), then `PRESETS` in
order, the generic HTTP histograms last, and when none of them has series, a histogram or summary of the pods
whose name says it times something (`discover`: vLLM, TGI, Ray Serve, a team's own service). Nothing registers
at import time. docs/signals.md ("Production
latency: serving systems") has the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

HISTOGRAM, SUMMARY, COUNTERS = "histogram", "summary", "counters"
US, MS, S = 0.001, 1.0, 1000.0  # milliseconds per unit


@dataclass(frozen=True)
class Preset:
    name: str                 # the preset's id, `server` in the evidence
    label: str                # the server as the summary line names it
    kind: str                 # HISTOGRAM, SUMMARY or COUNTERS
    metric: str               # the total's base name (COUNTERS: the time counter's sample name)
    to_ms: float              # milliseconds per unit of the series
    count: str | None = None  # COUNTERS: the request counter's sample name
    parts: tuple[tuple[str, str], ...] = ()  # (role, base name / time counter) of the stages

    def series_names(self) -> tuple[str, ...]:
        """The sample names read for this preset (its total and parts)."""
        names: list[str] = []
        for base in (self.metric, *(m for _, m in self.parts)):
            names.extend(sample_names(base, self.kind))
        if self.count:
            names.append(self.count)
        return tuple(dict.fromkeys(names))


def sample_names(base: str, kind: str) -> tuple[str, ...]:
    if kind == HISTOGRAM:
        return (f"{base}_bucket", f"{base}_count", f"{base}_sum")
    if kind == SUMMARY:
        return (base, f"{base}_count", f"{base}_sum")
    return (base,)


PRESETS: tuple[Preset, ...] = (
    # Triton: its summaries (quantiles, when --metrics-config summary_latencies=true) before its counters
    Preset("triton_summary", "Triton", SUMMARY, "nv_inference_request_summary_us", US,
           parts=(("queue", "nv_inference_queue_summary_us"), ("compute", "nv_inference_compute_infer_summary_us"))),
    Preset("triton", "Triton", COUNTERS, "nv_inference_request_duration_us", US, count="nv_inference_request_success",
           parts=(("queue", "nv_inference_queue_duration_us"), ("compute", "nv_inference_compute_infer_duration_us"))),
    Preset("torchserve", "TorchServe", COUNTERS, "ts_inference_latency_microseconds", US,
           count="ts_inference_requests_total", parts=(("queue", "ts_queue_latency_microseconds"),)),
    Preset("tfserving", "TF Serving", HISTOGRAM, ":tensorflow:serving:request_latency", US,
           parts=(("compute", ":tensorflow:serving:runtime_latency"),)),
    Preset("kserve", "KServe", HISTOGRAM, "request_predict_seconds", S,
           parts=(("preprocess", "request_preprocess_seconds"), ("postprocess", "request_postprocess_seconds"))),
    Preset("mlserver", "MLServer", SUMMARY, "model_infer_request_duration", S),
    Preset("seldon", "Seldon", HISTOGRAM, "seldon_model_infer_api_seconds", S),
    Preset("bentoml", "BentoML", HISTOGRAM, "bentoml_service_request_duration_seconds", S),
    Preset("ovms", "OpenVINO Model Server", HISTOGRAM, "ovms_request_time_us", US,
           parts=(("queue", "ovms_wait_for_infer_req_time_us"), ("compute", "ovms_inference_time_us"))),
    Preset("http", "HTTP", HISTOGRAM, "http_request_duration_seconds", S),
    Preset("http_server", "HTTP", HISTOGRAM, "http_server_request_duration_seconds", S),
)

_UNITS = ((("_seconds", "_s"), S), (("_milliseconds", "_ms"), MS), (("_microseconds", "_us"), US),
          (("_nanoseconds", "_ns"), US / 1000))


def unit_to_ms(name: str) -> tuple[float, bool]:
    """Milliseconds per unit of a metric named `name`, by its suffix (`_total` ignored), and whether the
    suffix said so: an unknown suffix is taken as seconds, Prometheus's base unit."""
    base = name[: -len("_total")] if name.endswith("_total") else name
    for suffixes, to_ms in _UNITS:
        if base.endswith(suffixes):
            return to_ms, True
    return S, False


def user_presets(metric: str) -> tuple[Preset, ...]:
    """The user's `latency_metric` as a histogram, a summary or a `_sum`/`_count` counter pair."""
    to_ms, _ = unit_to_ms(metric)
    return (Preset("user", metric, HISTOGRAM, metric, to_ms),
            Preset("user", metric, SUMMARY, metric, to_ms),
            Preset("user", metric, COUNTERS, f"{metric}_sum", to_ms, count=f"{metric}_count"))


def candidates(user_metric: str | None = None) -> tuple[Preset, ...]:
    """The presets in the order tried: the user's metric first, then PRESETS."""
    return (user_presets(user_metric) if user_metric else ()) + PRESETS


def all_series_names(user_metric: str | None = None) -> frozenset[str]:
    return frozenset(n for p in candidates(user_metric) for n in p.series_names())


def present(preset: Preset, names: set[str], has_quantile: set[str]) -> bool:
    """Does the deployment have the series of `preset`'s total (names: the sample names selected;
    has_quantile: those of them with a `quantile` label)?"""
    if preset.kind == HISTOGRAM:
        return f"{preset.metric}_bucket" in names
    if preset.kind == SUMMARY:
        return preset.metric in has_quantile
    return preset.metric in names and preset.count in names


def detect(group: dict, user_metric: str | None = None) -> Preset | None:
    """The first candidate whose series are in `group` ({(name, labels): series}), else a discovered one."""
    names = {name for name, _ in group}
    quantiles = {name for name, labels in group if "quantile" in dict(labels)}
    return next((p for p in candidates(user_metric) if present(p, names, quantiles)), None) or discover(group)


# A latency series that no preset names: the base name of a histogram or summary that ends saying it times
# something (a latency, a duration, a time, or a time unit: Prometheus names put the unit last).
DISCOVERABLE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?:latency|duration|[_:](?:time|seconds|milliseconds|ms|"
                          r"microseconds|us))")
# ... but not a runtime's own timings, nor the phases and tokens of a generator (a request's latency is what pages)
_NOT_REQUESTS = re.compile(r"^(?:go_|python_gc|process_|prometheus_|scrape_|grpc_client|rest_client|workqueue_|"
                           r"apiserver_|etcd_)|time_to_first_token|inter_token|time_per_output_token|ttft|tpot|"
                           r"prefill|decode|load|startup|warmup|compil")
# the stage a discovered series times, by its name; a name with none of these is a candidate for the total
_ROLES = (("queue", re.compile(r"queue|wait")), ("preprocess", re.compile(r"pre_?process")),
          ("postprocess", re.compile(r"post_?process")),
          ("compute", re.compile(r"infer|comput|forward|execut|runtime|processing")))
# how plainly a name says it times the whole request: e2e or total first, then request, http or response
_WHOLE_REQUEST = (re.compile(r"e2e|end_to_end|total"), re.compile(r"request|http|response"))


def _served(group: dict, count: str) -> bool:
    """Did any `count` series of `group` grow (a route or protocol that served requests)? True for a series whose
    values are not at hand (as where only the names are known)."""
    for (name, _), values in group.items():
        if name != count:
            continue
        if values is None:
            return True
        v = np.asarray(values, dtype=float)
        if np.any(np.isfinite(v)) and np.nanmax(v) > np.nanmin(v):
            return True
    return False


def _role(base: str) -> str | None:
    return next((role for role, pattern in _ROLES if pattern.search(base.lower())), None)


def discover(group: dict) -> Preset | None:
    """A preset for a latency histogram or summary that no preset names, found by its name in `group`
    ({(name, labels): series}): the total is a series of no stage (`e2e` or `total` in its name first, then
    `request`, `http` or `response`; histograms before summaries; then the shortest name), else a compute-stage
    one; series of the same kind named for the queue, compute, pre- or postprocessing are its parts (the best
    ranked of each); a series whose `_count` never grew (a route that served nothing) comes last. None when
    nothing fits."""
    names = {name for name, _ in group}
    quantiles = {name for name, labels in group if "quantile" in dict(labels)}
    found: dict[str, str] = {}
    for name in sorted(names):
        base, kind = (name[: -len("_bucket")], HISTOGRAM) if name.endswith("_bucket") else \
            (name, SUMMARY) if name in quantiles else (None, None)
        if base and DISCOVERABLE.fullmatch(base) and not _NOT_REQUESTS.search(base.lower()):
            found.setdefault(base, kind)
    if not found:
        return None

    def rank(base: str) -> tuple:
        tier = next((i for i, pattern in enumerate(_WHOLE_REQUEST) if pattern.search(base.lower())), len(_WHOLE_REQUEST))
        return (not _served(group, f"{base}_count"), tier, found[base] != HISTOGRAM, len(base), base)

    totals = sorted((b for b in found if _role(b) is None), key=rank) or \
        sorted((b for b in found if _role(b) == "compute"), key=rank)
    if not totals:
        return None
    total = totals[0]
    parts: dict[str, str] = {}
    for base in sorted((b for b in found if b != total and found[b] == found[total]), key=rank):
        role = _role(base)
        if role and role not in parts:
            parts[role] = base
    return Preset("discovered", total, found[total], total, unit_to_ms(total)[0], parts=tuple(parts.items()))
