"""GPU clocks, throttling, heat, power and co-tenants, from nvidia-smi CSV logs or live NVML.

A GPU that clocks down after a deploy makes every kernel slower although neither the model nor its inputs
changed: a hotter model (or a blocked fan, a warm rack) trips thermal slowdown, a heavier one hits the power
cap, and another process on the same GPU takes SMs and memory. The driver says which: its clock-event
("throttle") reasons bitmask, read per sample beside the clocks, temperature and power.

Two ways in, one result (`gpu_evidence`):

- `parse_nvidia_smi_csv(path)` reads what `nvidia-smi --query-gpu=... --format=csv -l 1` printed (a log the
  on-call engineer already has, or one recorded on the serving host around the deploy);
- `NvmlSampler` samples every GPU from a background thread through NVML (`pynvml`, from the
  `nvidia-ml-py` package), imported lazily so this module imports on machines without it.

`write_nvidia_smi_csv` writes readings back in nvidia-smi's format (a live collection saved into a run folder
reads back identically, except processes, which that CSV has no column for; `write_readings_json` keeps them).

Timestamps are naive datetimes. nvidia-smi prints the host's local time (run it with `TZ=UTC` to log UTC); the
sampler records UTC. `gpu_evidence` converts an aware `deployed_at` to naive UTC before comparing.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence

SOURCE = "gpu"

# NVML's clock-event reasons (nvmlClocksEventReason*; the older name is nvmlClocksThrottleReason*), by bit.
REASON_BITS: dict[int, str] = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
    0x200: "BoardLimit",      # nvmlClocksThrottleReasonBoardLimit (newer drivers)
    0x400: "Reliability",     # nvmlClocksThrottleReasonReliability (newer drivers)
}
REASON_WORDS = {
    "GpuIdle": "GPU idle",
    "ApplicationsClocksSetting": "applications clocks setting",
    "SwPowerCap": "SW power cap",
    "HwSlowdown": "HW slowdown",
    "SyncBoost": "sync boost",
    "SwThermalSlowdown": "SW thermal slowdown",
    "HwThermalSlowdown": "HW thermal slowdown",
    "HwPowerBrakeSlowdown": "HW power brake slowdown",
    "DisplayClockSetting": "display clock setting",
    "BoardLimit": "board limit",
    "Reliability": "reliability limit",
}
# Reasons that say the GPU had nothing to do, or was told to run at these clocks: not a slowdown of the model.
BENIGN_REASONS = frozenset({"GpuIdle", "ApplicationsClocksSetting"})
# A reason counts as active after the deploy when it is set in at least this share of the samples.
REASON_SHARE = 0.20
# A clock change smaller than this (in %) is called steady in the summary.
CLOCK_STEADY_PCT = 3.0
# Utilization at or above this (mean over the samples, in %) is called saturated.
SATURATED_PCT = 90.0

# The query this module documents, writes and assumes for a file without a header (`--format=csv,noheader`).
QUERY = ("timestamp,index,name,utilization.gpu,clocks.sm,clocks.mem,temperature.gpu,power.draw,"
         "clocks_throttle_reasons.active,memory.used,memory.total")
NVIDIA_SMI_COMMAND = f"nvidia-smi --query-gpu={QUERY} --format=csv -l 1"
# The header nvidia-smi prints for that query: aliases are printed under their canonical names, with units.
HEADER = ("timestamp, index, name, utilization.gpu [%], clocks.current.sm [MHz], clocks.current.memory [MHz], "
          "temperature.gpu, power.draw [W], clocks_throttle_reasons.active, memory.used [MiB], memory.total [MiB]")
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S.%f"

# column name (unit stripped) -> (GpuReading field, kind, unit printed in the cell)
_COLUMNS: dict[str, tuple[str, str, str]] = {
    "timestamp": ("timestamp", "time", ""),
    "index": ("index", "int", ""),
    "name": ("name", "str", ""),
    "utilization.gpu": ("util_pct", "int", "%"),
    "clocks.current.sm": ("sm_clock_mhz", "int", "MHz"),
    "clocks.sm": ("sm_clock_mhz", "int", "MHz"),
    "clocks.current.memory": ("mem_clock_mhz", "int", "MHz"),
    "clocks.mem": ("mem_clock_mhz", "int", "MHz"),
    "temperature.gpu": ("temperature_c", "int", ""),
    "power.draw": ("power_w", "float", "W"),
    "power.draw.instant": ("power_w", "float", "W"),
    "power.draw.average": ("power_w", "float", "W"),
    "clocks_throttle_reasons.active": ("reasons_mask", "hex", ""),
    "clocks_event_reasons.active": ("reasons_mask", "hex", ""),
    "memory.used": ("memory_used_mib", "int", "MiB"),
    "memory.total": ("memory_total_mib", "int", "MiB"),
}
_REQUIRED = ("timestamp", "index", "sm_clock_mhz")
_HEADER_RE = re.compile(r"^(?P<name>[^\[]+?)\s*(?:\[(?P<unit>[^\]]*)\])?$")


def decode_reasons(mask: int | None) -> list[str]:
    """NVML's clock-event bitmask as reason names, in bit order; unknown bits as `Unknown0x...`."""
    if not mask:
        return []
    names, bit = [], 1
    while bit <= mask:
        if mask & bit:
            names.append(REASON_BITS.get(bit, f"Unknown{bit:#x}"))
        bit <<= 1
    return names


def encode_reasons(names) -> int:
    """The inverse of decode_reasons."""
    by_name = {v: k for k, v in REASON_BITS.items()}
    mask = 0
    for name in names:
        if name in by_name:
            mask |= by_name[name]
        elif name.startswith("Unknown0x"):
            mask |= int(name[len("Unknown"):], 16)
        else:
            raise ValueError(f"unknown clock-event reason {name!r}")
    return mask


@dataclass
class GpuReading:
    """One GPU at one instant; a field is None where nvidia-smi/NVML had no value (`[N/A]`, Not Supported).

    `timestamp` is naive: the host's local time for nvidia-smi logs, UTC for NvmlSampler. `reasons` are the
    active clock-event reasons decoded from `reasons_mask` (None: not recorded, and then `reasons` is []).
    `processes` is a list of {"pid", "name", "used_mib"} from NVML, or None where not known (nvidia-smi's
    --query-gpu CSV has no processes).
    """

    timestamp: datetime
    index: int
    name: str = ""
    util_pct: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    reasons: list[str] = field(default_factory=list)
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    processes: list[dict] | None = None
    reasons_mask: int | None = None

    def __post_init__(self) -> None:
        # Keep the mask and the names in step, whichever was given.
        if self.reasons_mask is not None:
            self.reasons = decode_reasons(self.reasons_mask)
        elif self.reasons:
            self.reasons_mask = encode_reasons(self.reasons)
            self.reasons = decode_reasons(self.reasons_mask)

    def to_dict(self) -> dict:
        return {
            "timestamp": self.timestamp.isoformat(timespec="milliseconds"),
            "index": self.index, "name": self.name, "util_pct": self.util_pct,
            "sm_clock_mhz": self.sm_clock_mhz, "mem_clock_mhz": self.mem_clock_mhz,
            "temperature_c": self.temperature_c, "power_w": self.power_w,
            "reasons_mask": self.reasons_mask, "reasons": list(self.reasons),
            "memory_used_mib": self.memory_used_mib, "memory_total_mib": self.memory_total_mib,
            "processes": None if self.processes is None else [dict(p) for p in self.processes],
        }


class GpuReadings(list):
    """A list of GpuReading that also says how many rows of its file were skipped, and why (first few)."""

    def __init__(self, items=(), skipped: int = 0, problems: list[str] | None = None, path: str | None = None):
        super().__init__(items)
        self.skipped = skipped
        self.problems = list(problems or [])
        self.path = path


# --- nvidia-smi CSV -----------------------------------------------------------------------------------------

_NOT_A_VALUE = {"", "n/a", "[n/a]", "na"}


def _is_missing(cell: str) -> bool:
    # nvidia-smi writes every unavailable value in brackets: [N/A], [Not Supported], [Unknown Error],
    # [Insufficient Permissions], [GPU is lost], [GPU requires reset] ...
    return cell.lower() in _NOT_A_VALUE or (cell.startswith("[") and cell.endswith("]"))


def _parse_time(cell: str) -> datetime:
    for fmt in (TIMESTAMP_FORMAT, "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(cell, fmt)
        except ValueError:
            pass
    ts = datetime.fromisoformat(cell)  # a hand-made log; raises ValueError for anything else
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def _parse_cell(cell: str, kind: str, unit: str, column: str):
    """One cell's value; None for nvidia-smi's bracketed not-available markers; ValueError when malformed."""
    if kind == "str":
        return "" if _is_missing(cell) else cell
    if _is_missing(cell):
        return None
    if kind == "time":
        return _parse_time(cell)
    if kind == "hex":
        if not re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}", cell):
            raise ValueError(f"{column}: {cell!r} is not a hex bitmask")
        return int(cell, 16)
    parts = cell.split()
    if len(parts) == 2 and unit and parts[1] == unit:
        text = parts[0]
    elif len(parts) == 1:
        text = parts[0]  # --format=csv,nounits
    else:
        raise ValueError(f"{column}: {cell!r} is not a number in {unit or 'no unit'}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column}: {cell!r} is not finite")
    if value < 0 or (kind == "int" and column == "utilization.gpu" and value > 100):
        raise ValueError(f"{column}: {cell!r} is out of range")
    return int(round(value)) if kind == "int" else value


def _header(cells: list[str]) -> list[tuple[str, str, str, str]] | None:
    """(column, field, kind, unit) per cell for a header line; None when the line is not a header."""
    columns, taken = [], set()
    for cell in cells:
        m = _HEADER_RE.match(cell)
        name = m.group("name").strip() if m else cell
        known = _COLUMNS.get(name)
        if known and known[0] not in taken:  # the first of two columns for one field wins (power.draw.*)
            taken.add(known[0])
            columns.append((name, *known))
        else:
            columns.append((name, "", "", ""))
    return columns if any(c[1] == "timestamp" or c[0] == "index" for c in columns) else None


def _split(line: str) -> list[str]:
    # nvidia-smi separates with ", " and never quotes (GPU names hold no commas).
    return [c.strip() for c in line.rstrip("\r\n").split(",")]


def parse_nvidia_smi_csv(path: str | Path) -> GpuReadings:
    """Readings from an `nvidia-smi --query-gpu=... --format=csv[,nounits][,noheader] [-l N]` log.

    Columns are found by their header names (any order, extra columns ignored; `clocks.sm`/`clocks.current.sm`,
    `clocks_throttle_reasons.active`/`clocks_event_reasons.active` alike). Without a header line the columns of
    `QUERY` are assumed. Required: timestamp, index and the SM clock; a missing optional column leaves its
    field None. A file that cannot be read as such a log raises UserError naming it; a malformed row (wrong
    number of cells, a bad number, NaN/Inf, a bad timestamp) is skipped and counted in `.skipped`.
    """
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise UserError(f"cannot read the nvidia-smi CSV ({exc.strerror or type(exc).__name__})", path) from None
    readings = GpuReadings(path=str(path))
    columns = header_line = None
    rows = 0
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            cells = _split(line)
            if columns is None:
                columns = _header(cells)
                if columns is not None:
                    header_line = cells
                    _check_columns(columns, path)
                    continue
                columns = _headerless(cells, path, line)
            elif cells == header_line:
                continue  # logs appended across several nvidia-smi runs repeat the header
            rows += 1
            try:
                readings.append(_row(cells, columns))
            except ValueError as exc:
                readings.skipped += 1
                if len(readings.problems) < 5:
                    readings.problems.append(f"line {number}: {exc}")
    if columns is None:
        raise UserError("empty file: no nvidia-smi CSV header or samples", path)
    if rows and not readings:
        raise UserError(f"no readable samples: all {rows} rows are malformed ({readings.problems[0]})", path)
    return readings


def _check_columns(columns, path: Path) -> None:
    fields = {c[1] for c in columns}
    for need in _REQUIRED:
        if need not in fields:
            wanted = {"timestamp": "timestamp", "index": "index", "sm_clock_mhz": "clocks.sm"}[need]
            raise UserError(f"no {wanted} column in the nvidia-smi CSV header (query it with {QUERY})", path, key=wanted)


def _headerless(cells: list[str], path: Path, line: str):
    default = _header(_split(HEADER))
    try:
        _parse_time(cells[0])
        ok = len(cells) == len(default)
    except ValueError:
        ok = False
    if not ok:
        first = line.strip()
        first = first if len(first) <= 80 else first[:77] + "..."
        raise UserError(f"not an nvidia-smi CSV: no header line (timestamp, index, clocks.current.sm [MHz], ...) "
                        f"and the first line is not a sample of `{NVIDIA_SMI_COMMAND}`: {first!r}", path)
    return default


def _row(cells: list[str], columns) -> GpuReading:
    if len(cells) != len(columns):
        raise ValueError(f"{len(cells)} cells where the header has {len(columns)} (truncated or garbled line)")
    values: dict = {}
    for cell, (column, fld, kind, unit) in zip(cells, columns, strict=True):
        if fld:
            values[fld] = _parse_cell(cell, kind, unit, column)
    for need in ("timestamp", "index"):
        if values.get(need) is None:
            raise ValueError(f"no {need}")
    return GpuReading(**values)


def _cell(value, unit: str = "") -> str:
    if value is None:
        return "[N/A]"
    return f"{value} {unit}" if unit else str(value)


def write_nvidia_smi_csv(readings, path: str | Path) -> Path:
    """Write readings as `nvidia-smi --query-gpu=<QUERY> --format=csv` prints them (header `HEADER`).

    parse_nvidia_smi_csv reads the file back to equal readings, except `processes` (no such column: None).
    Timestamps are written to the millisecond and power to 0.01 W, as nvidia-smi does.
    """
    path = Path(path)
    lines = [HEADER]
    for r in readings:
        mask = "[N/A]" if r.reasons_mask is None else f"0x{r.reasons_mask:016X}"
        power = None if r.power_w is None else f"{r.power_w:.2f}"
        lines.append(", ".join([
            r.timestamp.strftime(TIMESTAMP_FORMAT)[:-3], str(r.index), r.name or "[N/A]", _cell(r.util_pct, "%"),
            _cell(r.sm_clock_mhz, "MHz"), _cell(r.mem_clock_mhz, "MHz"), _cell(r.temperature_c),
            _cell(power, "W"), mask, _cell(r.memory_used_mib, "MiB"), _cell(r.memory_total_mib, "MiB"),
        ]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def evidence_from_csv(path: str | Path, deployed_at: datetime | None = None) -> Evidence:
    """parse_nvidia_smi_csv then gpu_evidence (raises UserError for an unreadable file)."""
    return gpu_evidence(parse_nvidia_smi_csv(path), deployed_at=deployed_at)


# --- NVML readings as JSON (what NvmlSampler records, processes included) -----------------------------------

JSON_FORMAT = "diagnose-gpu-readings/1"


def write_readings_json(readings, path: str | Path, **meta) -> Path:
    """Readings with every field (processes too) as {"format", ...meta, "readings": [GpuReading.to_dict()]}."""
    path = Path(path)
    head = json.dumps({"format": JSON_FORMAT, **meta}, indent=1)[:-2]  # without the closing brace
    rows = ",\n".join("  " + json.dumps(r.to_dict()) for r in readings)  # one reading a line: small diffs
    path.write_text(f'{head},\n "readings": [\n{rows}\n ]\n}}\n' if rows else f'{head},\n "readings": []\n}}\n',
                    encoding="utf-8")
    return path


def _json_reading(item: dict) -> GpuReading:
    if not isinstance(item, dict):
        raise ValueError("not an object")

    def num(key, kind=int):
        value = item.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key}: {value!r} is not a non-negative number")
        return int(value) if kind is int else float(value)

    processes = item.get("processes")
    if processes is not None:
        if not isinstance(processes, list) or not all(isinstance(p, dict) and "pid" in p for p in processes):
            raise ValueError("processes: not a list of {pid, name, used_mib}")
        processes = [{"pid": int(p["pid"]), "name": str(p.get("name") or ""),
                      "used_mib": None if p.get("used_mib") is None else int(p["used_mib"])} for p in processes]
    mask = item.get("reasons_mask")
    if mask is not None and (isinstance(mask, bool) or not isinstance(mask, int) or mask < 0):
        raise ValueError(f"reasons_mask: {mask!r} is not a bitmask")
    return GpuReading(
        timestamp=_parse_time(str(item["timestamp"])), index=num("index"), name=str(item.get("name") or ""),
        util_pct=num("util_pct"), sm_clock_mhz=num("sm_clock_mhz"), mem_clock_mhz=num("mem_clock_mhz"),
        temperature_c=num("temperature_c"), power_w=num("power_w", float), reasons=list(item.get("reasons") or []),
        memory_used_mib=num("memory_used_mib"), memory_total_mib=num("memory_total_mib"),
        processes=processes, reasons_mask=mask)


def read_readings_json(path: str | Path) -> GpuReadings:
    """The inverse of write_readings_json; a malformed entry is skipped and counted like a CSV row."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read the GPU readings ({exc.strerror or type(exc).__name__})", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not a JSON file of GPU readings ({exc})", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("readings"), list):
        raise UserError(f"no `readings` list (expected {{\"format\": \"{JSON_FORMAT}\", \"readings\": [...]}})",
                        path, key="readings")
    out = GpuReadings(path=str(path))
    for i, item in enumerate(doc["readings"]):
        try:
            out.append(_json_reading(item))
        except (KeyError, TypeError, ValueError) as exc:
            out.skipped += 1
            if len(out.problems) < 5:
                out.problems.append(f"readings[{i}]: {exc}")
    if doc["readings"] and not out:
        raise UserError(f"no readable samples ({out.problems[0]})", path, key="readings")
    return out


# --- evidence -----------------------------------------------------------------------------------------------

def _naive_utc(ts: datetime | None) -> datetime | None:
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _busy(readings: list[GpuReading]) -> list[int]:
    """SM clocks of the samples where the GPU was not idle (an idle GPU parks its clock; that is no slowdown)."""
    clocks = [r.sm_clock_mhz for r in readings if r.sm_clock_mhz is not None and "GpuIdle" not in r.reasons]
    return clocks or [r.sm_clock_mhz for r in readings if r.sm_clock_mhz is not None]


def _gpu(index: int, rs: list[GpuReading], deploy: datetime | None, own_pids) -> dict:
    if deploy is not None:
        before = [r for r in rs if r.timestamp < deploy]
        after = [r for r in rs if r.timestamp >= deploy]
    else:
        before, after = [], rs
    busy_all, busy_after = _busy(rs), _busy(after)
    if before and _busy(before):
        baseline, clock_before = "before_deploy", _median(_busy(before))
    else:
        baseline, clock_before = "max_seen", (float(max(busy_all)) if busy_all else None)
    clock_after = _median(busy_after)
    drop = None
    if clock_before and clock_after is not None:
        drop = round((clock_before - clock_after) / clock_before * 100, 1)

    known = [r for r in after if r.reasons_mask is not None]
    shares: dict[str, float] = {}
    for name in REASON_BITS.values():
        n = sum(name in r.reasons for r in known)
        if n:
            shares[name] = round(n / len(known), 3)
    for r in known:  # bits this module has no name for
        for name in r.reasons:
            if name.startswith("Unknown") and name not in shares:
                shares[name] = round(sum(name in k.reasons for k in known) / len(known), 3)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 1) if values else None

    used_after = [r.memory_used_mib for r in after if r.memory_used_mib is not None]
    used_before = [r.memory_used_mib for r in before if r.memory_used_mib is not None]
    totals = [r.memory_total_mib for r in rs if r.memory_total_mib is not None]
    temps = [r.temperature_c for r in after if r.temperature_c is not None]

    foreign = None
    with_procs = [r for r in (after or rs) if r.processes is not None]
    if with_procs:
        seen: dict[int, dict] = {}
        for r in with_procs:
            for p in r.processes:
                if p["pid"] in own_pids:
                    continue
                entry = seen.setdefault(p["pid"], {"pid": p["pid"], "name": p.get("name") or "", "used_mib": None})
                if p.get("used_mib") is not None:
                    entry["used_mib"] = max(entry["used_mib"] or 0, p["used_mib"])
        foreign = sorted(seen.values(), key=lambda p: p["pid"])
    util_after = mean(r.util_pct for r in after)
    return {
        "index": index,
        "name": next((r.name for r in reversed(rs) if r.name), ""),
        "samples_before": len(before),
        "samples_after": len(after),
        "baseline": baseline,
        "sm_clock_mhz_before": clock_before,
        "sm_clock_mhz_after": clock_after,
        "sm_clock_mhz_max": float(max(busy_all)) if busy_all else None,
        "clock_drop_pct": drop,
        "mem_clock_mhz_after": _median(r.mem_clock_mhz for r in after),
        "reasons_after": shares,
        "reasons_recorded": bool(known),
        "temperature_c_after": _median(temps),
        "temperature_c_max_after": max(temps) if temps else None,
        "power_w_after": _round(_median(r.power_w for r in after), 2),
        "util_pct_before": mean(r.util_pct for r in before),
        "util_pct_after": util_after,
        "saturated": None if util_after is None else util_after >= SATURATED_PCT,
        "memory_used_mib_before": max(used_before) if used_before else None,
        "memory_used_mib_after": max(used_after) if used_after else None,
        "memory_total_mib": totals[-1] if totals else None,
        "foreign_processes": foreign,
    }


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _summary(g: dict, deployed: bool) -> list[str]:
    head = f"GPU {g['index']} ({g['name']})" if g["name"] else f"GPU {g['index']}"
    if deployed and not g["samples_after"]:
        return [f"{head}: no samples after the deploy"]
    b, a, drop = g["sm_clock_mhz_before"], g["sm_clock_mhz_after"], g["clock_drop_pct"]
    when = "after the deploy" if deployed else "during the run"
    if a is None:
        clock = "SM clock not recorded"
    elif drop is None:
        clock = f"SM clock {a:.0f} MHz"
    elif abs(drop) < CLOCK_STEADY_PCT:
        ref = f"{b:.0f} before the deploy" if g["baseline"] == "before_deploy" else f"highest seen {b:.0f}"
        clock = f"SM clock steady at {a:.0f} MHz ({ref})"
    elif g["baseline"] == "before_deploy":
        clock = f"SM clock {b:.0f} -> {a:.0f} MHz ({-drop:+.0f}%) {when}"
    else:
        clock = f"SM clock median {a:.0f} MHz {when}, {drop:.0f}% below the highest seen ({b:.0f} MHz)"
    parts = [clock]
    active = [(n, s) for n, s in g["reasons_after"].items() if n not in BENIGN_REASONS and s >= REASON_SHARE]
    bits = {name: bit for bit, name in REASON_BITS.items()}
    active.sort(key=lambda item: (-item[1], -bits.get(item[0], 0)))  # ties: the specific reason before HwSlowdown
    if active:
        words = [f"{REASON_WORDS.get(n, n)} active in {_pct(s)} of samples" if i == 0 else
                 f"{REASON_WORDS.get(n, n)} in {_pct(s)}" for i, (n, s) in enumerate(active)]
        parts.append(", ".join(words))
    elif g["reasons_recorded"]:
        parts.append("no clock throttling")
    else:
        parts.append("throttle reasons not recorded")
    heat = []
    if g["temperature_c_after"] is not None:
        hottest = g["temperature_c_max_after"]
        peak = f" (max {hottest} C)" if hottest > g["temperature_c_after"] + 1 else ""
        heat.append(f"{g['temperature_c_after']:.0f} C{peak}")
    if g["power_w_after"] is not None:
        heat.append(f"{g['power_w_after']:.0f} W")
    if heat:
        parts.append(", ".join(heat))
    lines = [f"{head}: " + "; ".join(parts)]

    load = []
    if g["util_pct_after"] is not None:
        ub = f" ({g['util_pct_before']:.0f}% before)" if g["util_pct_before"] is not None else ""
        busy = f"{g['util_pct_after']:.0f}% busy {when}{ub}"
        if g["saturated"]:
            busy += ": saturated"
            before = g["util_pct_before"]
            if deployed and before is not None and before >= SATURATED_PCT and not g["foreign_processes"]:
                busy += ", and already before the deploy: look for another workload sharing this GPU"
        load.append(busy)
    if g["memory_used_mib_after"] is not None:
        total = f" of {_gib(g['memory_total_mib'])}" if g["memory_total_mib"] else ""
        load.append(f"memory {_gib(g['memory_used_mib_after'])}{total} used")
    if load:
        lines.append(f"GPU {g['index']}: " + "; ".join(load))
    foreign = g["foreign_processes"]
    if foreign:
        procs = ", ".join(f"pid {p['pid']} {p['name'] or '?'}" + (f" ({_gib(p['used_mib'])})" if p["used_mib"] else "")
                          for p in foreign)
        n = len(foreign)
        lines.append(f"GPU {g['index']}: {n} other process{'es' if n != 1 else ''} on the GPU: {procs}")
    elif foreign == []:
        lines.append(f"GPU {g['index']}: no other process on the GPU")
    return lines


def gpu_evidence(readings, deployed_at: datetime | None = None, own_pids=frozenset()) -> Evidence:
    """Per GPU: SM clock before vs after the deploy, the throttle reasons after, heat, power, load, co-tenants.

    With `deployed_at`, samples at or after it are "after" and the baseline is the median SM clock of the
    samples before it; without it (or with no sample before it) every sample is "after" and the baseline is
    the highest SM clock seen. Clock medians leave out samples with GpuIdle set. `own_pids` are the serving
    processes: any other process NVML lists on a GPU is foreign. Data keys: docs/signals.md, section GPU.
    """
    skipped = getattr(readings, "skipped", 0)  # rows of the file parse_nvidia_smi_csv skipped
    readings = list(readings)
    if not readings:
        return Evidence.unavailable(SOURCE, "no GPU samples were recorded")
    deploy = _naive_utc(deployed_at)
    own = set(own_pids)
    by_gpu: dict[int, list[GpuReading]] = {}
    for r in sorted(readings, key=lambda r: (r.index, r.timestamp)):
        by_gpu.setdefault(r.index, []).append(r)
    first = min(r.timestamp for r in readings)
    last = max(r.timestamp for r in readings)
    if deploy is not None and last < deploy:
        return Evidence.unavailable(SOURCE, f"no GPU samples after the deploy at {deploy.isoformat(sep=' ')}: "
                                            f"the last one is at {last.isoformat(sep=' ')}")
    gpus = [_gpu(index, rs, deploy, own) for index, rs in by_gpu.items()]

    drops = [g["clock_drop_pct"] for g in gpus if g["clock_drop_pct"] is not None]
    reasons = {n for g in gpus for n, s in g["reasons_after"].items() if s >= REASON_SHARE and n not in BENIGN_REASONS}
    order = list(REASON_BITS.values())
    known_procs = [g["foreign_processes"] for g in gpus if g["foreign_processes"] is not None]
    data = {
        "gpus": gpus,
        "clock_drop_pct": max(drops) if drops else None,
        "throttle_reasons": sorted(reasons, key=lambda n: order.index(n) if n in order else len(order)),
        "foreign_processes": len({p["pid"] for procs in known_procs for p in procs}) if known_procs else None,
        "deployed_at": None if deploy is None else deploy.isoformat(timespec="milliseconds"),
        "first_sample": first.isoformat(timespec="milliseconds"),
        "last_sample": last.isoformat(timespec="milliseconds"),
        "samples": len(readings),
        "skipped_rows": skipped,
    }
    summary = [line for g in gpus for line in _summary(g, deploy is not None)]
    if not known_procs:
        summary.append("processes not recorded (nvidia-smi's --query-gpu CSV has none; live NVML sampling lists them)")
    if skipped:
        summary.append(f"{skipped} malformed row{'s' if skipped != 1 else ''} of the GPU log skipped")
    return Evidence(source=SOURCE, status="ok", data=data, summary=summary)


# --- live NVML ----------------------------------------------------------------------------------------------

def _utcnow_ms() -> datetime:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_error(nvml):
    err = getattr(nvml, "NVMLError", None)
    return err if isinstance(err, type) and issubclass(err, BaseException) else Exception


def open_nvml(nvml=None):
    """(the NVML module, initialised) or (None, the reason it is unavailable). Imports pynvml lazily."""
    if nvml is None:
        try:
            import pynvml as nvml  # noqa: PLC0415 - lazy: the package is optional (extra `gpu`)
        except ImportError as exc:
            return None, f"NVML Python binding not installed (pip install nvidia-ml-py): {exc}"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ... : no usable GPU here
        return None, f"no NVIDIA GPU: nvmlInit failed: {_text(exc) or type(exc).__name__}"
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception as exc:
        _shutdown(nvml)
        return None, f"no NVIDIA GPU: nvmlDeviceGetCount failed: {_text(exc) or type(exc).__name__}"
    if not count:
        _shutdown(nvml)
        return None, "no NVIDIA GPU: NVML found 0 devices"
    return nvml, ""


def _shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def nvml_reading(nvml, handle, index: int, timestamp: datetime | None = None, name: str | None = None,
                 process_names: dict | None = None) -> GpuReading:
    """One GpuReading of one device through an initialised NVML module (pynvml, or anything with its API).

    A value the device does not support (NVMLError) is None; nothing here raises for one missing value.
    """
    err = _nvml_error(nvml)

    def get(fn, *args):
        try:
            return getattr(nvml, fn)(*args)
        except (err, AttributeError):
            return None

    ts = timestamp or _utcnow_ms()
    if name is None:
        raw = get("nvmlDeviceGetName", handle)
        name = _text(raw) if raw is not None else ""
    sm = get("nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1))
    mem = get("nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_MEM", 2))
    mask = get("nvmlDeviceGetCurrentClocksEventReasons", handle)
    if mask is None:  # drivers before 535 only have the older name
        mask = get("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
    temp = get("nvmlDeviceGetTemperature", handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    power_mw = get("nvmlDeviceGetPowerUsage", handle)
    util = get("nvmlDeviceGetUtilizationRates", handle)
    memory = get("nvmlDeviceGetMemoryInfo", handle)
    procs = get("nvmlDeviceGetComputeRunningProcesses", handle)
    processes = None
    if procs is not None:
        names = process_names if process_names is not None else {}
        processes = []
        for p in procs:
            pid = int(p.pid)
            if pid not in names:
                raw = get("nvmlSystemGetProcessName", pid)
                names[pid] = _text(raw) if raw is not None else ""
            used = getattr(p, "usedGpuMemory", None)
            processes.append({"pid": pid, "name": names[pid], "used_mib": None if used is None else int(used) // 2**20})
    return GpuReading(
        timestamp=ts, index=index, name=name,
        util_pct=None if util is None else int(util.gpu),
        sm_clock_mhz=None if sm is None else int(sm),
        mem_clock_mhz=None if mem is None else int(mem),
        temperature_c=None if temp is None else int(temp),
        power_w=None if power_mw is None else round(power_mw / 1000, 2),
        memory_used_mib=None if memory is None else int(memory.used) // 2**20,
        memory_total_mib=None if memory is None else int(memory.total) // 2**20,
        processes=processes,
        reasons_mask=None if mask is None else int(mask),
    )


class NvmlSampler:
    """Samples every GPU through NVML at start(), every `interval_s` from a thread, and at stop().

    `nvml` is the NVML module (default: `import pynvml`, done in start(), never at import). stop() returns
    gpu_evidence over the samples, or Evidence.unavailable with the reason when there is no NVML library or
    no GPU; it never raises. Also a Collector (`name`, `collect()`): collect() stops a running sampler, or
    takes a one-shot sample when it was never started. `own_pids` defaults to this process; inside a
    container NVML lists host PIDs, so pass the serving processes' host PIDs there.
    """

    name = SOURCE

    def __init__(self, nvml=None, interval_s: float | None = 0.5, deployed_at: datetime | None = None,
                 own_pids=None):
        self._nvml_arg = nvml
        self.interval_s = interval_s
        self.deployed_at = deployed_at
        self.own_pids = {os.getpid()} if own_pids is None else set(own_pids)
        self.readings: list[GpuReading] = []
        self.errors: list[str] = []
        self.evidence: Evidence | None = None
        self.reason = ""
        self._nvml = None
        self._devices: list[tuple[int, object, str]] = []
        self._names: dict[int, str] = {}
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._started and self.evidence is None

    def start(self) -> None:
        """Open NVML and take the first sample; an unavailable NVML is recorded for stop(), never raised."""
        if self.running:  # a second start() ends the first collection
            self.stop()
        self.readings, self.errors, self.evidence, self.reason = [], [], None, ""
        self._started, self._devices = True, []
        self._stop.clear()
        try:
            self._nvml, self.reason = open_nvml(self._nvml_arg)
            if self._nvml is None:
                return
            for i in range(self._nvml.nvmlDeviceGetCount()):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    name = _text(self._nvml.nvmlDeviceGetName(handle))
                except Exception:
                    name = ""
                self._devices.append((i, handle, name))
        except Exception as exc:
            self.evidence = Evidence.error(SOURCE, exc)
            self._close()
            return
        self.sample()
        if self.interval_s:
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> list[GpuReading]:
        """One reading of every GPU now (also called by the thread); failures are noted, never raised."""
        if self._nvml is None:
            return []
        taken = []
        ts = _utcnow_ms()
        with self._lock:
            for index, handle, name in self._devices:
                try:
                    taken.append(nvml_reading(self._nvml, handle, index, ts, name, self._names))
                except Exception as exc:
                    if len(self.errors) < 20:
                        self.errors.append(f"GPU {index}: {type(exc).__name__}: {exc}")
            self.readings.extend(taken)
        return taken

    def mark_deploy(self, at: datetime | None = None) -> None:
        """Samples from now on (or from `at`) are "after the deploy"."""
        self.deployed_at = at or _utcnow_ms()

    def _close(self) -> None:
        if self._nvml is not None:
            _shutdown(self._nvml)
            self._nvml = None

    def stop(self) -> Evidence:
        """The last sample and the evidence over all of them; never raises."""
        if not self._started:
            return self.evidence or Evidence.unavailable(SOURCE, "the GPU sampler was never started")
        if self.evidence is not None:
            return self.evidence
        try:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            if self.reason:
                self.evidence = Evidence.unavailable(SOURCE, self.reason)
            else:
                self.sample()
                self._close()
                self.evidence = gpu_evidence(self.readings, deployed_at=self.deployed_at, own_pids=self.own_pids)
                if self.errors and self.evidence.ok:
                    self.evidence.data["sample_errors"] = list(self.errors)
        except Exception as exc:
            self._close()
            self.evidence = Evidence.error(SOURCE, exc)
        return self.evidence

    def collect(self) -> Evidence:
        if not self._started:
            self.start()
        return self.stop()

    def save(self, folder: str | Path, stem: str = "gpu") -> tuple[Path, Path]:
        """Write `<stem>.csv` (nvidia-smi format) and `<stem>.nvml.json` (every field) into a run folder."""
        folder = Path(folder)
        meta = {"source": "nvml", "interval_s": self.interval_s,
                "deployed_at": None if self.deployed_at is None else _naive_utc(self.deployed_at).isoformat(),
                "own_pids": sorted(self.own_pids)}
        return (write_nvidia_smi_csv(self.readings, folder / f"{stem}.csv"),
                write_readings_json(self.readings, folder / f"{stem}.nvml.json", **meta))
