"""The harness runs over its budget, within a bound, when too few rounds fit: a verdict needs samples."""

from __future__ import annotations

import time

import pandas as pd

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
