"""nvidia-smi's CSV logs: reading what `nvidia-smi --query-gpu=... --format=csv -l 1` printed, and writing one.

The log the on-call engineer already has, or one recorded on the serving host around the deploy. Columns are
found by their header names, and nvidia-smi's bracketed not-available markers ([N/A], [Not Supported], ...)
are missing values, never errors; a malformed row is skipped and counted.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from collectors.gpu_readings import TIMESTAMP_FORMAT, GpuReading, GpuReadings, parse_timestamp
from diagnose.core.errors import UserError

# The query this module documents, writes and assumes for a file without a header (`--format=csv,noheader`).
QUERY = ("timestamp,index,name,utilization.gpu,clocks.sm,clocks.mem,temperature.gpu,power.draw,"
         "clocks_throttle_reasons.active,memory.used,memory.total")
NVIDIA_SMI_COMMAND = f"nvidia-smi --query-gpu={QUERY} --format=csv -l 1"
# The header nvidia-smi prints for that query: aliases are printed under their canonical names, with units.
HEADER = ("timestamp, index, name, utilization.gpu [%], clocks.current.sm [MHz], clocks.current.memory [MHz], "
          "temperature.gpu, power.draw [W], clocks_throttle_reasons.active, memory.used [MiB], memory.total [MiB]")

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

_NOT_A_VALUE = {"", "n/a", "[n/a]", "na"}


def _is_missing(cell: str) -> bool:
    # nvidia-smi writes every unavailable value in brackets: [N/A], [Not Supported], [Unknown Error],
    # [Insufficient Permissions], [GPU is lost], [GPU requires reset] ...
    return cell.lower() in _NOT_A_VALUE or (cell.startswith("[") and cell.endswith("]"))


def _parse_cell(cell: str, kind: str, unit: str, column: str):
    """One cell's value; None for nvidia-smi's bracketed not-available markers; ValueError when malformed."""
    if kind == "str":
        return "" if _is_missing(cell) else cell
    if _is_missing(cell):
        return None
    if kind == "time":
        return parse_timestamp(cell)
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
        parse_timestamp(cells[0])
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
