"""Environment capture reads a real /proc layout; mismatches name the differing fields."""

from __future__ import annotations

from collectors.environment import capture, for_sample_set, mismatches
from diagnose.core.manifest import Serving


def test_capture_reads_cpu_model_and_flags_from_proc(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000 @ 3.00GHz\nflags\t\t: fpu sse avx2 fma avx512f\n\n"
        "processor\t: 1\nmodel name\t: Test CPU 9000 @ 3.00GHz\nflags\t\t: fpu sse avx2 fma avx512f\n"
    )
    env = capture(proc=tmp_path)
    assert env["cpu_model"] == "Test CPU 9000 @ 3.00GHz"
    assert env["cpu_flags"] == ["avx2", "avx512f", "fma"]
    assert env["libraries"]["numpy"] and env["usable_cores"] >= 1


def test_this_machine_has_a_cpu_model():
    assert capture()["cpu_model"] not in ("", None)


def test_mismatches_ignore_serving_settings_but_not_libraries():
    machine = capture()
    a = for_sample_set(machine, Serving(threads=2))
    b = for_sample_set(machine, Serving(threads=1))
    assert mismatches(a, b) == []
    c = {**b, "libraries": {**b["libraries"], "torch": "0.1"}}
    assert len(mismatches(a, c)) == 1 and mismatches(a, c)[0].startswith("libraries:")
