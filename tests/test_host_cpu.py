"""Other work on the machine during a benchmark: read from the real /proc/stat with a real busy loop beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

from collectors.host_cpu import HostCpuSampler, contention_evidence, read_snapshot

BUSY = "import time\nend = time.time() + 3\nwhile time.time() < end:\n    pass\n"


def test_a_busy_loop_beside_the_benchmark_is_seen_as_another_core_in_use():
    sampler = HostCpuSampler()
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.3)  # the child is spinning
        sampler.start()
        time.sleep(1.5)  # this process idles: the machine's busy time is the others'
        evidence = sampler.collect()
    finally:
        child.kill()
        child.wait()
    assert evidence.ok, evidence.reason
    assert evidence.data["other_cores"] >= 0.6, evidence.data  # the busy loop holds about one core
    assert evidence.data["own_cores"] < 0.3 and evidence.data["contended"]
    assert "more threads than that measures the contention" in evidence.summary[1]


def test_this_process_own_work_is_not_counted_as_the_others(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1000 0 0 5000 0 0 0 0 0 0\ncpu0 500 0 0 2500 0 0 0 0 0 0\n")
    first = read_snapshot(tmp_path)
    stat.write_text("cpu  1100 0 0 5100 0 0 0 0 0 0\ncpu0 550 0 0 2550 0 0 0 0 0 0\n")
    last = read_snapshot(tmp_path)
    ticks = 100 / os.sysconf("SC_CLK_TCK")  # 100 busy jiffies over the interval
    # the interval and this process's CPU time, as the benchmark would have spent them: all busy time was its own
    last = replace(last, wall_s=first.wall_s + ticks, own_s=first.own_s + ticks)
    evidence = contention_evidence(first, last, cores=2)
    assert evidence.data["own_cores"] == 1.0 and evidence.data["other_cores"] == 0.0
    assert not evidence.data["contended"] and evidence.data["free_cores"] == 2.0


def test_no_proc_stat_is_unavailable_with_the_reason(tmp_path):
    sampler = HostCpuSampler(proc_root=tmp_path / "no-proc")
    sampler.start()
    evidence = sampler.collect()
    assert evidence.status == "unavailable" and "no-proc/stat" in evidence.reason
