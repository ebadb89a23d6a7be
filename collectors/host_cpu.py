"""Did other work share the CPU with the benchmark? The machine's busy time beside this process's own.

Interleaving makes machine noise hit every cell alike, but not when the cells differ in threads: on a machine
where other processes keep cores busy, a version with more intra-op threads than there are free cores waits on
its slowest thread, and can measure many times slower than with fewer threads (seen here: 2 threads 14x
slower than 1 on 2 cores with one busy-loop beside them). Then a thread change measures the neighbours, not the
model, and the report must say so. This reads `/proc/stat` (all cores' busy jiffies) and this process's CPU
time at the start and end of the benchmark; what the machine spent beyond this process is the others' share.
`proc_root` is injectable, so tests use real files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from diagnose.core.evidence import Evidence

SOURCE = "host"
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (idle 3 and iowait 4 are not busy)
CONTENDED_CORES = 0.5  # other work using at least this many cores on average is a contended benchmark


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    busy_s: float  # all cores, since boot
    own_s: float  # this process, all threads


def read_snapshot(proc_root: Path = Path("/proc")) -> CpuSnapshot:
    fields = (proc_root / "stat").read_text().splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"{proc_root / 'stat'}: first line is not the 'cpu' total")
    ticks = [int(v) for v in fields[1:]]
    busy = sum(ticks[i] for i in BUSY_FIELDS if i < len(ticks)) / os.sysconf("SC_CLK_TCK")
    return CpuSnapshot(wall_s=time.monotonic(), busy_s=busy, own_s=time.process_time())


def contention_evidence(first: CpuSnapshot, last: CpuSnapshot, cores: int) -> Evidence:
    wall = last.wall_s - first.wall_s
    if wall <= 0:
        return Evidence.unavailable(SOURCE, "no time passed between the two readings")
    machine = (last.busy_s - first.busy_s) / wall
    own = (last.own_s - first.own_s) / wall
    others = max(0.0, machine - own)
    free = max(0.0, cores - others)
    data = {"interval_s": round(wall, 3), "cores": cores, "machine_cores_busy": round(machine, 3),
            "own_cores": round(own, 3), "other_cores": round(others, 3), "free_cores": round(free, 3),
            "contended": others >= CONTENDED_CORES}
    summary = [f"other processes kept {others:.2f} of {cores} cores busy during the benchmark (this one used {own:.2f})"]
    if data["contended"]:
        summary.append(f"about {free:.1f} cores were free: a version with more threads than that measures the "
                       "contention, not the model")
    return Evidence(source=SOURCE, status="ok", data=data, summary=summary)


class HostCpuSampler:
    """A reading at start() and at collect(); a Collector, so `collect_safely` ends it and never raises."""

    name = SOURCE

    def __init__(self, proc_root: Path = Path("/proc"), cores: int | None = None):
        self.proc_root = Path(proc_root)
        self.cores = cores or os.cpu_count() or 1
        self.first: CpuSnapshot | None = None

    def start(self) -> None:
        try:
            self.first = read_snapshot(self.proc_root)
        except (OSError, ValueError, IndexError):
            self.first = None  # collect() says why

    def collect(self) -> Evidence:
        if self.first is None:
            if not (self.proc_root / "stat").is_file():
                return Evidence.unavailable(SOURCE, f"no {self.proc_root / 'stat'} on this system")
            return Evidence.unavailable(SOURCE, "the host CPU sampler did not start")
        return contention_evidence(self.first, read_snapshot(self.proc_root), self.cores)
