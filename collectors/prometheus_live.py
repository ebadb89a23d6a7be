"""Prometheus series read live: three query_range calls through prometheus-api-client (`PrometheusCollector`).

Every call has a timeout (on the HTTP call and as Prometheus's own query `timeout`) and every failure (down,
slow, an error answer, an answer that is not Prometheus JSON) becomes one line of an `error` Evidence.
The `prometheus_api_client` package is imported only here, inside the calls: offline reading needs no client.
"""

from __future__ import annotations

import ast
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from collectors.openmetrics import MAX_SERIES_PER_METRIC, Series, SeriesKey
from collectors.prometheus_evidence import (
    ALIGN_TOLERANCE_S,
    SOURCE,
    STEP_S,
    WINDOW,
    prometheus_evidence,
    window_seconds,
)
from collectors.prometheus_format import duration
from collectors.prometheus_math import make_grid
from collectors.prometheus_offline import save_openmetrics
from collectors.prometheus_pods import choose_pods, parse_selector, pod_labels, pod_of, pods_seen
from collectors.prometheus_selection import (
    make_target,
    pod_labels_selector,
    pods_seen_selector,
    promql_selectors,
    select_series,
)
from diagnose.core.errors import UserError, first_line
from diagnose.core.evidence import Evidence
from diagnose.core.redact import redact_text, redact_url
from diagnose.core.times import parse_time

METRICS_FILE = "metrics.om"
MAX_POINTS = 11_000         # Prometheus refuses a query_range with more points per series


def _client_error(exc) -> tuple[int | None, str]:
    """prometheus-api-client's "HTTP Status Code 400 (b'{...}')" -> (400, Prometheus's own error text)."""
    m = re.match(r"^HTTP Status Code (\d+) \((b?['\"].*['\"])\)$", str(exc), re.S)
    if not m:
        return None, first_line(exc)
    status = int(m.group(1))
    try:
        body = ast.literal_eval(m.group(2))
        body = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    except (ValueError, SyntaxError):
        body = m.group(2)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("error"):
        kind = f"{doc.get('errorType')}: " if doc.get("errorType") else ""
        return status, f"{kind}{doc['error']}"
    text = body.strip().splitlines()
    return status, text[0][:300] if text else ""


class PrometheusCollector:
    """The deployment's series around the deploy, read live from Prometheus's HTTP API -> Evidence.

    `http`: a `prometheus_api_client.PrometheusConnect` to use as is; without one the collector makes its
    own (no retry of a read timeout, one retry of a refused connection, `headers` sent with every call).
    Three query_range calls (containers, GPU, latency), each with `timeout_s` on the HTTP call and as
    Prometheus's own query `timeout`; before them, without a `pod_regex` but with a `selector`, one for the
    namespace's kube_pod_labels, to find the pods by their labels (collectors/prometheus_pods.py); after them,
    when no series matched, one listing the namespace's pods for the reason. After `collect()`, `series` holds
    what was read (kube_pod_labels included), `pods` how the pods were chosen, and `save(folder)` writes the
    series as `metrics.om` for read_offline. `collect()` never raises.

    `url` may hold credentials (`http://user:pass@host/`, `?token=`): the calls use it as given, but the
    evidence and every message name `shown`, its redacted form, since they end up in run folders and reports.
    """

    name = SOURCE

    def __init__(self, url: str, namespace: str | None = None, pod_regex: str | None = None,
                 container: str | None = None, deployed_at=None, window=WINDOW,
                 latency_metric: str | None = None, timeout_s: float = 10, http=None, *,
                 step_s: int = STEP_S, tolerance_s: float = ALIGN_TOLERANCE_S, headers: dict | None = None,
                 max_series_per_metric: int = MAX_SERIES_PER_METRIC, selector: str | None = None,
                 deployment_name: str | None = None):
        self.url = (url or "").rstrip("/")
        self.shown = redact_url(self.url)
        self.namespace, self.pod_regex, self.container = namespace, pod_regex, container
        self.deployed_at, self.window, self.latency_metric = deployed_at, window, latency_metric
        self.timeout_s, self.http, self.step_s, self.tolerance_s = timeout_s, http, int(step_s), tolerance_s
        self.headers, self.max_series_per_metric = headers, max_series_per_metric
        self.selector, self.deployment_name = selector, deployment_name
        self.series: dict[SeriesKey, Series] | None = None
        self.pods = None  # the PodSelection of the last collect()
        self.queries: list[str] = []

    @classmethod
    def from_deployment(cls, url: str, deployment: dict, **kwargs) -> PrometheusCollector:
        """From a manifest's `deployment` mapping: namespace, container, deployed_at, `pod_regex` (the pods, as
        given), `selector` (the pods by their labels in kube_pod_labels, else a guess from the names) and `name`
        (the Deployment's, for the guess), and `latency_metric` (tried before the serving presets; a
        `latency_metric` keyword wins)."""
        name = deployment.get("name")
        kwargs.setdefault("latency_metric", deployment.get("latency_metric") or None)
        return cls(url, deployment.get("namespace"), deployment.get("pod_regex") or None, deployment.get("container"),
                   deployment.get("deployed_at"), selector=deployment.get("selector"),
                   deployment_name=name if isinstance(name, str) and name else None, **kwargs)

    def collect(self) -> Evidence:
        if not self.url:
            return Evidence.unavailable(SOURCE, "no Prometheus URL given")
        try:  # a bad pod regex or metric name fails before any call
            make_target(self.namespace, self.pod_regex, self.container, self.latency_metric, self.shown)
        except UserError as exc:
            return Evidence.error(SOURCE, ValueError(str(exc)))
        deploy = parse_time(self.deployed_at)
        if deploy is None:
            return prometheus_evidence({}, self.deployed_at)  # unavailable, with the reason
        window_s = window_seconds(self.window)
        grid = make_grid(deploy.timestamp(), window_s, self.step_s)
        if len(grid) > MAX_POINTS:
            return Evidence.error(SOURCE, ValueError(
                f"a {duration(window_s)} window each side at step_s={self.step_s} gives {len(grid)} points; "
                f"Prometheus allows {MAX_POINTS}: raise step_s"))
        own = self.http is None
        if own:
            try:
                client = self._own_client()
            except ImportError:
                return Evidence.unavailable(SOURCE, "the prometheus-api-client package is not installed "
                                                    "(pip install prometheus-api-client)")
            except Exception as exc:
                return Evidence.error(SOURCE, exc)
        else:
            client = self.http
        seen = None
        try:
            series: dict[SeriesKey, Series] = {}
            notes: list[str] = []
            if not self.pod_regex and parse_selector(self.selector):  # the pods by their labels, if KSM has them
                self._read(client, "pod labels", pod_labels_selector(self.namespace), grid, series, notes)
            self.pods = pods = choose_pods(series, namespace=self.namespace, selector=self.selector,
                                           pod_regex=self.pod_regex, deployment_name=self.deployment_name,
                                           since=float(grid[0]) - self.step_s, until=float(grid[-1]))
            target = make_target(self.namespace, pods.pod_regex, self.container, self.latency_metric, self.shown,
                                 pods.pods_text)
            for what, query in promql_selectors(target, self.latency_metric).items():
                self._read(client, what, query, grid, series, notes)
            if not any(select_series(series, target, self.latency_metric).values()):
                seen = self._pods_seen(client, grid, series)
        except Exception as exc:
            return Evidence.error(SOURCE, exc)
        finally:
            if own:
                client.close()
        self.series = series
        try:
            evidence = prometheus_evidence(series, deploy, target=target, latency_metric=self.latency_metric,
                                           window=self.window, step_s=self.step_s, tolerance_s=self.tolerance_s,
                                           origin={"kind": "prometheus", "url": self.shown}, extra_notes=notes,
                                           pods=pods, seen=seen, deployment_name=self.deployment_name)
        except Exception as exc:
            return Evidence.error(SOURCE, exc)
        return evidence

    def save(self, folder) -> Path | None:
        """Write what the last collect() read into `folder/metrics.om` (None when nothing was read)."""
        if not self.series:
            return None
        return save_openmetrics(Path(folder) / METRICS_FILE, self.series)

    def _own_client(self):
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        # A read timeout is not retried (a hung Prometheus costs timeout_s once); a refused connection once.
        retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0)
        return PrometheusConnect(url=self.url, headers=self.headers, retry=retry, timeout=self.timeout_s)

    def _pods_seen(self, client, grid: np.ndarray, series: dict) -> list[str] | None:
        """The namespace's pods, for the reason when the chosen ones have no series: kube_pod_labels when it was
        read, else one more query (cAdvisor's and kube-state-metrics' series counted by pod). None when that
        query fails: the reason then lists what was read."""
        if pod_labels(series, self.namespace):
            return pods_seen(series, self.namespace)
        start = datetime.fromtimestamp(float(grid[0]), timezone.utc)
        end = datetime.fromtimestamp(float(grid[-1]), timezone.utc)
        query = pods_seen_selector(self.namespace)
        self.queries.append(query)
        try:
            result = self._call(client, "pods", query, start, end)
        except Exception:  # the listing only adds to a reason; the collection itself is done
            return None
        seen = set()
        for item in result if isinstance(result, list) else ():
            ns, pod = pod_of(dict(item.get("metric") or {}) if isinstance(item, dict) else {})
            if pod and (self.namespace is None or ns == self.namespace):
                seen.add(pod)
        return sorted(seen)

    def _read(self, client, what: str, query: str, grid: np.ndarray, series: dict, notes: list[str]) -> None:
        start = datetime.fromtimestamp(float(grid[0]), timezone.utc)
        end = datetime.fromtimestamp(float(grid[-1]), timezone.utc)
        self.queries.append(query)
        result = self._call(client, what, query, start, end)
        if not isinstance(result, list):
            raise RuntimeError(f"unexpected answer from Prometheus at {self.shown} to the {what} query: "
                               f"not a list of series")
        per_metric: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for item in result:
            metric = dict(item.get("metric") or {}) if isinstance(item, dict) else None
            if metric is None or not isinstance(item.get("values"), list):
                raise RuntimeError(f"unexpected answer from Prometheus at {self.shown} to the {what} query: "
                                   "a series without metric and values (was this a range query?)")
            name = metric.pop("__name__", "")
            if per_metric.get(name, 0) >= self.max_series_per_metric:
                dropped[name] = dropped.get(name, 0) + 1
                continue
            per_metric[name] = per_metric.get(name, 0) + 1
            points = item["values"]
            ts = np.array([float(p[0]) for p in points], dtype=float)
            vs = np.array([float(p[1]) for p in points], dtype=float)  # "NaN", "+Inf" parse as floats
            series[(name, tuple(sorted(metric.items())))] = (ts, vs)
        for name, n in dropped.items():
            notes.append(f"{n} {name} series beyond {self.max_series_per_metric} per metric dropped")

    def _call(self, client, what: str, query: str, start: datetime, end: datetime):
        """One query_range; every failure becomes an exception whose one line says what happened."""
        import requests
        from prometheus_api_client import PrometheusApiClientException

        try:
            return client.custom_query_range(query, start_time=start, end_time=end, step=str(self.step_s),
                                             params={"timeout": f"{self.timeout_s:g}"}, timeout=self.timeout_s)
        except PrometheusApiClientException as exc:
            status, message = _client_error(exc)
            code = f"{status} " if status else ""
            raise RuntimeError(f"Prometheus at {self.shown} refused the {what} query ({code.strip() or 'error'}): "
                               f"{message}") from None
        except ValueError as exc:  # a 200 whose body is not JSON (requests' JSONDecodeError is a ValueError too)
            raise RuntimeError(f"the answer from Prometheus at {self.shown} to the {what} query is not Prometheus "
                               f"JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
        except requests.exceptions.RequestException as exc:
            cause = str(exc)
            # with read=0 urllib3 reports a read timeout as a ConnectionError whose text says "timed out"
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in cause.lower():
                raise TimeoutError(f"no answer from Prometheus at {self.shown} within the {self.timeout_s:g} s "
                                   f"timeout (timeout_s) to the {what} query") from None
            if "refused" in cause.lower():
                detail = "connection refused"
            else:
                detail = redact_text(first_line(exc, 200))  # requests' text may quote the URL's query
            raise ConnectionError(f"cannot reach Prometheus at {self.shown}: {detail}") from None
        except (KeyError, TypeError) as exc:
            raise RuntimeError(f"the answer from Prometheus at {self.shown} to the {what} query has no "
                               f"data.result ({type(exc).__name__}: {exc})") from None
