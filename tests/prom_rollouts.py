"""Rollouts whose pods are not named after their app label, written as one OpenMetrics file (`write_rollouts`).

Deployed at 2026-11-20T10:00:00Z, samples every 30 s (kube-state-metrics' kube_pod_labels every 60 s) from
08:59 to 11:01; each pod has cAdvisor's CFS counters and CPU use for container `model`, with its own throttled
share, so the evidence's numbers say which pods were selected. One namespace per class of case:

- ml-prod: Deployment intent-serving (ReplicaSet 5c6b7d8f9, version=v1 -> 7d9f8, version=v2), labelled app=intent;
  a decoy intent-5f6g7-zzzzz (app=intent-legacy) named as the guess from app=intent expects. kube_pod_labels
  with label_app and label_version.
- search: StatefulSet ranker (ranker-0, ranker-1: the same pods before and after) labelled
  app.kubernetes.io/name=ranking; redis-0 beside it. kube_pod_labels with label_app_kubernetes_io_name.
- payments: Deployment fraud-scorer, app=fraud; kube-state-metrics scraped without honor_labels (its kube_pod_labels
  name the pod in exported_namespace and exported_pod).
- checkout: Deployment cart-api, app=cart; kube_pod_labels without any label (kube-state-metrics v2's default
  allowlist).
- legacy: Deployments orders and billing-worker; no kube_pod_labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collectors.prometheus import save_openmetrics

D = 1795168800.0  # 2026-11-20T10:00:00Z
PERIODS_PER_STEP = 300.0  # CFS periods of 100 ms in 30 s

# (namespace, pod, throttled share before, after, alive before, alive after, pod labels or None)
PODS = [
    ("ml-prod", "intent-serving-5c6b7d8f9-k2m4p", 0.02, None, True, False, {"app": "intent", "version": "v1"}),
    ("ml-prod", "intent-serving-5c6b7d8f9-r7t9v", 0.02, None, True, False, {"app": "intent", "version": "v1"}),
    ("ml-prod", "intent-serving-7d9f8-abcde", None, 0.40, False, True, {"app": "intent", "version": "v2"}),
    ("ml-prod", "intent-serving-7d9f8-fghij", None, 0.40, False, True, {"app": "intent", "version": "v2"}),
    ("ml-prod", "intent-5f6g7-zzzzz", 0.90, 0.90, True, True, {"app": "intent-legacy", "version": "v2"}),
    ("search", "ranker-0", 0.05, 0.30, True, True, {"app.kubernetes.io/name": "ranking"}),
    ("search", "ranker-1", 0.05, 0.30, True, True, {"app.kubernetes.io/name": "ranking"}),
    ("search", "redis-0", 0.80, 0.80, True, True, {"app.kubernetes.io/name": "redis"}),
    ("payments", "fraud-scorer-5a6b7c-ccccc", 0.10, None, True, False, {"app": "fraud"}),
    ("payments", "fraud-scorer-6b7c8d-aaaaa", None, 0.50, False, True, {"app": "fraud"}),
    ("checkout", "cart-api-4d5e6f-qqqqq", 0.03, None, True, False, {}),
    ("checkout", "cart-api-8g9h7k-wwwww", None, 0.35, False, True, {}),
    ("legacy", "orders-7f8g9h-abcde", 0.01, 0.20, True, True, None),
    ("legacy", "billing-worker-6c7d8e-xxxxx", 0.04, 0.45, True, True, None),
]
EXPORTED = {"payments"}  # kube-state-metrics scraped without honor_labels


def label_name(key: str) -> str:
    return "label_" + "".join(c if c.isalnum() or c == "_" else "_" for c in key).lower()


def rollout_series() -> dict:
    series: dict = {}
    t = D + 30 * np.arange(-122, 123)
    for namespace, pod, before, after, alive_before, alive_after, labels in PODS:
        alive = ((t < D) & alive_before) | ((t >= D) & alive_after)
        ts = t[alive]
        ratio = np.where(ts < D, before or 0.0, after or 0.0)
        periods = PERIODS_PER_STEP * np.arange(1, len(ts) + 1)
        throttled = np.cumsum(PERIODS_PER_STEP * ratio)
        key = (("container", "model"), ("namespace", namespace), ("pod", pod))
        series[("container_cpu_cfs_periods_total", key)] = (ts, periods)
        series[("container_cpu_cfs_throttled_periods_total", key)] = (ts, throttled)
        series[("container_cpu_usage_seconds_total", key)] = (ts, 15.0 * np.arange(1, len(ts) + 1))
        if labels is None:
            continue
        ksm = ts[::2]
        if namespace in EXPORTED:
            who = {"namespace": "monitoring", "pod": "kube-state-metrics-6d8f7b9c4-m5n6p",
                   "exported_namespace": namespace, "exported_pod": pod}
        else:
            who = {"namespace": namespace, "pod": pod}
        names = {**who, "uid": f"uid-{pod}", **{label_name(k): v for k, v in labels.items()}}
        series[("kube_pod_labels", tuple(sorted(names.items())))] = (ksm, np.ones(len(ksm)))
    return series


def write_rollouts(path: Path) -> Path:
    return save_openmetrics(path, rollout_series())
