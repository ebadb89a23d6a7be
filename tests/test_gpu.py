"""The GPU collector on nvidia-smi CSV logs, on a JSON of NVML readings, without a GPU, and on a real GPU."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from collectors.gpu import (
    HEADER,
    QUERY,
    REASON_BITS,
    GpuReading,
    NvmlSampler,
    decode_reasons,
    encode_reasons,
    evidence_from_csv,
    gpu_evidence,
    nvml_reading,
    parse_nvidia_smi_csv,
    read_readings_json,
    write_nvidia_smi_csv,
    write_readings_json,
)
from diagnose.core.errors import UserError
from diagnose.core.evidence import Evidence, collect_safely

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "signals" / "gpu"
THROTTLED, HEALTHY, CONTENTION = (FIXTURES / f"{n}.csv" for n in ("throttled", "healthy", "contention"))
NVML_JSON = FIXTURES / "nvml_readings.json"
# Deploy times of the fixtures (fixtures/signals/gpu/README.md).
DEPLOYS = {"throttled": datetime(2026, 11, 20, 10, 0), "healthy": datetime(2026, 11, 20, 14, 0),
           "contention": datetime(2026, 11, 20, 18, 30)}


def _gpu_present() -> str:
    """'' when no NVIDIA GPU is usable here, else what found one."""
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
        except Exception:
            pass
        else:
            try:
                if pynvml.nvmlDeviceGetCount() > 0:
                    return "NVML"
            finally:
                pynvml.nvmlShutdown()
    if shutil.which("nvidia-smi"):
        run = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        if run.returncode == 0 and "GPU" in run.stdout:
            return "nvidia-smi"
    return ""


GPU = _gpu_present()
needs_gpu = pytest.mark.skipif(not GPU, reason="no NVIDIA GPU here (NVML and nvidia-smi find none)")
needs_no_gpu = pytest.mark.skipif(bool(GPU), reason=f"an NVIDIA GPU is present ({GPU})")


def write(tmp_path: Path, text: str, name: str = "gpu.csv", mode: str = "w") -> Path:
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, newline="")
    return path


ROW = ("2026/11/20 10:00:01.123, 0, NVIDIA A100-SXM4-40GB, 45 %, 1410 MHz, 1215 MHz, 63, 250.12 W, "
       "0x0000000000000004, 1234 MiB, 40960 MiB")


# --- parsing ------------------------------------------------------------------------------------------------

def test_parses_exact_values():
    readings = parse_nvidia_smi_csv(THROTTLED)
    assert len(readings) == 180 and readings.skipped == 0
    assert readings[0] == GpuReading(
        timestamp=datetime(2026, 11, 20, 9, 59, 0, 412000), index=0, name="NVIDIA A100-SXM4-40GB", util_pct=64,
        sm_clock_mhz=1410, mem_clock_mhz=1215, temperature_c=61, power_w=256.75, reasons=[],
        memory_used_mib=9742, memory_total_mib=40960, processes=None, reasons_mask=0)
    idle = readings[60]  # the new version loading: the GPU idles at a parked clock
    assert (idle.sm_clock_mhz, idle.util_pct, idle.reasons) == (210, 0, ["GpuIdle"])
    assert readings[-1].reasons == ["HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown"]
    assert readings[-1].reasons_mask == 0x68 and readings[-1].temperature_c == 88


def test_parses_the_documented_header_and_one_row(tmp_path):
    path = write(tmp_path, HEADER + "\n" + ROW + "\n")
    (r,) = parse_nvidia_smi_csv(path)
    assert (r.timestamp, r.index, r.util_pct, r.sm_clock_mhz, r.mem_clock_mhz, r.temperature_c, r.power_w) == (
        datetime(2026, 11, 20, 10, 0, 1, 123000), 0, 45, 1410, 1215, 63, 250.12)
    assert (r.reasons, r.memory_used_mib, r.memory_total_mib) == (["SwPowerCap"], 1234, 40960)


def test_newer_driver_header_and_two_gpus():
    contention = parse_nvidia_smi_csv(CONTENTION)  # header says clocks_event_reasons.active (driver >= 535)
    assert len(contention) == 150 and all(r.reasons_mask == 0 for r in contention)
    healthy = parse_nvidia_smi_csv(HEALTHY)
    assert sorted({r.index for r in healthy}) == [0, 1] and len(healthy) == 180


def test_not_available_cells_are_none(tmp_path):
    row = ("2026/11/20 10:00:01.123, 0, NVIDIA A100-SXM4-40GB, [N/A], 1410 MHz, [Not Supported], 63, [N/A], "
           "[Not Supported], [Insufficient Permissions], 40960 MiB")
    (r,) = parse_nvidia_smi_csv(write(tmp_path, HEADER + "\n" + row + "\n"))
    assert (r.util_pct, r.mem_clock_mhz, r.power_w, r.reasons_mask, r.reasons, r.memory_used_mib) == (
        None, None, None, None, [], None)


def test_nounits_noheader_crlf_bom_repeated_headers_and_column_order(tmp_path):
    nounits = ("timestamp, index, name, utilization.gpu, clocks.current.sm, clocks.current.memory, temperature.gpu, "
               "power.draw, clocks_throttle_reasons.active, memory.used, memory.total\n"
               "2026/11/20 10:00:01.123, 0, NVIDIA A100-SXM4-40GB, 45, 1410, 1215, 63, 250.12, 0x0000000000000004, "
               "1234, 40960\n")
    expected = parse_nvidia_smi_csv(write(tmp_path, HEADER + "\n" + ROW + "\n", "units.csv"))
    assert parse_nvidia_smi_csv(write(tmp_path, nounits, "nounits.csv")) == expected
    assert parse_nvidia_smi_csv(write(tmp_path, ROW + "\n", "noheader.csv")) == expected
    crlf = ("\ufeff" + HEADER + "\r\n" + ROW + "\r\n" + HEADER + "\r\n" + ROW + "\r\n").encode()
    assert parse_nvidia_smi_csv(write(tmp_path, crlf, "crlf.csv", "wb")) == expected * 2
    # Columns by name, in any order, extra ones ignored; a missing optional column leaves its field None.
    reordered = ("index, clocks.current.sm [MHz], pstate, timestamp\n"
                 "0, 1410 MHz, P0, 2026/11/20 10:00:01.123\n")
    (r,) = parse_nvidia_smi_csv(write(tmp_path, reordered, "reordered.csv"))
    assert (r.index, r.sm_clock_mhz, r.timestamp.second, r.power_w, r.name) == (0, 1410, 1, None, "")


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"", "empty file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "not an nvidia-smi CSV"),
    (b"hello, world\nthis is not a log\n", "not an nvidia-smi CSV"),
    (b"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
     b"NVIDIA driver is installed and running.\n", "NVIDIA-SMI has failed"),
    (b"timestamp, index, name, utilization.gpu [%]\n2026/11/20 10:00:01.123, 0, A100, 45 %\n", "no clocks.sm column"),
    (b"index, clocks.current.sm [MHz]\n0, 1410 MHz\n", "no timestamp column"),
])
def test_unreadable_files_raise_user_error_naming_the_file(tmp_path, content, words):
    path = write(tmp_path, content, "bad.csv", "wb")
    with pytest.raises(UserError) as err:
        parse_nvidia_smi_csv(path)
    assert str(path) in str(err.value) and words in str(err.value)
    assert err.value.path == str(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"nope\.csv: cannot read the nvidia-smi CSV"):
        parse_nvidia_smi_csv(tmp_path / "nope.csv")


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    bad = [
        ROW.replace("250.12 W", "nan W"),                       # NaN
        ROW.replace("1410 MHz", "inf MHz"),                      # Inf
        ROW.replace("1410 MHz", "1410 W"),                       # a unit that is not the column's
        ROW.replace("0x0000000000000004", "0xZZ"),               # not a bitmask
        ROW.replace("2026/11/20 10:00:01.123", "yesterday"),     # not a timestamp
        ROW.replace("45 %", "145 %"),                            # utilization out of range
        "\x00\x00garbage\x00",                                   # binary noise in the middle
        ROW[:60],                                                # a line cut short (the log was killed mid-write)
    ]
    text = HEADER + "\n" + ROW + "\n" + "\n".join(bad) + "\n" + ROW.replace("10:00:01", "10:00:02") + "\n" + ROW[:40]
    readings = parse_nvidia_smi_csv(write(tmp_path, text))
    assert len(readings) == 2 and readings.skipped == len(bad) + 1
    assert readings.problems[0] == "line 3: power.draw: 'nan W' is not finite"
    assert len(readings.problems) == 5 and all(p.startswith("line ") for p in readings.problems)
    ev = gpu_evidence(readings)
    assert ev.data["skipped_rows"] == 9 and ev.summary[-1] == "9 malformed rows of the GPU log skipped"


def test_a_file_of_only_bad_rows_is_a_user_error(tmp_path):
    path = write(tmp_path, HEADER + "\n" + ROW.replace("1410 MHz", "NaN MHz") + "\n" + ROW[:30] + "\n")
    with pytest.raises(UserError, match="no readable samples: all 2 rows are malformed"):
        parse_nvidia_smi_csv(path)


def test_a_header_alone_is_no_samples(tmp_path):
    readings = parse_nvidia_smi_csv(write(tmp_path, HEADER + "\n"))
    assert readings == [] and gpu_evidence(readings).reason == "no GPU samples were recorded"


def test_bad_json_of_readings(tmp_path):
    with pytest.raises(UserError, match="not a JSON file"):
        read_readings_json(write(tmp_path, "{not json", "r.json"))
    with pytest.raises(UserError, match="no `readings` list"):
        read_readings_json(write(tmp_path, '{"format": "x"}', "r.json"))
    doc = json.loads(NVML_JSON.read_text())
    doc["readings"][3]["sm_clock_mhz"] = "fast"
    doc["readings"][4]["power_w"] = float("nan")  # json.dumps writes NaN; the reader refuses it
    del doc["readings"][5]["timestamp"]
    readings = read_readings_json(write(tmp_path, json.dumps(doc), "r.json"))
    assert len(readings) == len(doc["readings"]) - 3 and readings.skipped == 3


# --- reasons ------------------------------------------------------------------------------------------------

def test_reason_decoding():
    assert decode_reasons(0) == [] and decode_reasons(None) == []
    assert decode_reasons(0x1) == ["GpuIdle"]
    assert decode_reasons(0x68) == ["HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown"]
    assert decode_reasons(0x1FF) == ["GpuIdle", "ApplicationsClocksSetting", "SwPowerCap", "HwSlowdown", "SyncBoost",
                                     "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown",
                                     "DisplayClockSetting"]
    assert decode_reasons(0x804) == ["SwPowerCap", "Unknown0x800"]
    for mask in (0, 0x1, 0x68, 0x1FF, 0x804, 0x7FF):
        assert encode_reasons(decode_reasons(mask)) == mask
    with pytest.raises(ValueError):
        encode_reasons(["Sleepy"])
    # the mask and the names stay in step whichever is given
    assert GpuReading(datetime(2026, 1, 1), 0, reasons=["HwThermalSlowdown"]).reasons_mask == 0x40


def test_reason_bits_are_nvmls():
    pynvml = pytest.importorskip("pynvml")
    for bit, name in REASON_BITS.items():
        const = getattr(pynvml, f"nvmlClocksEventReason{name}", None) or getattr(pynvml, f"nvmlClocksThrottleReason{name}")
        assert const == bit, name


# --- evidence -----------------------------------------------------------------------------------------------

def test_throttled_after_the_deploy():
    ev = evidence_from_csv(THROTTLED, deployed_at=DEPLOYS["throttled"])
    assert ev.ok and ev.source == "gpu"
    (g,) = ev.data["gpus"]
    assert (g["sm_clock_mhz_before"], g["sm_clock_mhz_after"], g["baseline"]) == (1410, 1095, "before_deploy")
    assert ev.data["clock_drop_pct"] == g["clock_drop_pct"] == pytest.approx(22.3, abs=0.1)
    assert ev.data["throttle_reasons"] == ["HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown"]
    assert g["reasons_after"]["HwThermalSlowdown"] > 0.6 and g["reasons_after"]["GpuIdle"] < 0.05
    assert g["temperature_c_after"] >= 85 and g["temperature_c_max_after"] == 88
    assert (g["samples_before"], g["samples_after"], g["memory_used_mib_after"], g["memory_total_mib"]) == (
        60, 120, 14386, 40960)
    assert ev.data["foreign_processes"] is None and g["foreign_processes"] is None  # not in the CSV
    assert ev.summary[0].startswith("GPU 0 (NVIDIA A100-SXM4-40GB): SM clock 1410 -> 1095 MHz (-22%) after the "
                                    "deploy; HW thermal slowdown active in 72% of samples, HW slowdown in 72%, "
                                    "SW thermal slowdown in 51%; 86 C (max 88 C)")
    assert "processes not recorded" in ev.summary[-1]
    json.dumps(ev.to_dict())  # JSON-able


def test_healthy_has_no_drop_and_no_reasons():
    ev = evidence_from_csv(HEALTHY, deployed_at=DEPLOYS["healthy"])
    assert [g["clock_drop_pct"] for g in ev.data["gpus"]] == [0.0, 0.0]
    assert ev.data["clock_drop_pct"] == 0.0 and ev.data["throttle_reasons"] == []
    assert all(g["reasons_after"] == {} and g["reasons_recorded"] for g in ev.data["gpus"])
    assert ev.summary[0].startswith("GPU 0 (NVIDIA A10G): SM clock steady at 1710 MHz (1710 before the deploy); "
                                    "no clock throttling")


def test_contention_shows_as_a_gpu_busy_before_the_deploy_too():
    ev = evidence_from_csv(CONTENTION, deployed_at=DEPLOYS["contention"])
    (g,) = ev.data["gpus"]
    assert g["clock_drop_pct"] == 0.0 and ev.data["throttle_reasons"] == []
    assert g["util_pct_before"] >= 90 and g["util_pct_after"] >= 99 and g["saturated"]
    assert "already before the deploy: look for another workload sharing this GPU" in ev.summary[1]


def test_without_a_deploy_time_the_baseline_is_the_highest_clock():
    ev = evidence_from_csv(THROTTLED)
    (g,) = ev.data["gpus"]
    assert (g["baseline"], g["sm_clock_mhz_before"], g["samples_after"]) == ("max_seen", 1410, 180)
    assert g["sm_clock_mhz_after"] < 1410 and "below the highest seen (1410 MHz)" in ev.summary[0]
    assert ev.data["deployed_at"] is None


def test_deploy_time_edges():
    readings = parse_nvidia_smi_csv(THROTTLED)
    aware = DEPLOYS["throttled"].replace(tzinfo=timezone.utc)
    assert gpu_evidence(readings, aware).data == gpu_evidence(readings, DEPLOYS["throttled"]).data
    late = gpu_evidence(readings, datetime(2026, 11, 21))
    assert late.status == "unavailable" and late.reason.startswith("no GPU samples after the deploy at 2026-11-21")
    early = gpu_evidence(readings, datetime(2026, 11, 19))  # nothing before it: the highest clock is the baseline
    assert early.data["gpus"][0]["baseline"] == "max_seen"
    assert gpu_evidence([]).status == "unavailable"


def test_nvml_recording_names_the_power_cap_and_the_co_tenant():
    """The JSON in NvmlSampler.save()'s shape (hand-written: fixtures/signals/gpu/README.md)."""
    doc = json.loads(NVML_JSON.read_text())
    readings = read_readings_json(NVML_JSON)
    ev = gpu_evidence(readings, datetime.fromisoformat(doc["deployed_at"]), own_pids=set(doc["own_pids"]))
    (g,) = ev.data["gpus"]
    assert (g["sm_clock_mhz_before"], g["sm_clock_mhz_after"], g["clock_drop_pct"]) == (2040, 1785, 12.5)
    assert ev.data["throttle_reasons"] == ["SwPowerCap"] and ev.data["foreign_processes"] == 1
    assert g["foreign_processes"] == [{"pid": 40412, "name": "/opt/conda/bin/python", "used_mib": 9806}]
    assert ev.summary == [
        "GPU 0 (NVIDIA L4): SM clock 2040 -> 1785 MHz (-12%) after the deploy; SW power cap active in 93% of "
        "samples; 73 C, 72 W",
        "GPU 0: 98% busy after the deploy (46% before): saturated; memory 16.0 GiB of 22.5 GiB used",
        "GPU 0: 1 other process on the GPU: pid 40412 /opt/conda/bin/python (9.6 GiB)",
    ]
    # Without own_pids every process counts as foreign, ours included.
    assert gpu_evidence(readings, datetime.fromisoformat(doc["deployed_at"])).data["foreign_processes"] == 2


# --- round trips --------------------------------------------------------------------------------------------

def test_csv_round_trip_is_identical(tmp_path):
    readings = parse_nvidia_smi_csv(THROTTLED)
    out = write_nvidia_smi_csv(readings, tmp_path / "gpu.csv")
    assert out.read_bytes() == THROTTLED.read_bytes()
    assert parse_nvidia_smi_csv(out) == readings
    healthy = parse_nvidia_smi_csv(HEALTHY)
    assert parse_nvidia_smi_csv(write_nvidia_smi_csv(healthy, tmp_path / "h.csv")) == healthy


def test_nvml_readings_round_trip_through_csv_and_json(tmp_path):
    readings = read_readings_json(NVML_JSON)
    back = parse_nvidia_smi_csv(write_nvidia_smi_csv(readings, tmp_path / "gpu.csv"))
    assert back == [GpuReading(**{**r.__dict__, "processes": None}) for r in readings]  # no process column
    assert read_readings_json(write_readings_json(readings, tmp_path / "gpu.json")) == readings
    gaps = [GpuReading(datetime(2026, 1, 1, 0, 0, 0, 5000), 3)]  # every optional value missing
    assert parse_nvidia_smi_csv(write_nvidia_smi_csv(gaps, tmp_path / "gaps.csv")) == gaps
    assert read_readings_json(write_readings_json(gaps, tmp_path / "gaps.json")) == gaps


# --- live NVML: no GPU here, and the sampler on recorded values ---------------------------------------------

@needs_no_gpu
def test_no_gpu_the_sampler_is_unavailable_with_the_real_reason():
    sampler = NvmlSampler()
    sampler.start()
    ev = sampler.stop()
    assert ev.status == "unavailable" and ev.source == "gpu"
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert ev.reason.startswith("NVML Python binding not installed (pip install nvidia-ml-py)")
    else:
        assert ev.reason.startswith("no NVIDIA GPU: nvmlInit failed: ")
        assert ev.reason != "no NVIDIA GPU: nvmlInit failed: "
    assert sampler.stop() is ev  # a second stop answers the same
    assert collect_safely(NvmlSampler()).status == "unavailable"


def test_without_the_nvml_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` now raises ImportError
    ev = collect_safely(NvmlSampler())
    assert ev.status == "unavailable"
    assert ev.reason.startswith("NVML Python binding not installed (pip install nvidia-ml-py): ")


def test_never_started():
    assert NvmlSampler().stop().reason == "the GPU sampler was never started"


class RecordedNvml:
    """pynvml's API serving readings recorded in NVML's own units (mW, bytes), one reading per SM-clock read.

    Like a driver before 535, it lacks nvmlDeviceGetCurrentClocksEventReasons, so the sampler must fall back.
    """

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, readings: list[GpuReading]):
        self.readings, self.i, self.calls = readings, -1, []

    @property
    def now(self) -> GpuReading:
        return self.readings[max(0, min(self.i, len(self.readings) - 1))]

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, handle):
        return self.now.name.encode()  # bindings before 11.5 return bytes

    def nvmlDeviceGetClockInfo(self, handle, clock):
        if clock == self.NVML_CLOCK_SM:
            self.i += 1
            return self.now.sm_clock_mhz
        return self.now.mem_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        raise self.NVMLError("Function Not Found")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self.now.reasons_mask

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self.now.temperature_c

    def nvmlDeviceGetPowerUsage(self, handle):
        return round(self.now.power_w * 1000)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self.now.util_pct, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.now.memory_used_mib * 2**20 + 4096, total=self.now.memory_total_mib * 2**20)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used_mib"] * 2**20) for p in self.now.processes]

    def nvmlSystemGetProcessName(self, pid):
        return next(p["name"] for p in self.now.processes if p["pid"] == pid).encode()


def test_sampler_on_recorded_nvml_values():
    recorded = read_readings_json(NVML_JSON)
    nvml = RecordedNvml(recorded)
    sampler = NvmlSampler(nvml=nvml, interval_s=None, own_pids={31337})
    sampler.start()                    # first sample
    for _ in range(len(recorded) - 2):
        sampler.sample()
    ev = sampler.stop()                # last sample
    assert nvml.calls == ["init", "shutdown"]
    assert len(sampler.readings) == len(recorded)
    for got, want in zip(sampler.readings, recorded, strict=True):
        assert got.timestamp.microsecond % 1000 == 0
        assert GpuReading(**{**got.__dict__, "timestamp": want.timestamp}) == want
    # no deploy time given live: the baseline is the highest clock seen
    (g,) = ev.data["gpus"]
    median = statistics.median(r.sm_clock_mhz for r in recorded)
    assert (g["baseline"], g["sm_clock_mhz_before"], g["sm_clock_mhz_after"]) == ("max_seen", 2040, median)
    assert ev.data["throttle_reasons"] == ["SwPowerCap"] and ev.data["foreign_processes"] == 1


def test_sampler_thread_and_deploy_mark(tmp_path):
    recorded = read_readings_json(NVML_JSON)
    sampler = NvmlSampler(nvml=RecordedNvml(recorded), interval_s=0.01, own_pids={31337})
    sampler.start()
    deadline = time.monotonic() + 5
    while len(sampler.readings) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.mark_deploy(sampler.readings[-1].timestamp + timedelta(milliseconds=1))
    time.sleep(0.02)
    ev = collect_safely(sampler)
    assert ev.ok and len(sampler.readings) >= 9 and sampler._thread is None
    assert ev.data["gpus"][0]["samples_before"] >= 8
    csv_path, json_path = sampler.save(tmp_path)
    assert parse_nvidia_smi_csv(csv_path) == [GpuReading(**{**r.__dict__, "processes": None}) for r in sampler.readings]
    assert read_readings_json(json_path) == sampler.readings


class BrokenNvml(RecordedNvml):
    def nvmlDeviceGetHandleByIndex(self, i):
        raise RuntimeError("Unknown Error")


def test_sampler_never_raises():
    ev = collect_safely(NvmlSampler(nvml=BrokenNvml([])))
    assert (ev.status, ev.reason) == ("error", "RuntimeError: Unknown Error")
    nvml = RecordedNvml([])
    nvml.nvmlInit = lambda: (_ for _ in ()).throw(OSError("libnvidia-ml.so.1: cannot open shared object file"))
    ev = NvmlSampler(nvml=nvml).collect()
    assert ev.reason == "no NVIDIA GPU: nvmlInit failed: libnvidia-ml.so.1: cannot open shared object file"


def test_unsupported_values_are_none():
    class Unsupported(RecordedNvml):
        def _no(self, *args):
            raise self.NVMLError("Not Supported")

        nvmlDeviceGetPowerUsage = nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetUtilizationRates = _no
        nvmlDeviceGetCurrentClocksThrottleReasons = _no

    reading = nvml_reading(Unsupported(read_readings_json(NVML_JSON)), ("handle", 0), 0)
    assert (reading.power_w, reading.processes, reading.util_pct, reading.reasons_mask) == (None, None, None, None)
    assert reading.sm_clock_mhz == 2040 and reading.name == "NVIDIA L4"


# --- a real GPU ---------------------------------------------------------------------------------------------

@needs_gpu
def test_real_gpu_one_second(tmp_path):
    sampler = NvmlSampler(interval_s=0.2)
    sampler.start()
    time.sleep(1.0)
    ev = sampler.stop()
    assert isinstance(ev, Evidence) and ev.ok, ev.reason
    gpus = {r.index for r in sampler.readings}
    assert gpus and all(sum(r.index == i for r in sampler.readings) >= 3 for i in gpus)
    for r in sampler.readings:
        assert r.name and r.sm_clock_mhz and r.sm_clock_mhz > 0 and r.memory_total_mib > 0
        assert r.reasons_mask is not None and r.processes is not None
    assert len(ev.data["gpus"]) == len(gpus) and all(len(line) > 10 for line in ev.summary)
    csv_path, json_path = sampler.save(tmp_path)
    assert read_readings_json(json_path) == sampler.readings
    assert len(parse_nvidia_smi_csv(csv_path)) == len(sampler.readings)
    if shutil.which("nvidia-smi"):  # the parser on the real tool's output, header and all
        for query in (QUERY, QUERY.replace("clocks_throttle_reasons", "clocks_event_reasons")):  # renamed in 535
            run = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True,
                                 text=True, timeout=60)
            if run.returncode == 0:
                break
        assert run.returncode == 0, run.stdout + run.stderr
        smi = parse_nvidia_smi_csv(write(tmp_path, run.stdout, "smi.csv"))
        assert smi.skipped == 0 and sorted(r.index for r in smi) == sorted(gpus)
        names = {r.index: r.name for r in sampler.readings}
        assert all(r.name == names[r.index] and r.sm_clock_mhz is not None for r in smi)
