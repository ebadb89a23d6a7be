"""The cgroup collector on real-format files, and on a real CFS-throttled process (cgroup v1, as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors.cgroup import CgroupReader, CgroupSampler, CgroupSnapshot, throttling_evidence
from diagnose.core.evidence import Evidence, collect_safely

V1_UNLIMITED = "9223372036854771712\n"  # what memory.limit_in_bytes says with no limit (4 KiB pages)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(tmp_path: Path, *, throttled=(120, 73, 2_300_000_000), usage_ns=5_000_000_000, quota="20000",
            mem_usage="1932735283\n", mem_limit="2147483648\n", oom=2) -> tuple[Path, Path]:
    """A v1 hierarchy (cpu and cpuacct co-mounted, memory apart) and a /proc/self/cgroup pointing into it."""
    root = tmp_path / "sys"
    pod = "/kubepods/burstable/pod1/c1"
    cpu = root / "cpu,cpuacct" / pod.lstrip("/")
    periods, nr_throttled, ns = throttled
    write(cpu / "cpu.stat", f"nr_periods {periods}\nnr_throttled {nr_throttled}\nthrottled_time {ns}\n"
                            "nr_bursts 0\nburst_time 0\n")
    write(cpu / "cpu.cfs_quota_us", f"{quota}\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    write(cpu / "cpuacct.usage", f"{usage_ns}\n")
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    mem = root / "memory" / pod.lstrip("/")
    if mem_usage is not None:
        write(mem / "memory.usage_in_bytes", mem_usage)
    if mem_limit is not None:
        write(mem / "memory.limit_in_bytes", mem_limit)
    if oom is not None:
        write(mem / "memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom}\n")
    proc = tmp_path / "proc" / "self" / "cgroup"
    write(proc, f"12:pids:{pod}\n9:name=systemd:{pod}\n4:memory:{pod}\n2:cpu,cpuacct:{pod}\n0::/\n")
    return root, proc


def v2_tree(tmp_path: Path, *, stat=(9_000_000, 7_000_000, 2_000_000, 50, 10, 400_000),
            cpu_max="50000 100000\n", mem_max="1073741824\n", oom=1) -> tuple[Path, Path]:
    root = tmp_path / "sys"
    write(root / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    group = root / "kubepods.slice" / "pod.slice" / "c1.scope"
    usage, user, system, periods, throttled, throttled_us = stat
    write(group / "cpu.stat", f"usage_usec {usage}\nuser_usec {user}\nsystem_usec {system}\n"
                              f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled_us}\n"
                              "nr_bursts 0\nburst_usec 0\n")
    if cpu_max is not None:
        write(group / "cpu.max", cpu_max)
    write(group / "memory.current", "536870912\n")
    if mem_max is not None:
        write(group / "memory.max", mem_max)
    if oom is not None:
        write(group / "memory.events", f"low 0\nhigh 0\nmax 3\noom {oom}\noom_kill {oom}\noom_group_kill 0\n")
    proc = tmp_path / "proc" / "self" / "cgroup"
    write(proc, "0::/kubepods.slice/pod.slice/c1.scope\n")
    return root, proc


# --- parsing real formats --------------------------------------------------------------------------------

def test_v1_snapshot_reads_every_field(tmp_path):
    root, proc = v1_tree(tmp_path)
    reader = CgroupReader(root=root, proc_self_cgroup=proc)
    snap = reader.snapshot()
    assert reader.version == 1 and snap.version == 1
    assert snap.path == "/kubepods/burstable/pod1/c1" and snap.memory_path == snap.path
    assert (snap.nr_periods, snap.nr_throttled) == (120, 73)
    assert snap.throttled_s == pytest.approx(2.3) and snap.usage_s == pytest.approx(5.0)
    assert snap.quota_cores == pytest.approx(0.2)
    assert (snap.memory_bytes, snap.memory_limit_bytes, snap.oom_kills) == (1932735283, 2**31, 2)
    assert abs(snap.taken_at - time.time()) < 5


def test_v1_unlimited_quota_and_memory_are_none(tmp_path):
    root, proc = v1_tree(tmp_path, quota="-1", mem_limit=V1_UNLIMITED)
    snap = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    assert snap.quota_cores is None and snap.memory_limit_bytes is None
    assert snap.memory_bytes == 1932735283


def test_v1_missing_files_are_none_not_errors(tmp_path):
    root, proc = v1_tree(tmp_path, mem_usage=None, mem_limit=None, oom=None)
    (root / "cpu,cpuacct" / "kubepods/burstable/pod1/c1" / "cpuacct.usage").unlink()
    snap = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    assert snap.nr_periods == 120
    assert (snap.usage_s, snap.memory_bytes, snap.memory_limit_bytes, snap.oom_kills) == (None, None, None, None)
    assert any("cpuacct.usage" in note for note in snap.notes)


def test_v1_oom_control_without_oom_kill_line(tmp_path):
    root, proc = v1_tree(tmp_path, oom=None)
    write(root / "memory" / "kubepods/burstable/pod1/c1" / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")
    assert CgroupReader(root=root, proc_self_cgroup=proc).snapshot().oom_kills is None  # kernels before 4.13


def test_v2_snapshot_reads_every_field(tmp_path):
    root, proc = v2_tree(tmp_path)
    reader = CgroupReader(root=root, proc_self_cgroup=proc)
    snap = reader.snapshot()
    assert reader.version == 2 and snap.path == "/kubepods.slice/pod.slice/c1.scope"
    assert (snap.nr_periods, snap.nr_throttled) == (50, 10)
    assert snap.throttled_s == pytest.approx(0.4) and snap.usage_s == pytest.approx(9.0)
    assert snap.quota_cores == pytest.approx(0.5)
    assert (snap.memory_bytes, snap.memory_limit_bytes, snap.oom_kills) == (2**29, 2**30, 1)


def test_v2_max_means_no_limit_and_missing_files_are_none(tmp_path):
    root, proc = v2_tree(tmp_path, cpu_max="max 100000\n", mem_max="max\n", oom=None)
    snap = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    assert snap.quota_cores is None and snap.memory_limit_bytes is None and snap.oom_kills is None
    assert snap.memory_bytes == 2**29
    root2, proc2 = v2_tree(tmp_path / "b", cpu_max=None, mem_max=None)
    snap2 = CgroupReader(root=root2, proc_self_cgroup=proc2).snapshot()
    assert snap2.quota_cores is None and snap2.memory_limit_bytes is None and snap2.nr_periods == 50


def test_v2_cpu_stat_without_cpu_controller_still_gives_usage(tmp_path):
    root, proc = v2_tree(tmp_path)
    group = root / "kubepods.slice" / "pod.slice" / "c1.scope"
    write(group / "cpu.stat", "usage_usec 1000000\nuser_usec 800000\nsystem_usec 200000\n")
    before = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    write(group / "cpu.stat", "usage_usec 3000000\nuser_usec 2500000\nsystem_usec 500000\n")
    after = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    ev = throttling_evidence(before, after)
    assert ev.status == "ok" and ev.data["throttled_ratio"] is None and ev.data["cpu_usage_s"] == pytest.approx(2.0)
    assert "no CFS throttling counters" in ev.summary[0]


def test_reader_for_another_pid_reads_its_proc_file(tmp_path):
    root, proc = v1_tree(tmp_path)
    write(tmp_path / "proc" / "4242" / "cgroup", "4:memory:/\n2:cpu,cpuacct:/\n")
    write(root / "cpu,cpuacct" / "cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
    reader = CgroupReader(root=root, proc_self_cgroup=proc, pid=4242)
    assert reader.proc_cgroup == tmp_path / "proc" / "4242" / "cgroup"
    assert reader.snapshot().path == "/" and reader.snapshot().nr_periods == 0


def test_container_without_cgroup_namespace_reads_the_mount_root(tmp_path):
    root, proc = v1_tree(tmp_path)
    write(proc, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")  # host path, not visible inside
    write(root / "cpu,cpuacct" / "cpu.stat", "nr_periods 7\nnr_throttled 1\nthrottled_time 5\n")
    snap = CgroupReader(root=root, proc_self_cgroup=proc).snapshot()
    assert snap.nr_periods == 7 and any("does not exist" in n for n in snap.notes)


# --- evidence ---------------------------------------------------------------------------------------------

def snap(**kw) -> CgroupSnapshot:
    base = dict(version=1, path="/kubepods/pod1/c1", nr_periods=1000, nr_throttled=100, throttled_s=10.0,
                usage_s=50.0, quota_cores=0.2, memory_bytes=int(1.8 * 2**30), memory_limit_bytes=2 * 2**30,
                oom_kills=1, taken_at=1000.0, memory_path="/kubepods/pod1/c1", root="/sys/fs/cgroup")
    return CgroupSnapshot(**{**base, **kw})


def test_evidence_ratio_is_delta_throttled_over_delta_periods():
    ev = throttling_evidence(snap(), snap(nr_periods=1120, nr_throttled=173, throttled_s=12.3, usage_s=52.4,
                                          oom_kills=3, taken_at=1012.0))
    assert ev.status == "ok" and ev.source == "cgroup"
    d = ev.data
    assert (d["periods"], d["throttled_periods"]) == (120, 73)
    assert d["throttled_ratio"] == pytest.approx(73 / 120, abs=1e-4) and d["throttling_high"] is True
    assert d["throttled_s"] == pytest.approx(2.3) and d["cpu_usage_s"] == pytest.approx(2.4)
    assert d["cores_used"] == pytest.approx(0.2) and d["quota_cores"] == 0.2
    assert d["memory_headroom"] == pytest.approx(0.1) and (d["oom_kills"], d["oom_kills_total"]) == (2, 3)
    assert ev.summary[0] == "CPU throttled in 61% of 120 CFS periods during the benchmark (2.3 s throttled; quota 0.2 cores)"
    assert "memory 1.8 GiB of 2.0 GiB limit (10% headroom)" in ev.summary
    assert "2 OOM kills in the cgroup during the run" in ev.summary
    json.dumps(ev.to_dict())
    assert "reason" not in ev.to_dict()


def test_evidence_without_quota_or_limit():
    ev = throttling_evidence(snap(quota_cores=None, memory_limit_bytes=None, nr_periods=0, nr_throttled=0),
                             snap(quota_cores=None, memory_limit_bytes=None, nr_periods=0, nr_throttled=0,
                                  usage_s=52.0, taken_at=1002.0))
    assert ev.data["throttled_ratio"] is None and ev.data["memory_headroom"] is None
    assert ev.summary[0] == "no CPU quota on the cgroup, so CFS throttling cannot happen"
    assert "1.00 cores used on average over 2.0 s (2.00 s of CPU)" in ev.summary
    assert "memory 1.8 GiB, no memory limit" in ev.summary
    assert "no OOM kills in the cgroup during the run (1 before it)" in ev.summary


def test_sampler_memory_peak_from_samples():
    ev = throttling_evidence(snap(), snap(taken_at=1001.0), samples=[snap(memory_bytes=int(1.95 * 2**30))])
    assert ev.data["memory_peak_bytes"] == int(1.95 * 2**30) and ev.data["samples"] == 3
    assert any("peak 1.9 GiB" in line for line in ev.summary)


def test_counters_going_backwards_or_other_cgroup_are_unavailable():
    assert throttling_evidence(snap(), snap(nr_periods=5)).status == "unavailable"
    ev = throttling_evidence(snap(), snap(path="/other"))
    assert ev.status == "unavailable" and "different cgroups" in ev.reason


def test_no_cpu_controller_is_unavailable_with_reason(tmp_path):
    root = tmp_path / "sys"
    write(root / "memory" / "memory.usage_in_bytes", "1000\n")
    proc = tmp_path / "proc" / "self" / "cgroup"
    write(proc, "4:memory:/\n0::/\n")
    reader = CgroupReader(root=root, proc_self_cgroup=proc)
    ev = throttling_evidence(reader.snapshot(), reader.snapshot())
    assert ev.status == "unavailable" and ev.data == {}
    assert ev.reason.startswith(f"no cgroup cpu controller visible at {root}")
    assert ev.to_dict()["reason"] == ev.reason
    # no /proc file at all (not Linux): still no exception
    nowhere = CgroupReader(root=tmp_path / "none", proc_self_cgroup=tmp_path / "none" / "cgroup")
    ev = CgroupSampler(nowhere).collect()
    assert ev.status == "unavailable" and "never started" in ev.reason
    sampler = CgroupSampler(nowhere)
    sampler.start()
    ev = sampler.stop()
    assert ev.status == "unavailable" and "no cgroup cpu controller visible" in ev.reason


# --- base ------------------------------------------------------------------------------------------------

class Broken:
    name = "nvml"

    def collect(self) -> Evidence:
        raise RuntimeError("NVML Shared Library Not Found\nsecond line")


class NotEvidence:
    name = "odd"

    def collect(self):
        return {"status": "ok"}


def test_collect_safely_turns_exceptions_into_error_evidence():
    ev = collect_safely(Broken())
    assert (ev.source, ev.status, ev.reason) == ("nvml", "error", "RuntimeError: NVML Shared Library Not Found")
    assert ev.to_dict() == {"status": "error", "source": "nvml", "reason": ev.reason, "data": {}, "summary": []}
    assert collect_safely(NotEvidence()).status == "error"
    assert Evidence.error("x", ValueError()).reason == "ValueError"
    assert Evidence.unavailable("k8s", "no cluster").to_dict()["reason"] == "no cluster"
    with pytest.raises(ValueError):
        Evidence(source="x", status="fine")


# --- a real throttled process -----------------------------------------------------------------------------

V1 = Path("/sys/fs/cgroup")
BUSY = ("import sys, time\nsys.stdin.readline()\nend = time.perf_counter() + {seconds}\n"
        "while time.perf_counter() < end:\n    pass\n")


def _writable_v1(controller: str) -> str | None:
    """None when a child cgroup can be made under the v1 controller, else why not."""
    folder = V1 / controller
    if not (folder / "cgroup.procs").is_file():
        return f"{folder} is absent"
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable by uid {os.getuid()}"
    return None


def _remove_cgroup(folder: Path) -> None:
    """Move any remaining process to the parent, then rmdir (retrying: a just-exited task may linger)."""
    if not folder.exists():
        return
    try:
        for pid in (folder / "cgroup.procs").read_text().split():
            try:
                (folder.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
    except OSError:
        pass
    for _ in range(50):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    folder.rmdir()


@pytest.fixture
def make_cgroup(request):
    """make_cgroup(name, quota_us) -> [cpu folder, cpuacct folder or None]; removed at teardown, pass or fail."""
    why = _writable_v1("cpu")
    if why:
        pytest.skip(f"cgroup v1 cpu controller not writable here: {why}")
    made: list[Path] = []

    def cleanup():
        for folder in reversed(made):
            _remove_cgroup(folder)

    request.addfinalizer(cleanup)

    def make(name: str, quota_us: int) -> list[Path | None]:
        folders: list[Path | None] = []
        for controller in ("cpu", "cpuacct"):
            if controller == "cpuacct" and (_writable_v1("cpuacct") or (V1 / "cpu").resolve() == (V1 / "cpuacct").resolve()):
                folders.append(None)  # co-mounted with cpu (or absent): the cpu folder holds cpuacct.usage
                continue
            folder = V1 / controller / f"diagnose-test-{os.getpid()}-{name}"
            try:
                folder.mkdir()
            except OSError as exc:
                if controller == "cpu":
                    pytest.skip(f"cgroup v1 cpu controller not writable here: mkdir {folder}: {exc}")
                folders.append(None)
                continue
            made.append(folder)
            folders.append(folder)
        cpu = folders[0]
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text(str(quota_us))
        return folders

    return make


@pytest.fixture
def busy_child(request):
    """busy_child(seconds) -> a Python process that busy-loops `seconds` once a line arrives on its stdin."""
    procs: list[subprocess.Popen] = []

    def cleanup():
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)

    request.addfinalizer(cleanup)

    def start(seconds: float) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=seconds)], stdin=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    return start


def run_in_cgroup(folders, child, seconds=2.0):
    """Move the child in, snapshot, let it spin, snapshot again; returns (before, evidence, after)."""
    for folder in folders:
        if folder is not None:
            (folder / "cgroup.procs").write_text(str(child.pid))
    reader = CgroupReader(pid=child.pid)
    before = reader.snapshot()
    sampler = CgroupSampler(reader)
    sampler.start()
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.wait(timeout=seconds + 20) == 0
    ev = collect_safely(sampler)
    return before, ev, reader.snapshot()


def test_real_quota_throttles_a_busy_process(make_cgroup, busy_child):
    folders = make_cgroup("throttled", quota_us=20000)  # 0.2 CPU per 100 ms period
    child = busy_child(2.0)
    before, ev, after = run_in_cgroup(folders, child)
    assert before.path == f"/diagnose-test-{os.getpid()}-throttled" and before.quota_cores == pytest.approx(0.2)
    assert after.nr_throttled > before.nr_throttled
    assert ev.status == "ok", ev.reason
    assert ev.data["periods"] >= 10 and ev.data["throttled_ratio"] > 0.5 and ev.data["throttling_high"]
    assert "quota 0.2 cores" in ev.summary[0] and ev.summary[0].startswith("CPU throttled in ")
    if folders[1] is not None or (V1 / "cpu").resolve() == (V1 / "cpuacct").resolve():
        assert ev.data["cores_used"] < 0.35  # the quota holds it near 0.2 of a core
    print("\nthrottled:", json.dumps(ev.data), *ev.summary, sep="\n  ")


def test_real_cgroup_without_quota_is_not_throttled(make_cgroup, busy_child):
    folders = make_cgroup("control", quota_us=-1)
    child = busy_child(2.0)
    before, ev, after = run_in_cgroup(folders, child)
    assert before.quota_cores is None
    assert ev.status == "ok", ev.reason
    assert ev.data["throttled_periods"] == 0 and ev.data["throttled_ratio"] in (None, 0.0)
    assert after.nr_throttled == before.nr_throttled
    if folders[1] is not None:
        assert ev.data["cores_used"] > 0.5
    print("\ncontrol:", json.dumps(ev.data), *ev.summary, sep="\n  ")


def test_compare_inside_a_throttled_cgroup_is_seen_as_throttled(make_cgroup, tiny_registry, tmp_path):
    """The whole `diagnose compare` runs in a cgroup with a 0.3-core quota: evidence and warning name it."""
    import json
    import sys

    cpu, cpuacct = make_cgroup("compare", 30_000)
    join = f"echo $$ > {cpu}/cgroup.procs" + (f" && echo $$ > {cpuacct}/cgroup.procs" if cpuacct else "")
    out = tmp_path / "run"
    command = (f"{join} && exec {sys.executable} -m diagnose compare --registry {tiny_registry} --old v1 --new v2 "
               f"--budget 2 --no-profile --no-verify --out {out} --json")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DIAGNOSE_PROGRESS": "0"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    evidence = json.loads((out / "evidence" / "cgroup.json").read_text())
    assert evidence["status"] == "ok" and evidence["data"]["throttled_ratio"] > 0.5, evidence
    assert evidence["data"]["quota_cores"] == pytest.approx(0.3)
    assert report["evidence_sources"]["cgroup"]["status"] == "ok"
    assert any("ran CPU-throttled" in w and "quota 0.3 cores" in w for w in report["warnings"]), report["warnings"]
