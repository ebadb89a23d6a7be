"""OpenMetrics text with timestamps: the files `promtool tsdb create-blocks-from openmetrics` backfills.

A recorded incident arrives as one such file (`metrics.om`): every sample line carries its own timestamp, and a
series has many points, one line each:

    # TYPE http_request_duration_seconds histogram
    http_request_duration_seconds_bucket{pod="textclf-7d9f8b6c5d-x4k2p",le="0.05"} 1523 1795168800
    http_request_duration_seconds_bucket{pod="textclf-7d9f8b6c5d-x4k2p",le="0.05"} 3047 1795168830
    ...
    # EOF

prometheus_client's parser wants one point per series (it refuses such a histogram: "+Inf bucket missing"),
so this is a tolerant line reader of its own:

- `# TYPE`, `# HELP` and `# UNIT` lines are recorded; other comments are ignored; `# EOF` must end the file.
- A sample is `name{label="value",...} value timestamp`, an optional exemplar (` # {...} v t`) is dropped.
  Label values unescape `\\\\`, `\\"` and `\\n` (any other escape makes the line bad). Values are floats, `NaN`,
  `+Inf`, `-Inf`; timestamps are seconds (fractions allowed).
- A line that does not parse, a sample without a timestamp (promtool needs one), a repeated label name, or a
  counter value (`_total` of a counter, `_bucket`/`_count` of a histogram) that is NaN, infinite or negative
  is skipped and counted (`skipped_lines`, the first few in `skipped` with their line numbers).
- Series are capped per metric name (`max_series_per_metric`, 10,000 by default); samples of further series
  are dropped and counted (`dropped_series`), so a label with unbounded values cannot exhaust memory.
- Raises `UserError` naming the file and line for: a file that cannot be read; no sample that parses (with
  the first bad line); no `# EOF` at the end (truncated: the last line is named); data after `# EOF`.

`format_openmetrics` / `write_openmetrics` write series back in the same form (families grouped, each
series' points in time order), which the reader and promtool both take, so a live collection saved into a
run folder reads back to the same numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose.core.errors import UserError

# (metric name as written on the sample line, label pairs sorted by name)
Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]
Series = tuple[np.ndarray, np.ndarray]  # (timestamps in seconds, sorted; values)

MAX_SERIES_PER_METRIC = 10_000
MAX_EXAMPLES = 10
TYPES = ("counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown")
# sample-name suffixes each family type allows after the family name
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "unknown": ("",),
}
# samples that count things and so can be neither NaN, infinite nor negative
COUNTING = {"counter": ("_total",), "histogram": ("_bucket", "_count"), "gaugehistogram": ("_bucket", "_gcount"),
            "summary": ("_count",)}

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(
    rf'^({_NAME})(?:\{{((?:[^"}}]|"(?:[^"\\]|\\.)*")*)\}})?[ \t]+(\S+)(?:[ \t]+(\S+))?[ \t]*(?:#.*)?$')
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|$)')
_FLOAT = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf(?:inity)?|INF)$|^NaN$|^nan$")
_TIMESTAMP = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}
_METADATA = re.compile(rf"^#[ \t]+(TYPE|HELP|UNIT)[ \t]+({_NAME})(?:[ \t]+(.*))?$")


class _BadLine(ValueError):
    """One line that cannot be read: skipped and counted."""


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw

    def one(m: re.Match) -> str:
        if m.group(1) not in _UNESCAPE:
            raise _BadLine(f"invalid escape \\{m.group(1)} in a label value (only \\\\, \\\" and \\n)")
        return _UNESCAPE[m.group(1)]

    return _ESCAPE.sub(one, raw)


def parse_labels(text: str | None) -> Labels:
    """`a="1",b="x\\"y"` -> (("a", "1"), ("b", 'x"y')), sorted by name. Raises ValueError on bad text."""
    if not text or not text.strip():
        return ()
    pairs: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        m = _LABEL.match(text, pos)
        if not m or m.end() == pos:
            raise _BadLine(f"cannot parse the labels at {text[pos:pos + 40]!r}")
        name = m.group(1)
        if name in pairs:
            raise _BadLine(f"label {name} appears twice")
        pairs[name] = _unescape(m.group(2))
        pos = m.end()
        if m.group(3) == "" and pos < end:
            raise _BadLine(f"cannot parse the labels at {text[pos:pos + 40]!r}")
    return tuple(sorted(pairs.items()))


def parse_value(text: str) -> float:
    """An OpenMetrics number: decimal, `NaN`, `+Inf`, `-Inf` (Go's ParseFloat spellings of them too)."""
    if not _FLOAT.match(text):
        raise _BadLine(f"{text!r} is not a number")
    return float(text)


def escape_label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_labels(labels: Labels | dict) -> str:
    items = labels.items() if isinstance(labels, dict) else labels
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in items)
    return "{" + body + "}" if body else ""


def labels_json(labels: Labels) -> str:
    """The frame's `labels` column: a JSON object with sorted keys (hashable, readable, round-trips)."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def family_of(name: str, types: dict[str, str]) -> tuple[str, str | None]:
    """(family, type) of a sample name, from the `# TYPE` lines seen; (name, None) when none applies."""
    if name in types and "" in SUFFIXES.get(types[name], ("",)):
        return name, types[name]
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created", "_gcount", "_gsum", "_info"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in types and suffix in SUFFIXES.get(types[base], ()):
                return base, types[base]
    return name, None


def is_counting(name: str, family_type: str | None) -> bool:
    """Is this sample a count (never NaN, infinite or negative)? Without a TYPE, `_total` names are."""
    if family_type is None or family_type == "unknown":
        return name.endswith("_total")
    return any(name.endswith(s) for s in COUNTING.get(family_type, ()))


@dataclass
class OpenMetricsData:
    """What one file held. `series[(name, labels)] = (timestamps, values)`, timestamps sorted, seconds."""

    path: str
    series: dict[SeriesKey, Series] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    samples: int = 0
    skipped_lines: int = 0
    skipped: list[str] = field(default_factory=list)
    dropped_series: dict[str, int] = field(default_factory=dict)
    dropped_samples: int = 0
    out_of_order: int = 0
    duplicates: int = 0

    def frame(self) -> pd.DataFrame:
        """The long form: one row per sample, columns metric, labels (JSON), timestamp (s), value."""
        parts = []
        for (name, labels), (ts, vs) in self.series.items():
            parts.append(pd.DataFrame({"metric": name, "labels": labels_json(labels), "timestamp": ts, "value": vs}))
        if not parts:
            return pd.DataFrame({"metric": pd.Series(dtype=object), "labels": pd.Series(dtype=object),
                                 "timestamp": pd.Series(dtype=float), "value": pd.Series(dtype=float)})
        return pd.concat(parts, ignore_index=True)

    def time_range(self) -> tuple[float, float] | None:
        starts = [ts[0] for ts, _ in self.series.values() if len(ts)]
        ends = [ts[-1] for ts, _ in self.series.values() if len(ts)]
        return (float(min(starts)), float(max(ends))) if starts else None

    def stats(self) -> dict:
        """JSON-able counts for the evidence: what was read and what was skipped."""
        return {"lines": self.lines, "samples": self.samples, "series": len(self.series),
                "skipped_lines": self.skipped_lines, "skipped": list(self.skipped),
                "dropped_series": dict(self.dropped_series), "dropped_samples": self.dropped_samples,
                "out_of_order": self.out_of_order, "duplicate_timestamps": self.duplicates}


def parse_openmetrics(lines, name: str = "<text>", *, max_series_per_metric: int = MAX_SERIES_PER_METRIC) -> OpenMetricsData:
    """Lines (an open file, a list, or one string) of OpenMetrics text -> OpenMetricsData. See the module doc."""
    if isinstance(lines, str):
        lines = lines.splitlines(keepends=True)
    out = OpenMetricsData(path=name)
    acc: dict[SeriesKey, tuple[list, list]] = {}
    last_ts: dict[SeriesKey, float] = {}
    per_metric: dict[str, int] = {}
    dropped: dict[str, set] = {}
    label_cache: dict[str, Labels | _BadLine] = {}
    family_cache: dict[str, tuple[str, str | None]] = {}
    eof_line = 0
    first_bad = ""
    last_text = ""
    n = 0

    def skip(why: str) -> None:
        nonlocal first_bad
        out.skipped_lines += 1
        if len(out.skipped) < MAX_EXAMPLES:
            out.skipped.append(f"line {n}: {why}")
        first_bad = first_bad or f"line {n}: {why}"

    for n, line in enumerate(lines, 1):  # noqa: B007 (n is read by skip())
        text = line.rstrip("\n").rstrip("\r")
        if eof_line:
            if text.strip():
                raise UserError(f"data after `# EOF` (line {eof_line}): {text[:80]!r}", name, f"line {n}")
            continue
        if not text.strip():
            continue
        last_text = text
        if text[0] == "#":
            if text.rstrip() == "# EOF":
                eof_line = n
                continue
            m = _METADATA.match(text)
            if not m:
                continue  # a free comment (the Prometheus text format allows them)
            kind, family, rest = m.group(1), m.group(2), (m.group(3) or "").strip()
            if kind == "TYPE":
                if rest not in TYPES:
                    skip(f"unknown metric type {rest!r} for {family}")
                    continue
                out.types[family] = rest
                family_cache.clear()
            elif kind == "HELP":
                out.help[family] = _unescape_help(rest)
            else:
                out.units[family] = rest
            continue
        m = _SAMPLE.match(text)
        if not m:
            skip(f"cannot parse {text[:60]!r}")
            continue
        metric, raw_labels, raw_value, raw_ts = m.groups()
        raw_labels = raw_labels or ""
        labels = label_cache.get(raw_labels)
        if labels is None:
            try:
                labels = parse_labels(raw_labels)
            except _BadLine as exc:
                labels = exc
            if len(label_cache) < 200_000:
                label_cache[raw_labels] = labels
        if isinstance(labels, _BadLine):
            skip(str(labels))
            continue
        try:
            value = parse_value(raw_value)
        except _BadLine as exc:
            skip(str(exc))
            continue
        if raw_ts is None:
            skip(f"{metric} has no timestamp (promtool needs one on every sample)")
            continue
        if not _TIMESTAMP.match(raw_ts):
            skip(f"timestamp {raw_ts!r} is not a number of seconds")
            continue
        ts = float(raw_ts)
        fam = family_cache.get(metric)
        if fam is None:
            fam = family_cache[metric] = family_of(metric, out.types)
        if (math.isnan(value) or math.isinf(value) or value < 0) and is_counting(metric, fam[1]):
            skip(f"{metric} is a counter and cannot be {raw_value}")
            continue
        key = (metric, labels)
        series = acc.get(key)
        if series is None:
            if per_metric.get(metric, 0) >= max_series_per_metric:
                dropped.setdefault(metric, set()).add(labels)
                out.dropped_samples += 1
                continue
            per_metric[metric] = per_metric.get(metric, 0) + 1
            series = acc[key] = ([], [])
        elif ts < last_ts[key]:
            out.out_of_order += 1
        last_ts[key] = ts
        series[0].append(ts)
        series[1].append(value)
        out.samples += 1
    out.lines = n
    if not acc:
        why = first_bad or "it holds no sample lines"
        raise UserError(f"no OpenMetrics sample could be read ({why}); expected lines like "
                        f'`name{{label="value"}} 1.5 1795168800` ending with `# EOF`', name,
                        first_bad.split(":")[0] if first_bad else None)
    if not eof_line:
        raise UserError(f"truncated: the file does not end with `# EOF` (last line {n}: {last_text[:80]!r}); "
                        "promtool refuses it too", name, f"line {n}")
    for key, (ts_list, vs_list) in acc.items():
        ts, vs = np.asarray(ts_list, dtype=float), np.asarray(vs_list, dtype=float)
        if len(ts) > 1 and np.any(np.diff(ts) <= 0):
            order = np.argsort(ts, kind="stable")
            ts, vs = ts[order], vs[order]
            keep = np.append(ts[1:] != ts[:-1], True)  # the last of equal timestamps wins
            out.duplicates += int((~keep).sum())
            ts, vs = ts[keep], vs[keep]
        out.series[key] = (ts, vs)
    out.dropped_series = {metric: len(keys) for metric, keys in sorted(dropped.items())}
    return out


def _unescape_help(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\"}.get(m.group(1), m.group(0)), text)


def read_openmetrics(path, *, max_series_per_metric: int = MAX_SERIES_PER_METRIC) -> OpenMetricsData:
    """One OpenMetrics file -> OpenMetricsData; UserError (naming the file, and the line) when it is unusable."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
            return parse_openmetrics(fh, str(path), max_series_per_metric=max_series_per_metric)
    except FileNotFoundError:
        raise UserError("missing: save a live collection with PrometheusCollector.save, or export the series "
                        "(docs/signals.md, \"Prometheus\": recording metrics.om)", path) from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise UserError(f"cannot read: {exc}", path) from None


def infer_types(names) -> dict[str, str]:
    """Family types for series known only by sample name (what query_range returns): `X_bucket` with `X_count`
    -> histogram X; `X_total` -> counter X; anything else -> gauge."""
    names = set(names)
    types: dict[str, str] = {}
    for name in sorted(names):
        if name.endswith("_bucket"):
            types[name[: -len("_bucket")]] = "histogram"
    for name in sorted(names):
        base = next((name[: -len(s)] for s in ("_bucket", "_count", "_sum", "_created") if name.endswith(s)), None)
        if base is not None and types.get(base) == "histogram":
            continue
        if name.endswith("_total"):
            types.setdefault(name[: -len("_total")], "counter")
        else:
            types.setdefault(name, "gauge")
    return types


def format_openmetrics(series: dict[SeriesKey, Series], types: dict[str, str] | None = None,
                       help: dict[str, str] | None = None) -> str:
    """Series -> OpenMetrics text with timestamps, ending with `# EOF`; families grouped, points in time order.

    `types` (family -> type) defaults to `infer_types` of the sample names. A sample name that no family
    claims gets a `gauge` family of its own (or `unknown` when its name ends in `_total`)."""
    types = dict(types) if types is not None else infer_types(name for name, _ in series)
    families: dict[str, list[SeriesKey]] = {}
    for key in sorted(series, key=lambda k: (k[0], k[1])):
        family, ftype = family_of(key[0], types)
        if ftype is None:
            family = key[0]
            types[family] = "unknown" if family.endswith(("_total", "_bucket", "_count")) else "gauge"
        families.setdefault(family, []).append(key)
    out: list[str] = []
    for family in sorted(families):
        if help and family in help:
            text = help[family].replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"# HELP {family} {text}\n")
        out.append(f"# TYPE {family} {types[family]}\n")
        for key in families[family]:
            name, labels = key
            prefix = name + format_labels(labels) + " "
            ts, vs = series[key]
            order = np.argsort(np.asarray(ts, dtype=float), kind="stable")
            for i in order:
                out.append(f"{prefix}{format_value(vs[i])} {format_value(ts[i])}\n")
    out.append("# EOF\n")
    return "".join(out)


def write_openmetrics(path, series: dict[SeriesKey, Series], types: dict[str, str] | None = None,
                      help: dict[str, str] | None = None) -> Path:
    """Write series as an OpenMetrics file (atomically), the form `read_openmetrics` and promtool read."""
    from diagnose.core.runfolder import write_text

    path = Path(path)
    write_text(path, format_openmetrics(series, types, help))
    return path
