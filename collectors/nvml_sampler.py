"""GPU readings taken live through NVML: one device at a time (`nvml_reading`), or every GPU from a background
thread for the length of a run (`NvmlSampler`).

NVML comes from `pynvml` (the `nvidia-ml-py` package), imported lazily so this module imports on machines
without it; no GPU, no library or an unsupported value is said, never raised.
"""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from collectors.gpu_evidence import SOURCE, gpu_evidence
from collectors.gpu_readings import GpuReading, naive_utc
from collectors.gpu_readings_json import write_readings_json
from collectors.nvidia_smi import write_nvidia_smi_csv
from diagnose.core.evidence import Evidence


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
            import pynvml as nvml  # noqa: PLC0415 - lazy: imported only where a GPU is looked for
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
                evidence = gpu_evidence(self.readings, deployed_at=self.deployed_at, own_pids=self.own_pids)
                if self.errors and evidence.ok:
                    evidence = replace(evidence, data={**evidence.data, "sample_errors": list(self.errors)})
                self.evidence = evidence
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
                "deployed_at": None if self.deployed_at is None else naive_utc(self.deployed_at).isoformat(),
                "own_pids": sorted(self.own_pids)}
        return (write_nvidia_smi_csv(self.readings, folder / f"{stem}.csv"),
                write_readings_json(self.readings, folder / f"{stem}.nvml.json", **meta))
