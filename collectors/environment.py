"""The machine and software a sample set was measured on.

Samples taken on another CPU, another core count or other library versions are not comparable (pyperf
refuses such comparisons too): `mismatches` names the fields that differ so a compare can refuse or warn.
Thread and device settings are recorded per sample set but are not part of the fingerprint: they are
serving configuration, which a version may legitimately change, and which the diagnosis reports.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "numpy", "onnxruntime", "transformers", "tokenizers", "pandas", "scipy")
FINGERPRINT = ("cpu_model", "logical_cores", "usable_cores", "machine", "python", "libraries", "gpu")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "fma", "neon", "asimd")


def _cpuinfo(proc: Path) -> tuple[str, list[str]]:
    model, flags = platform.processor() or "unknown", []
    try:
        text = (proc / "cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and model in ("unknown", "", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            present = set(value.split())
            flags = [f for f in CPU_FLAGS if f in present]
    return model, flags


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def capture(proc: Path = Path("/proc")) -> dict:
    """Describe this machine; `proc` is injectable so tests can read a recorded /proc."""
    cpu_model, flags = _cpuinfo(proc)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {
        "cpu_model": cpu_model,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": f"{platform.system()} {platform.machine()}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": {name: v for name in LIBRARIES if (v := _version(name))},
        "gpu": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_interop_threads"] = torch.get_num_interop_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    return env


def for_sample_set(machine: dict, serving) -> dict:
    """The environment of one sample set: the machine plus the serving settings it ran under."""
    return {**machine, "threads": serving.threads, "device": serving.device, "precision": serving.precision}


def mismatches(a: dict, b: dict) -> list[str]:
    """Fingerprint fields that differ, as 'field: a -> b' lines."""
    out = []
    for key in FINGERPRINT:
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
