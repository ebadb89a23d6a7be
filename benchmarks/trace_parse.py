"""Parse speed and memory of `profilers.traces.read_trace` on real and synthetic Kineto traces, its fast path
(orjson over chunks) and its ijson path side by side.

For HTA's real pair (../shared/data/traces/hta/trace_diff/{control,test}) and for a synthetic trace of
--events events (default 2,000,000) that this script writes gzipped into a temporary folder, each parse runs
in a fresh interpreter and reports: events read, rows kept, wall seconds of read_trace (the best of --repeat
runs, default 3: the machine may be busy with other work), events read per second, and the growth of peak
RSS during the parse (ru_maxrss after the parse minus before it, the interpreter and its imports already
loaded; the largest of the runs). The fast path runs alone (parser="fast": it fails rather than fall back), so
its times are its own. With --baseline, the same files are also loaded the way HTA does it (json.load of the
whole document, then a DataFrame of the event dicts) for comparison.

Usage: python benchmarks/trace_parse.py [--events N] [--repeat R] [--baseline] [--traces DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.synthetic_trace import write_synthetic_trace

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "data" / "traces"
REAL = ["hta/trace_diff/control/control.json.gz", "hta/trace_diff/test/test.json.gz"]

PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
scale = 1 if sys.platform == "darwin" else 1024
mode, path = sys.argv[1], sys.argv[2]
if mode in ("fast", "ijson"):
    from profilers.traces import read_trace
    import pandas  # noqa: F401  (already imported by read_trace: loaded before the baseline)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    tr = read_trace(path, parser=mode)
    wall = time.perf_counter() - t
    out = {"read": tr.metadata["n_events_read"], "rows": len(tr.events)}
else:  # HTA-style: the whole document, then a DataFrame of the event dicts
    import gzip
    import pandas as pd
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        doc = json.load(fh)
    events = doc["traceEvents"]
    df = pd.DataFrame(events)
    wall = time.perf_counter() - t
    out = {"read": len(events), "rows": len(df)}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out.update(wall=wall, rss_delta=(peak - base) * scale)
print(json.dumps(out))
"""


def measure(mode: str, path: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, mode, str(path), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} parse of {path} failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def decoded_size(path: Path) -> int:
    """Bytes of JSON in the file (decompressed on the fly, never held)."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    n = 0
    with opener(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += len(chunk)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000, help="size of the synthetic trace (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="parses per file and path; the best wall time is shown")
    parser.add_argument("--baseline", action="store_true", help="also time json.load + DataFrame (HTA's way)")
    parser.add_argument("--traces", type=Path, default=TRACES, help="folder of the shared traces")
    args = parser.parse_args()

    modes = ["fast", "ijson"] + (["json.load"] if args.baseline else [])
    rows = []

    def run(label: str, path: Path) -> None:
        size_mb = path.stat().st_size / 2**20
        json_mb = decoded_size(path) / 2**20
        got = {}
        for _ in range(max(1, args.repeat)):  # the paths alternate, so that a busy spell hits both alike
            for mode in modes:
                got.setdefault(mode, []).append(measure(mode, path))
        best = {mode: min(r["wall"] for r in results) for mode, results in got.items()}
        rss = {mode: max(r["rss_delta"] for r in results) / 2**20 for mode, results in got.items()}
        first = got["fast"][0]
        for mode in modes[1:]:
            assert got[mode][0]["read"] == first["read"], (mode, got[mode][0], first)
        rows.append((label, first["read"], first["rows"], size_mb, json_mb, best, rss))
        print(f"  {label}: " + ", ".join(f"{m} {best[m]:.2f} s" for m in modes), file=sys.stderr)

    for rel in REAL:
        path = args.traces / rel
        if path.is_file():
            run(rel.split("/")[-2] + "/" + path.name, path)
        else:
            print(f"  {rel}: not present, skipped", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        syn = Path(tmp) / "synthetic.pt.trace.json.gz"
        started = time.perf_counter()
        n = write_synthetic_trace(syn, args.events)
        print(f"  wrote synthetic trace: {n:,} events, {syn.stat().st_size / 2**20:.0f} MiB gzipped, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        run(f"synthetic {n:,} events (gz)", syn)

    extra = " | json.load+DataFrame s | its RSS MiB" if args.baseline else ""
    print()
    print(f"best of {max(1, args.repeat)} runs; RSS delta = growth of peak RSS during the parse (largest of the runs)")
    print()
    print("| trace | events read | rows kept | file MiB | JSON MiB | fast s | ijson s | speed-up | fast events/s "
          f"| fast RSS MiB | ijson RSS MiB{extra} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.baseline else ""))
    for label, read, kept, size_mb, json_mb, best, rss in rows:
        line = (f"| {label} | {read:,} | {kept:,} | {size_mb:.1f} | {json_mb:.1f} | {best['fast']:.2f} | "
                f"{best['ijson']:.2f} | {best['ijson'] / best['fast']:.1f}x | {read / best['fast']:,.0f} | "
                f"{rss['fast']:.0f} | {rss['ijson']:.0f} |")
        if args.baseline:
            line += f" {best['json.load']:.2f} | {rss['json.load']:.0f} |"
        print(line)
    print()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
