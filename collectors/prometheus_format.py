"""How the Prometheus evidence writes times, durations, milliseconds, bytes and shares in its data and summary."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def iso_time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


def rounded(value, digits: int):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ms_text(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def bytes_text(value: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def pct_text(ratio: float) -> str:
    return f"{ratio * 100:.0f}%" if ratio * 100 >= 1 or ratio == 0 else f"{ratio * 100:.1f}%"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
