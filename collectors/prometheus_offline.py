"""Prometheus series from a recorded OpenMetrics file (`metrics.om`), and writing one: the offline path.

The file is what `promtool tsdb create-blocks-from openmetrics` backfills and what the live collector saves, so
a live collection read back from its file gives exactly the same evidence.
"""

from __future__ import annotations

from pathlib import Path

from collectors.openmetrics import MAX_SERIES_PER_METRIC, Series, SeriesKey, read_openmetrics, write_openmetrics
from collectors.prometheus_evidence import (
    ALIGN_TOLERANCE_S,
    STEP_S,
    WINDOW,
    prometheus_evidence,
    window_seconds,
)
from collectors.prometheus_format import plural
from collectors.prometheus_math import make_grid
from collectors.prometheus_pods import choose_pods
from collectors.prometheus_selection import make_target
from diagnose.core.evidence import Evidence
from diagnose.core.times import parse_time


def read_offline(path, deployed_at, container: str | None = None, pod_regex: str | None = None,
                 latency_metric: str | None = None, *, namespace: str | None = None, window=WINDOW,
                 step_s: int = STEP_S, tolerance_s: float = ALIGN_TOLERANCE_S,
                 max_series_per_metric: int = MAX_SERIES_PER_METRIC, selector: str | None = None,
                 deployment_name: str | None = None) -> Evidence:
    """A recorded `metrics.om` (OpenMetrics text with timestamps) -> Evidence.

    The pods: `pod_regex` when given; else those whose labels match `selector` in the file's kube_pod_labels
    within the window; else guessed from `deployment_name` and the selector (collectors/prometheus_pods.py).

    UserError naming the file for a file that cannot be used (see collectors/openmetrics.py), a pod regex
    that does not compile, or a latency metric name that is not a metric name."""
    path = Path(path)
    make_target(namespace, pod_regex, container, latency_metric, path)  # bad settings fail before the file is read
    parsed = read_openmetrics(path, max_series_per_metric=max_series_per_metric)
    deploy = parse_time(deployed_at)
    since = until = None
    if deploy is not None:
        grid = make_grid(deploy.timestamp(), window_seconds(window), int(step_s))
        since, until = float(grid[0]) - int(step_s), float(grid[-1])  # what lands on the grid (on_grid)
    pods = choose_pods(parsed.series, namespace=namespace, selector=selector, pod_regex=pod_regex,
                       deployment_name=deployment_name, since=since, until=until)
    target = make_target(namespace, pods.pod_regex, container, latency_metric, path, pods.pods_text)
    extra = []
    if parsed.skipped_lines:
        extra.append(f"{path.name}: {plural(parsed.skipped_lines, 'bad line')} skipped "
                     f"(first: {parsed.skipped[0]})")
    if parsed.dropped_series:
        total = sum(parsed.dropped_series.values())
        extra.append(f"{path.name}: {total} series beyond {max_series_per_metric} per metric dropped "
                     f"({', '.join(f'{k} {v}' for k, v in parsed.dropped_series.items())})")
    return prometheus_evidence(parsed.series, deployed_at, target=target, latency_metric=latency_metric,
                               window=window, step_s=step_s, tolerance_s=tolerance_s,
                               origin={"kind": "file", "path": str(path)}, extra_notes=extra,
                               parse_stats=parsed.stats(), pods=pods, deployment_name=deployment_name)


def save_openmetrics(path, series: dict[SeriesKey, Series]) -> Path:
    """Write series (as the live collector read them) to an OpenMetrics file that read_offline and
    `promtool tsdb create-blocks-from openmetrics` take."""
    return write_openmetrics(path, series)
