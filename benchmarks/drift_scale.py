"""Drift at scale and its false-positive rate: whole-process wall time and peak memory, then A/A splits.

1. Writes two parquet request logs (old, new) of `--rows` rows and `--features` columns: mostly float
   features, five small-integer categoricals, three text columns and two list columns of varying length,
   with a real shift in a few of them (so the report has findings to make). Then a fresh `python -c`
   process reads both with `collectors.drift.read_requests` and builds `drift_report`; the parent measures the
   process's wall time and peak RSS (getrusage RUSAGE_CHILDREN), as a user running it would see them.
2. False-positive rate: `--splits` random halves of one distribution (2 x `--split-rows` rows, 10 columns)
   go through `feature_drift`; the share of splits with any drifted feature is the family-wise error rate,
   to hold against the configured alpha (Holm over the p-value tests of one report).

Usage: python benchmarks/drift_scale.py [--rows 1000000] [--features 50] [--splits 200] [--split-rows 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.drift import ALPHA, feature_drift  # noqa: E402

WORDS = np.array("the a model request latency user item click search query page cart price fast slow new old blue red "
                 "green order ship return refund help account login error timeout retry".split())
CHILD = """
import json, sys, time
start, cpu_start = time.perf_counter(), time.process_time()
from collectors.drift import drift_report, read_requests
imported, cpu_imported = time.perf_counter(), time.process_time()
old, new = read_requests(sys.argv[1]), read_requests(sys.argv[2])
read, cpu_read = time.perf_counter(), time.process_time()
report = drift_report(old, new)
done, cpu_done = time.perf_counter(), time.process_time()
json.dumps(report, allow_nan=False)
print(json.dumps({"import_s": imported - start, "read_s": read - imported, "report_s": done - read,
                  "import_cpu": cpu_imported - cpu_start, "read_cpu": cpu_read - cpu_imported, "report_cpu": cpu_done - cpu_read,
                  "features": len(report["features"]), "drifted": report["drifted"],
                  "schema_changes": [c["text"] for c in report["schema_changes"]]}))
"""


def sentences(rng: np.random.Generator, count: int, low: int, high: int) -> np.ndarray:
    """A vocabulary of `count` sentences of low..high words; columns draw from it (cheap 1M-row text)."""
    lengths = rng.integers(low, high + 1, count)
    return np.array([" ".join(rng.choice(WORDS, k)) for k in lengths], dtype=object)


def text_column(rng: np.random.Generator, rows: int, vocabulary: np.ndarray) -> pa.Array:
    indices = pa.array(rng.integers(0, len(vocabulary), rows).astype(np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocabulary, pa.string())).cast(pa.string())


def list_column(rng: np.random.Generator, rows: int, low: int, high: int) -> pa.Array:
    lengths = rng.integers(low, high + 1, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = rng.integers(0, 100_000, int(offsets[-1]), dtype=np.int32)  # token/item ids: int32, 4 bytes each
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))


def make_log(rows: int, features: int, shifted: bool, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    vocab_rng = np.random.default_rng(1234)  # the same sentences on both sides
    short, long = sentences(vocab_rng, 500, 3, 12), sentences(vocab_rng, 500, 8, 30)
    n_numeric = max(1, features - 10)
    columns = {}
    for i in range(n_numeric):
        shift = 0.5 if shifted and i < 3 else 0.0
        columns[f"f{i:02d}"] = pa.array(rng.normal(shift, 1.0, rows).astype(np.float32))  # model inputs: float32
    for i in range(5):
        weights = np.array([0.4, 0.3, 0.2, 0.1])
        if shifted and i == 0:
            weights = weights[::-1]
        columns[f"c{i}"] = pa.array(rng.choice(4, rows, p=weights).astype(np.int64))
    for i in range(3):
        columns[f"text{i}"] = text_column(rng, rows, long if shifted and i == 0 else short)
    columns["candidates"] = list_column(rng, rows, 10, 40) if shifted else list_column(rng, rows, 5, 25)
    columns["history"] = list_column(rng, rows, 0, 20)
    return pa.table(columns)


def scale(rows: int, features: int, folder: Path) -> dict:
    paths = []
    start = time.perf_counter()
    for name, shifted, seed in (("old", False, 1), ("new", True, 2)):
        path = folder / f"{name}.parquet"
        pq.write_table(make_log(rows, features, shifted, seed), path)
        paths.append(path)
    written = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    result.update(wall_s=wall, cpu_s=cpu, peak_rss_mib=max(usage.ru_maxrss, before) / 1024, write_s=written,
                  file_mib=sum(p.stat().st_size for p in paths) / 2**20)
    return result


def split_frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    vocabulary = sentences(np.random.default_rng(99), 200, 3, 12)
    frame = {f"x{i}": rng.normal(0, 1, rows) for i in range(7)}
    frame["cat"] = rng.choice(4, rows, p=[0.4, 0.3, 0.2, 0.1])
    frame["text"] = vocabulary[rng.integers(0, len(vocabulary), rows)]
    frame["ids"] = [rng.integers(0, 1000, k) for k in rng.integers(5, 40, rows)]
    return pd.DataFrame(frame)


def false_positives(splits: int, rows: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    any_drift, tests, drifted_tests, features = 0, 0, 0, 0
    start = time.perf_counter()
    for _ in range(splits):
        frame = split_frame(rng, 2 * rows)
        order = rng.permutation(2 * rows)
        old, new = frame.iloc[order[:rows]].reset_index(drop=True), frame.iloc[order[rows:]].reset_index(drop=True)
        entries = feature_drift(old, new)
        flagged = sum(e["drift"] for e in entries)
        any_drift += flagged > 0
        drifted_tests += flagged
        tests += sum(e["status"] == "ok" for e in entries)
        features = len(entries)
    return {"splits": splits, "rows": rows, "features": features, "share_any": any_drift / splits,
            "share_tests": drifted_tests / max(tests, 1), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--split-rows", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        big = scale(args.rows, args.features, Path(folder))
    print(f"scale: 2 x {args.rows:,} rows x {args.features} columns ({big['file_mib']:.0f} MiB parquet, written in "
          f"{big['write_s']:.1f} s), {big['features']} features tested")
    print(f"  {'whole process':<22}{big['wall_s']:>8.2f} s   (target < 10 s)")
    print(f"  {'  CPU (user + sys)':<22}{big['cpu_s']:>8.2f} s   (all threads; on a busy machine wall > CPU / cores)")
    print(f"  {'  imports':<22}{big['import_s']:>8.2f} s   CPU {big['import_cpu']:.2f} s")
    print(f"  {'  read both logs':<22}{big['read_s']:>8.2f} s   CPU {big['read_cpu']:.2f} s")
    print(f"  {'  drift_report':<22}{big['report_s']:>8.2f} s   CPU {big['report_cpu']:.2f} s")
    print(f"  {'peak RSS':<22}{big['peak_rss_mib']:>8.0f} MiB")
    print(f"  drifted ({len(big['drifted'])}): {', '.join(big['drifted'])}")
    for text in big["schema_changes"]:
        print(f"  schema: {text}")

    fp = false_positives(args.splits, args.split_rows)
    print(f"false positives: {fp['splits']} A/A splits of 2 x {fp['rows']} rows, {fp['features']} features each "
          f"({fp['seconds']:.1f} s)")
    print(f"  {'splits with any drift':<28}{fp['share_any']:>7.3f}   (family-wise alpha {ALPHA})")
    print(f"  {'single tests flagged':<28}{fp['share_tests']:>7.4f}")


if __name__ == "__main__":
    main()
