"""GPU readings as JSON with every field, processes included (what NvmlSampler records beside its CSV).

nvidia-smi's --query-gpu CSV has no column for the processes on a GPU, so a live collection saved only as CSV
would lose its co-tenants; this file keeps them and reads back to equal readings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from collectors.gpu_readings import GpuReading, GpuReadings, parse_timestamp
from diagnose.core.errors import UserError

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
        timestamp=parse_timestamp(str(item["timestamp"])), index=num("index"), name=str(item.get("name") or ""),
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
