"""One GPU at one instant (`GpuReading`), however it was read: nvidia-smi's CSV, NVML live, or their JSON.

Also what every reader and the evidence share about a reading: NVML's clock-event ("throttle") reasons bitmask
and its names, and the timestamps. Timestamps are naive: nvidia-smi prints the host's local time, the sampler
records UTC, and an aware time is made naive UTC before it is compared with one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

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
# How nvidia-smi prints a timestamp (the host's local time, to the millisecond).
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S.%f"


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


def parse_timestamp(cell: str) -> datetime:
    """nvidia-smi's own timestamp ("2026/11/20 10:00:00.123", its local time, kept naive) or ISO 8601 (as
    GpuReading.to_dict writes it; an aware one becomes naive UTC); ValueError for anything else."""
    for fmt in (TIMESTAMP_FORMAT, "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(cell, fmt)
        except ValueError:
            pass
    ts = datetime.fromisoformat(cell)  # a hand-made log; raises ValueError for anything else
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def naive_utc(ts: datetime | None) -> datetime | None:
    """An aware time as naive UTC, to compare with readings' naive timestamps; a naive one as it is."""
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(timezone.utc).replace(tzinfo=None)
