"""One scrape of a model server's Prometheus `/metrics` page, and what its counters did between two scrapes.

A load test scrapes before and after each step; the counters that moved in between (Triton's
`nv_inference_queue_duration_us` against `nv_inference_compute_infer_duration_us`, TorchServe's
`ts_queue_latency_microseconds` against `ts_inference_latency_microseconds`: the presets of
`collectors.serving_metrics`) split the step's latency into queue and compute on the server's own word.

The page is the Prometheus text format (or OpenMetrics): sample lines read with the OpenMetrics reader's line
grammar and label parser, timestamps ignored (a scrape is one instant), comments skipped except `# TYPE`, which
says which series are counters. A line that does not parse is skipped: one odd exporter line must not cost
the breakdown.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from collectors.openmetrics import _SAMPLE, family_of, format_labels, parse_labels, parse_value
from diagnose.core.errors import UserError, first_line

ACCEPT = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"
MAX_BYTES = 64 << 20  # a scrape past this is not a model server's page: refuse rather than fill memory


class Scrape(dict):
    """{series key: value}, the key the sample name and its sorted labels (`name{a="1",b="2"}`); `counters` holds
    the keys of cumulative series (counters, and histograms' and summaries' buckets, counts and sums), which
    only a reset can make fall."""

    def __init__(self, values: dict[str, float], counters: frozenset[str]):
        super().__init__(values)
        self.counters = counters


def _types(lines: list[str]) -> dict[str, str]:
    types = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "#" and parts[1] == "TYPE":
            types[parts[2]] = parts[3]
    return types


def _cumulative(name: str, family_type: str | None) -> bool:
    """Does this sample only grow (until a reset)? A counter's samples (the text format lets a counter go without
    `_total`, as TorchServe's and Triton's do), a histogram's or summary's buckets, counts and sums; an untyped
    `_total`. Never `_created`, a timestamp."""
    if name.endswith("_created"):
        return False
    if family_type == "counter":
        return True
    if family_type in ("histogram", "summary"):
        return name.endswith(("_bucket", "_count", "_sum"))
    return family_type in (None, "unknown") and name.endswith("_total")


def parse_metrics(text: str) -> Scrape:
    """Prometheus or OpenMetrics text -> Scrape; see the module doc."""
    lines = text.splitlines()
    types = _types(lines)
    values: dict[str, float] = {}
    counters: set[str] = set()
    for line in lines:
        match = _SAMPLE.match(line.strip()) if line.strip() and not line.lstrip().startswith("#") else None
        if not match:
            continue
        name, raw_labels, raw_value, _ = match.groups()
        try:
            key = name + format_labels(parse_labels(raw_labels))
            values[key] = parse_value(raw_value)
        except ValueError:  # a bad label or value: the reader's _BadLine
            continue
        if _cumulative(name, types.get(name) or family_of(name, types)[1]):
            counters.add(key)
    return Scrape(values, frozenset(counters))


def scrape(url: str, timeout_s: float = 5.0) -> Scrape:
    """GET a `/metrics` page and parse it. Raises UserError naming the URL when it cannot be read."""
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the user's URL)
            body = response.read(MAX_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot scrape {url}: {first_line(exc)}") from None
    if len(body) > MAX_BYTES:
        raise UserError(f"cannot scrape {url}: the page is over {MAX_BYTES >> 20} MiB")
    return parse_metrics(body.decode("utf-8", "replace"))


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """{key: increase} of the counters that moved between two scrapes. A series new in `after` (created by the
    step's first request, as TorchServe's per-model counters are) counts from 0; one that fell was reset (the
    server restarted), so its whole `after` value is the increase, as Prometheus's increase() reads it. Which
    series are counters comes from `after`'s `# TYPE` lines (`Scrape.counters`); for a plain dict, names ending
    in `_total`, `_count`, `_sum` or `_bucket`."""
    counters = getattr(after, "counters", None)
    if counters is None:
        counters = {k for k in after if k.split("{", 1)[0].endswith(("_total", "_count", "_sum", "_bucket"))}
    delta = {}
    for key in counters:
        old, new = before.get(key, 0.0), after[key]
        moved = new - old if new >= old else new
        if moved:
            delta[key] = moved
    return dict(sorted(delta.items()))
