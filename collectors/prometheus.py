"""What Prometheus recorded around the deploy: CPU throttling, memory vs limit, OOM kills, GPU clocks, latency.

The series an on-call engineer already has in Prometheus tell whether the machine around the model changed when
the new version went out: cAdvisor's CFS counters (a CPU limit that throttles the new model), working set vs
the limit kube-state-metrics reports (a model that no longer fits), OOM events and restarts, DCGM's clocks and
throttle reasons (a GPU that clocks down), and the serving system's own latency (Triton, TorchServe, TF Serving,
KServe, MLServer, Seldon, BentoML, OVMS or generic HTTP: the presets of `serving_metrics`), with the moment its p99
jumped.

Two ways in, one result (`prometheus_evidence`):

    PrometheusCollector(url, namespace=..., pod_regex=..., container=..., deployed_at=...).collect()
        live: /api/v1/query_range through prometheus-api-client, every call with a timeout
    read_offline("metrics.om", deployed_at, container=..., pod_regex=...)
        a recorded file in OpenMetrics text with timestamps (collectors/openmetrics.py), the same form
        `promtool tsdb create-blocks-from openmetrics` backfills and `save_openmetrics` writes

Both put every series on one time grid before any arithmetic: points every `step_s` seconds from the hour
before the deploy to the hour after. Live, the grid is what query_range returns (each point the latest sample
within Prometheus's lookback, 5 min by default); from a file, each sample goes to the first grid point at or
after it, within one step, so no sample is counted twice and a live collection saved with `save_openmetrics`
(points already on the grid) reads back to exactly the same evidence.

The series math (module functions, shared by both paths):

- counter increases between grid points are reset-aware: a drop means the counter restarted from zero, so the
  increase across it is the new value (the same as adding the pre-reset value back, as PromQL's increase()
  does); there is no extrapolation to the window's edges;
- CPU throttling is increase(container_cpu_cfs_throttled_periods_total) / increase(container_cpu_cfs_periods_total)
  as kubernetes-mixin's CPUThrottlingHigh computes it (summed over the selected containers; the worst one is
  named too);
- latency quantiles are histogram_quantile's interpolation (Prometheus's bucketQuantile) on bucket increases
  summed by `le`, over each window and over each grid step for the p99 timeline;
- the change point is binary segmentation on log p99 (docs/signals.md, "Prometheus").

The `prometheus_api_client` package is imported only inside the live path: offline reading needs no client.

This module is the facade over the pieces, each in its own module: `prometheus_selection` (the `Target`, which
series are the deployment's, the PromQL sent), `prometheus_pods` (which pods: an explicit regex, the pods
kube_pod_labels matches with the selector, or the names guessed), `prometheus_math` (the grid, counter increases, histogram
quantiles), `prometheus_change_points` (the p99 jump), `prometheus_groups` (each group's numbers before and
after), `prometheus_evidence` (the Evidence and its summary; its formatting: `prometheus_format`),
`prometheus_offline` (the file path) and `prometheus_live` (the query_range path).
"""

from __future__ import annotations

from collectors.prometheus_change_points import change_points
from collectors.prometheus_evidence import prometheus_evidence
from collectors.prometheus_live import PrometheusCollector
from collectors.prometheus_math import counter_deltas, histogram_quantile, increase, make_grid, on_grid
from collectors.prometheus_offline import read_offline, save_openmetrics
from collectors.prometheus_pods import PodSelection, choose_pods
from collectors.prometheus_selection import Target, pod_regex_from_selector, promql_selectors, promql_string

__all__ = ["PodSelection", "PrometheusCollector", "Target", "change_points", "choose_pods", "counter_deltas",
           "histogram_quantile", "increase", "make_grid", "on_grid", "pod_regex_from_selector", "prometheus_evidence",
           "promql_selectors", "promql_string", "read_offline", "save_openmetrics"]
