"""CPU throttling and memory pressure of a process's cgroup, from cgroup v1 or v2 files.

A pod whose CPU limit is too tight for a heavier model gets throttled by the CFS bandwidth controller, and
its latency jumps although the model and inputs are innocent; a container near its memory limit reclaims
and swaps, or is OOM-killed. Both are visible only in the cgroup's own counters, so the benchmark reads
them before and after (CgroupSampler) and `throttling_evidence` turns the difference into Evidence.

The roots are injectable (as in prometheus/client_python's process collector), so tests read real-format
files written into a temporary folder, and a reader can be pointed at another process (`pid=`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.core.evidence import Evidence

SOURCE = "cgroup"
# v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes (9223372036854771712 on 4 KiB pages); anything
# this large is no real limit.
UNLIMITED_BYTES = 2**62
# kubernetes-mixin's CPUThrottlingHigh alert fires above 25% throttled periods.
THROTTLING_HIGH_RATIO = 0.25


@dataclass(frozen=True)
class CgroupSnapshot:
    """The cgroup's counters at one instant; a field is None when its file is absent here."""

    version: int
    path: str
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_s: float | None = None
    usage_s: float | None = None
    quota_cores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    oom_kills: int | None = None
    taken_at: float = field(default_factory=time.time)
    # v1 controllers can put one process in different cgroups (here memory may sit elsewhere than cpu).
    memory_path: str | None = None
    root: str = ""
    # Why fields are None (a missing controller, a missing file), for the `unavailable` reason.
    notes: tuple[str, ...] = ()


def _read(path: Path | None, notes: list[str]) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:  # missing, or a file the kernel refuses to show: the field is just unknown
        notes.append(f"cannot read {path} ({exc.strerror or type(exc).__name__})")
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _keyed(text: str | None) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.events, memory.oom_control) as a dict; odd lines skipped."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED_BYTES else value


class CgroupReader:
    """Reads one process's cgroup counters (this process unless `pid` is given).

    v2 is assumed when `root/cgroup.controllers` exists and there is no `root/cpu` directory (a hybrid
    host mounts v1 controllers beside a v2 `unified` tree and is read as v1). The process's cgroup per
    controller comes from /proc/<pid>/cgroup and is resolved once, here, so that before and after snapshots
    read the same cgroup even if the process has exited by the time of the last one.
    """

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup"),
                 pid: int | None = None):
        self.root = Path(root)
        self.pid = pid
        proc_self_cgroup = Path(proc_self_cgroup)
        # /proc/self/cgroup -> /proc/<pid>/cgroup; an injected fake proc tree maps the same way.
        self.proc_cgroup = proc_self_cgroup if pid is None else proc_self_cgroup.parent.parent / str(pid) / "cgroup"
        self.version = 2 if (self.root / "cgroup.controllers").is_file() and not (self.root / "cpu").is_dir() else 1
        self.notes: list[str] = []
        self.paths: dict[str, str] = {}      # controller ("cpu", "cpuacct", "memory"; "" for v2) -> cgroup path
        self.dirs: dict[str, Path | None] = {"cpu": None, "cpuacct": None, "memory": None}
        self._resolve()

    def _resolve(self) -> None:
        text = _read(self.proc_cgroup, self.notes)
        if text is None:
            return
        joined: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.strip().split(":", 2)
            if len(parts) != 3:
                continue
            hier, controllers, path = parts
            if self.version == 2:
                if hier == "0" and controllers == "":
                    self.paths[""] = path
            elif controllers:
                for ctl in controllers.split(","):
                    self.paths[ctl] = path
                    joined[ctl] = controllers
        if self.version == 2:
            if "" not in self.paths:
                self.notes.append(f"{self.proc_cgroup} has no cgroup v2 line (0::/path)")
                return
            folder = self._inside(self.root, self.paths[""])
            self.dirs = {ctl: folder for ctl in self.dirs}
            return
        for ctl in self.dirs:
            if ctl not in self.paths:
                self.notes.append(f"{self.proc_cgroup} has no {ctl} line")
                continue
            mounts = [self.root / ctl, self.root / joined[ctl], self.root / ",".join(reversed(joined[ctl].split(",")))]
            mount = next((m for m in mounts if m.is_dir()), None)
            if mount is None:
                self.notes.append(f"no cgroup {ctl} controller mounted at {self.root}")
                continue
            self.dirs[ctl] = self._inside(mount, self.paths[ctl])

    def _inside(self, mount: Path, path: str) -> Path:
        folder = mount / path.lstrip("/")
        if folder.is_dir() or not mount.is_dir():
            return folder
        # A container without its own cgroup namespace sees its host path in /proc but has its own cgroup
        # bind-mounted as the mount root (the JVM's and cAdvisor's container support read it the same way).
        self.notes.append(f"{folder} does not exist; read {mount} as the process's own cgroup")
        return mount

    def _path(self, ctl: str) -> str | None:
        return self.paths.get("" if self.version == 2 else ctl)

    def snapshot(self) -> CgroupSnapshot:
        """The counters now; a missing file leaves its fields None and never raises."""
        notes = list(self.notes)
        taken_at = time.time()
        values = self._v2(notes) if self.version == 2 else self._v1(notes)
        return CgroupSnapshot(version=self.version, path=self._path("cpu") or "", taken_at=taken_at,
                              memory_path=self._path("memory"), root=str(self.root), notes=tuple(notes), **values)

    def _file(self, ctl: str, name: str) -> Path | None:
        folder = self.dirs.get(ctl)
        return None if folder is None else folder / name

    def _v1(self, notes: list[str]) -> dict:
        stat = _read(self._file("cpu", "cpu.stat"), notes)
        cpu = _keyed(stat)
        quota = _int(_read(self._file("cpu", "cpu.cfs_quota_us"), notes))
        period = _int(_read(self._file("cpu", "cpu.cfs_period_us"), notes))
        usage_file = self._file("cpuacct", "cpuacct.usage")
        if usage_file is None and self._file("cpu", "cpuacct.usage") is not None:
            usage_file = self._file("cpu", "cpuacct.usage")  # cpu,cpuacct co-mounted without a cpuacct link
        usage_ns = _int(_read(usage_file, notes))
        oom = _keyed(_read(self._file("memory", "memory.oom_control"), notes))
        return {
            "nr_periods": cpu.get("nr_periods"),
            "nr_throttled": cpu.get("nr_throttled"),
            "throttled_s": cpu["throttled_time"] / 1e9 if "throttled_time" in cpu else None,
            "usage_s": usage_ns / 1e9 if usage_ns is not None else None,
            "quota_cores": quota / period if quota is not None and quota > 0 and period else None,
            "memory_bytes": _int(_read(self._file("memory", "memory.usage_in_bytes"), notes)),
            "memory_limit_bytes": _limit(_int(_read(self._file("memory", "memory.limit_in_bytes"), notes))),
            "oom_kills": oom.get("oom_kill"),  # absent before Linux 4.13
        }

    def _v2(self, notes: list[str]) -> dict:
        cpu = _keyed(_read(self._file("cpu", "cpu.stat"), notes))
        quota_cores = None
        cpu_max = (_read(self._file("cpu", "cpu.max"), notes) or "").split()
        if len(cpu_max) == 2 and cpu_max[0] != "max":
            try:
                quota_cores = int(cpu_max[0]) / int(cpu_max[1])
            except (ValueError, ZeroDivisionError):
                pass
        limit_text = _read(self._file("memory", "memory.max"), notes)
        events = _keyed(_read(self._file("memory", "memory.events"), notes))
        return {
            # nr_periods/nr_throttled/throttled_usec appear only where the cpu controller is enabled.
            "nr_periods": cpu.get("nr_periods"),
            "nr_throttled": cpu.get("nr_throttled"),
            "throttled_s": cpu["throttled_usec"] / 1e6 if "throttled_usec" in cpu else None,
            "usage_s": cpu["usage_usec"] / 1e6 if "usage_usec" in cpu else None,
            "quota_cores": quota_cores,
            "memory_bytes": _int(_read(self._file("memory", "memory.current"), notes)),
            "memory_limit_bytes": None if (limit_text or "").strip() == "max" else _limit(_int(limit_text)),
            "oom_kills": events.get("oom_kill"),
        }


def _delta(a, b):
    return None if a is None or b is None else b - a


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(x, digits)


def _no_cpu_reason(snap: CgroupSnapshot) -> str:
    reason = f"no cgroup cpu controller visible at {snap.root or '/sys/fs/cgroup'}"
    relevant = [n for n in snap.notes if "cpu" in n and "memory" not in n] or list(snap.notes)
    return f"{reason} ({relevant[0]})" if relevant else reason


def throttling_evidence(before: CgroupSnapshot, after: CgroupSnapshot,
                        samples: tuple[CgroupSnapshot, ...] | list[CgroupSnapshot] = ()) -> Evidence:
    """CPU throttling, CPU use and memory pressure of one cgroup between two snapshots.

    The throttled ratio is delta(nr_throttled) / delta(nr_periods), as kubernetes-mixin's CPUThrottlingHigh
    computes it from cAdvisor's container_cpu_cfs_{throttled_,}periods_total. `samples` (snapshots taken in
    between) only add the memory peak.
    """
    for snap in (before, after):
        if snap.nr_periods is None and snap.usage_s is None:
            return Evidence.unavailable(SOURCE, _no_cpu_reason(snap))
    if (before.version, before.path, before.memory_path) != (after.version, after.path, after.memory_path):
        return Evidence.unavailable(SOURCE, f"the snapshots are of different cgroups ({before.path} vs {after.path})")

    interval = after.taken_at - before.taken_at
    periods = _delta(before.nr_periods, after.nr_periods)
    throttled = _delta(before.nr_throttled, after.nr_throttled)
    throttled_s = _delta(before.throttled_s, after.throttled_s)
    usage = _delta(before.usage_s, after.usage_s)
    ooms = _delta(before.oom_kills, after.oom_kills)
    if any(d is not None and d < 0 for d in (periods, throttled, throttled_s, usage, ooms)):
        return Evidence.unavailable(SOURCE, f"cgroup {after.path} counters went backwards between the snapshots "
                                            "(was the cgroup recreated?)")
    ratio = throttled / periods if periods and throttled is not None else None
    cores = usage / interval if usage is not None and interval > 0 else None
    limit, memory = after.memory_limit_bytes, after.memory_bytes
    headroom = (limit - memory) / limit if limit and memory is not None else None
    peaks = [s.memory_bytes for s in (before, *samples, after) if s.memory_bytes is not None]

    data = {
        "version": after.version,
        "path": after.path,
        "memory_path": after.memory_path,
        "interval_s": _round(interval, 3),
        "periods": periods,
        "throttled_periods": throttled,
        "throttled_ratio": _round(ratio, 4),
        "throttling_high": None if ratio is None else ratio > THROTTLING_HIGH_RATIO,
        "throttled_s": _round(throttled_s),
        "cpu_usage_s": _round(usage),
        "cores_used": _round(cores, 4),
        "quota_cores": _round(after.quota_cores, 4),
        "memory_bytes": memory,
        "memory_peak_bytes": max(peaks) if peaks else None,
        "memory_limit_bytes": limit,
        "memory_headroom": _round(headroom, 4),
        "oom_kills": ooms,
        "oom_kills_total": after.oom_kills,
        "samples": 2 + len(samples),
    }

    summary: list[str] = []
    quota = f"quota {after.quota_cores:.3g} cores" if after.quota_cores is not None else "no CPU quota"
    if ratio is not None:
        seconds = f"{throttled_s:.1f} s throttled; " if throttled_s is not None else ""
        summary.append(f"CPU throttled in {ratio:.0%} of {periods} CFS periods during the benchmark ({seconds}{quota})")
    elif after.quota_cores is None and after.nr_periods is not None:
        summary.append("no CPU quota on the cgroup, so CFS throttling cannot happen")
    elif after.nr_periods is not None:
        summary.append(f"CPU {quota}; no CFS period elapsed during the benchmark (the cgroup was idle)")
    else:
        summary.append(f"no CFS throttling counters in cgroup {after.path} (cpu controller not enabled there; {quota})")
    if cores is not None:
        of_quota = f", {cores / after.quota_cores:.0%} of the quota" if after.quota_cores else ""
        summary.append(f"{cores:.2f} cores used on average over {interval:.1f} s ({usage:.2f} s of CPU{of_quota})")
    if memory is not None:
        peak = f", peak {_bytes(max(peaks))}" if peaks and _bytes(max(peaks)) != _bytes(memory) else ""
        if limit:
            summary.append(f"memory {_bytes(memory)} of {_bytes(limit)} limit ({headroom:.0%} headroom{peak})")
        else:
            summary.append(f"memory {_bytes(memory)}, no memory limit{f' ({peak[2:]})' if peak else ''}")
    if ooms:
        summary.append(f"{ooms} OOM kill{'s' if ooms != 1 else ''} in the cgroup during the run")
    elif ooms == 0:
        earlier = f" ({after.oom_kills} before it)" if after.oom_kills else ""
        summary.append(f"no OOM kills in the cgroup during the run{earlier}")
    return Evidence(source=SOURCE, status="ok", data=data, summary=summary)


class CgroupSampler:
    """Snapshots around a benchmark: at start(), at stop(), and every `interval_s` in between if given.

    Also a Collector (`name`, `collect()`), so `collect_safely(sampler)` ends it and never raises. Sampling
    in between is off by default: a thread waking up on a 2-core machine perturbs the latencies measured.
    """

    name = SOURCE

    def __init__(self, reader: CgroupReader, interval_s: float | None = None):
        self.reader = reader
        self.interval_s = interval_s
        self.snapshots: list[CgroupSnapshot] = []
        self.evidence: Evidence | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return bool(self.snapshots) and self.evidence is None

    def start(self) -> None:
        self.snapshots, self.evidence = [self.reader.snapshot()], None
        self._stop.clear()
        if self.interval_s:
            self._thread = threading.Thread(target=self._loop, name="cgroup-sampler", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.snapshots.append(self.reader.snapshot())

    def sample(self) -> CgroupSnapshot:
        """One extra snapshot now (adds to the memory peak)."""
        snap = self.reader.snapshot()
        self.snapshots.append(snap)
        return snap

    def stop(self) -> Evidence:
        """The last snapshot and the evidence over the whole interval; never raises."""
        if not self.running:
            return self.evidence or Evidence.unavailable(SOURCE, "the cgroup sampler was never started")
        try:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            self.snapshots.append(self.reader.snapshot())
            first, *between, last = self.snapshots
            self.evidence = throttling_evidence(first, last, samples=between)
        except Exception as exc:
            self.evidence = Evidence.error(SOURCE, exc)
        return self.evidence

    def collect(self) -> Evidence:
        return self.stop()
