"""The benchmark harness: per-request latency of every cell, interleaved so machine drift hits all alike.

A cell is one model version fed one request set. Each round visits every cell once in a fresh random order
and times a block of consecutive batches (preprocess + model call) with `perf_counter_ns`, threads fixed to
the version's serving setting, the garbage collector paused (collected once a second, outside the timed
regions).

Runtimes are timed as they serve (an ONNX Runtime pool spins inside a run, as ORT does by default; torch's
OpenMP team spins too), and fairness between cells is kept outside the timed region: before a cell's block the
harness waits, untimed, until the process's CPU use has dropped (the previous cell's threads have stopped
spinning, `settle`), runs one untimed lead-in batch (which brings back the weights the previous cell evicted
from the caches), then times a block of batches back to back, as a served process under load sees them. The
block holds as many batches as fit in `block_s` for the slowest cell (1 to `max_block`), the same for every
cell, so every cell gets the same number of samples. Measured on MiniLM with torch eager and two ORT variants
interleaved, every cell's median came within 4% of the same cell timed alone (benchmarks/variants_table.py).

The loop ends at the time budget (run over, up to 4x, until at least 20 rounds ran), or earlier once the
caller's `settled` check says more samples would not change the verdict. The 4x is a hard cap from the
start of the warm-up: it is checked before every batch, warm-up included, so a slow model cannot hold a
round (or the warm-up) open past it. A batch never holds more rows than its request log (a batch_size of
100000 over 64 requests times batches of 64, and says so in `capped_batches`). Raw samples are kept; every
statistic is derived from them later.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from diagnose.core.errors import CellUnavailable, first_line
from profilers.runners import LoadedVersion, input_elements, input_signature

SAMPLE_DTYPES = {
    "cell": "object", "model": "object", "requests": "object", "round": "int64", "t_s": "float64",
    "request_index": "int64", "batch_size": "int64", "latency_ms": "float64", "preprocess_ms": "float64",
    "infer_ms": "float64", "input_elements": "int64", "input_signature": "object",
}
SAMPLE_COLUMNS = list(SAMPLE_DTYPES)


@dataclass(frozen=True)
class Cell:
    model: str  # "old" | "new": which version's artifact and preprocessing
    requests: str  # "old" | "new": which request log

    @property
    def key(self) -> str:
        return f"{self.model}_model/{self.requests}_requests"


@dataclass(frozen=True)
class BenchmarkPlan:
    cells: tuple[Cell, ...]
    budget_s: float = 30.0
    warmup_batches: int = 5
    min_samples: int = 100  # per cell: no early stop before this (the caller's check asks more of a p99)
    floor_rounds: int = 20  # the budget may run over (up to max_overrun times) until this many rounds ran
    max_overrun: float = 4.0
    check_every_s: float = 1.0
    seed: int = 0
    block_s: float = 0.05  # a block of batches per cell visit lasts about this long for the slowest cell
    max_block: int = 8  # short blocks: a burst of machine noise should not land on one cell's samples only
    settle_s: float = 0.1  # the most the harness waits, untimed, for the previous cell's threads to go idle
    lead_in: int = 1  # untimed batches at the start of each block: the weights the last cell evicted come back


@dataclass
class BenchmarkResult:
    samples: pd.DataFrame
    unavailable: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    elapsed_s: float = 0.0
    stopped: str = "budget"
    block: int = 1  # batches per cell visit
    settle_ms: dict[str, float] = field(default_factory=dict)  # the untimed waits between cells: median and max
    # cells whose serving.batch_size exceeds their request log: {cell key: {"batch_size", "effective_batch_size"}}
    capped_batches: dict[str, dict[str, int]] = field(default_factory=dict)


def settle(max_s: float, busy_share: float = 0.2, window_s: float = 0.001) -> float:
    """Wait until this process's threads (all of them: ORT pools, torch's OpenMP team) use under `busy_share` of a
    core over a `window_s` window, or `max_s` passed; return the seconds waited. A pool that spins after its run
    would otherwise steal the next cell's cores inside its timed region."""
    start = time.perf_counter()
    while max_s > 0:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)
        wall1 = time.perf_counter()
        if (time.process_time() - cpu0) < busy_share * (wall1 - wall0) or wall1 - start >= max_s:
            return wall1 - start
    return 0.0


class _CellRunner:
    """Cycles through one request log in a shuffled order, one batch at a time (at most the whole log)."""

    def __init__(self, cell: Cell, version: LoadedVersion, requests: pd.DataFrame, rng: np.random.Generator):
        self.cell, self.version, self.requests = cell, version, requests
        self.configured_batch = version.manifest.serving.batch_size
        self.batch = min(self.configured_batch, len(requests))
        self.threads = version.manifest.serving.threads
        self.order = rng.permutation(len(requests))
        self.rng = rng
        self.pos = 0
        self.last_ms = 0.0  # the latest warm-up batch: what sizes the blocks

    def next_rows(self) -> np.ndarray:
        if self.pos + self.batch > len(self.order):
            self.order = self.rng.permutation(len(self.requests))
            self.pos = 0
        rows = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return rows

    def measure(self) -> tuple:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        rows = self.next_rows()
        frame = self.requests.iloc[rows]
        with torch.inference_mode():
            t0 = time.perf_counter_ns()
            inputs = self.version.prepare(frame)
            t1 = time.perf_counter_ns()
            self.version(inputs)
            t2 = time.perf_counter_ns()
        return rows, inputs, (t2 - t0) / 1e6, (t1 - t0) / 1e6, (t2 - t1) / 1e6

    def warm_up(self, batches: int, hard_stop: float) -> None:
        """Run a few batches untimed (at least one, fewer once `hard_stop` has passed); a failure here means this
        cell cannot run at all."""
        try:
            for i in range(batches):
                if i and time.perf_counter() >= hard_stop:
                    break
                self.last_ms = self.measure()[2]
        except CellUnavailable:
            raise
        except Exception as exc:
            raise CellUnavailable(f"{type(exc).__name__}: {first_line(exc)}"[:300]) from None


def run_benchmark(
    plan: BenchmarkPlan,
    versions: dict[str, LoadedVersion],
    requests: dict[str, pd.DataFrame],
    settled: Callable[[pd.DataFrame], bool] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> BenchmarkResult:
    hard_stop = time.perf_counter() + plan.budget_s * plan.max_overrun
    rng = np.random.default_rng(plan.seed)
    runners: list[_CellRunner] = []
    unavailable: dict[str, str] = {}
    capped: dict[str, dict[str, int]] = {}
    for cell in plan.cells:
        runner = _CellRunner(cell, versions[cell.model], requests[cell.requests], np.random.default_rng(rng.integers(2**32)))
        if runner.batch < runner.configured_batch:
            capped[cell.key] = {"batch_size": runner.configured_batch, "effective_batch_size": runner.batch}
        try:
            runner.warm_up(plan.warmup_batches, hard_stop)
        except CellUnavailable as exc:
            unavailable[cell.key] = str(exc)
            continue
        runners.append(runner)

    block = max(1, min(plan.max_block, int(plan.block_s * 1e3 / max([r.last_ms for r in runners] + [1e-3]))))
    lead_in = plan.lead_in if len(runners) > 1 else 0  # one cell alone evicts nothing
    rows: list[tuple] = []
    waits: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    last_check = start
    rounds = 0
    stopped = "budget"
    try:
        while runners:
            now = time.perf_counter()
            if now - start >= plan.budget_s and (rounds >= plan.floor_rounds or now >= hard_stop):
                break  # a slow model on a busy machine still gets enough rounds to judge, within a bound
            done, cut_short = len(rows), False
            for index in rng.permutation(len(runners)):
                runner = runners[index]
                if len(runners) > 1:
                    waits.append(settle(plan.settle_s))  # untimed: the previous cell's threads go idle first
                for i in range(lead_in + block):
                    if time.perf_counter() >= hard_stop:  # checked per batch: a slow model cannot hold a round open
                        cut_short = True
                        break
                    picked, inputs, total, pre, infer = runner.measure()
                    if i < lead_in:
                        continue  # untimed: it brings the cell's weights back into the caches the last cell used
                    rows.append((
                        runner.cell.key, runner.cell.model, runner.cell.requests, rounds, time.perf_counter() - start,
                        int(picked[0]), len(picked), total, pre, infer, input_elements(inputs), input_signature(inputs),
                    ))
                if cut_short:
                    break
            if cut_short:
                del rows[done:]  # the round's first cells would otherwise be a block ahead of the rest
                break
            rounds += 1
            now = time.perf_counter()
            if now - last_check >= plan.check_every_s:
                gc.collect()  # once a second, outside any timed region: garbage never piles up into one sample
                last_check = now = time.perf_counter()
                if on_progress:
                    on_progress(now - start, f"{rounds} rounds")
                if settled and rounds * block >= plan.min_samples and settled(pd.DataFrame(rows, columns=SAMPLE_COLUMNS)):
                    stopped = f"settled after {rounds} rounds"
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    if stopped == "budget" and rounds < plan.floor_rounds and runners:
        stopped = f"hard cap ({plan.max_overrun:g}x the budget) after {rounds} rounds"
    elapsed = time.perf_counter() - start
    settle_ms = {"median": round(1e3 * float(np.median(waits)), 3), "max": round(1e3 * max(waits), 3)} if waits else {}
    return BenchmarkResult(pd.DataFrame(rows, columns=SAMPLE_COLUMNS), unavailable, rounds, elapsed, stopped, block,
                           settle_ms, capped)
