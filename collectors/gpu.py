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

This module is the facade over the pieces, each in its own module: `gpu_readings` (the reading type, the
reasons bitmask, timestamps), `nvidia_smi` (the CSV), `gpu_readings_json` (the JSON with processes),
`gpu_evidence` (the Evidence and its summary) and `nvml_sampler` (live NVML).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from collectors.gpu_evidence import gpu_evidence
from collectors.gpu_readings import REASON_BITS, GpuReading, GpuReadings, decode_reasons, encode_reasons
from collectors.gpu_readings_json import read_readings_json, write_readings_json
from collectors.nvidia_smi import HEADER, QUERY, parse_nvidia_smi_csv, write_nvidia_smi_csv
from collectors.nvml_sampler import NvmlSampler, nvml_reading
from diagnose.core.evidence import Evidence

__all__ = ["HEADER", "QUERY", "REASON_BITS", "GpuReading", "GpuReadings", "NvmlSampler", "decode_reasons",
           "encode_reasons", "evidence_from_csv", "gpu_evidence", "nvml_reading", "parse_nvidia_smi_csv",
           "read_readings_json", "write_nvidia_smi_csv", "write_readings_json"]


def evidence_from_csv(path: str | Path, deployed_at: datetime | None = None) -> Evidence:
    """parse_nvidia_smi_csv then gpu_evidence (raises UserError for an unreadable file)."""
    return gpu_evidence(parse_nvidia_smi_csv(path), deployed_at=deployed_at)
