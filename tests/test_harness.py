"""The harness runs over its budget, within a bound, when too few rounds fit: a verdict needs samples."""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
from conftest import requests_frame, save_mlp, write_manifest

from diagnose.core.manifest import load_manifest
from profilers.harness import BenchmarkPlan, Cell, run_benchmark
from profilers.runners import load_version


class Slow:
    """Wraps a loaded version so each call takes at least `seconds` (a slow model on a busy machine)."""

    def __init__(self, version, seconds):
        self.version, self.seconds = version, seconds

    def __getattr__(self, name):
        return getattr(self.version, name)

    def __call__(self, inputs):
        time.sleep(self.seconds)
        return self.version(inputs)


def test_budget_runs_over_until_enough_rounds_within_a_bound(tiny_registry):
    version = Slow(load_version(load_manifest(tiny_registry / "mlp" / "v1" / "manifest.yaml")), 0.02)
    requests = pd.read_parquet(tiny_registry / "mlp" / "v1" / "requests.parquet")
    plan = BenchmarkPlan(cells=(Cell("old", "old"),), budget_s=0.1, warmup_batches=1, floor_rounds=20, max_overrun=20)
    result = run_benchmark(plan, {"old": version}, {"old": requests})
    assert result.rounds == 20 and result.elapsed_s > 0.1  # over budget, exactly to the floor
    capped = BenchmarkPlan(cells=(Cell("old", "old"),), budget_s=0.1, warmup_batches=1, floor_rounds=1000, max_overrun=3)
    result = run_benchmark(capped, {"old": version}, {"old": requests})
    assert result.elapsed_s < 0.1 * 3 + 0.2 and result.rounds < 1000  # the bound holds


def test_a_batch_never_holds_more_rows_than_the_request_log(tmp_path):
    """batch_size 100000 over 64 requests: batches of the whole log, said so, and the benchmark ends on time."""
    folder = tmp_path / "mlp" / "v1"
    write_manifest(folder)
    save_mlp(folder / "model.pt", (16,))
    requests = requests_frame(rows=64)
    manifest = load_manifest(folder / "manifest.yaml")
    # set on the loaded manifest: the harness bounds the batch whatever the manifest check allows
    manifest = replace(manifest, serving=replace(manifest.serving, batch_size=100_000))
    version = load_version(manifest)
    plan = BenchmarkPlan(cells=(Cell("old", "old"),), budget_s=0.5)
    started = time.perf_counter()
    result = run_benchmark(plan, {"old": version}, {"old": requests})
    assert time.perf_counter() - started < 5 and result.rounds >= plan.floor_rounds
    assert set(result.samples["batch_size"]) == {64}
    assert result.capped_batches == {"old_model/old_requests": {"batch_size": 100_000, "effective_batch_size": 64}}


def test_the_hard_cap_holds_inside_the_warm_up_and_a_round(tiny_registry):
    """The 4x cap counts from the start of the warm-up and is checked before every batch: 100 warm-up batches
    of 0.1 s stop at the cap, and a round of 0.2 s calls stops part way, leaving no cell a sample ahead."""
    requests = pd.read_parquet(tiny_registry / "mlp" / "v1" / "requests.parquet")

    def run(seconds, plan):
        versions = {v: Slow(load_version(load_manifest(tiny_registry / "mlp" / v / "manifest.yaml")), seconds)
                    for v in ("v1", "v2", "v3")}
        started = time.perf_counter()
        result = run_benchmark(plan, versions, {"old": requests})
        return result, time.perf_counter() - started

    cells = (Cell("v1", "old"), Cell("v3", "old"))
    result, took = run(0.1, BenchmarkPlan(cells=cells, budget_s=0.1, warmup_batches=100, max_overrun=4))
    # the whole warm-up would take 20 s; the cap (0.4 s) ends it after a batch or two, with room for a busy machine
    assert took < 5 and result.stopped == "hard cap (4x the budget) after 0 rounds"
    cells += (Cell("v2", "old"),)
    # warm-up 0.6 s, then a round of three 0.4 s visits (lead-in and block) ends near 1.8 s: the cap at 2.8 s falls
    # inside the second round, with room for the untimed settle waits and a busy machine
    result, took = run(0.2, BenchmarkPlan(cells=cells, budget_s=0.7, warmup_batches=1, max_overrun=4))
    assert result.stopped.startswith("hard cap (4x the budget)") and took < 6
    assert result.rounds >= 1 and len(result.samples) == len(cells) * result.rounds  # the cut round was dropped
    assert not result.capped_batches
