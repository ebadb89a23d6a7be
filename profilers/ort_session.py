"""ONNX Runtime sessions as a version is served, for the model runners and the variants alike: the session
options, and the feed of a call in the graph's declared input types (as a server converts what it receives)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from profilers.dtypes import ONNX_NUMPY_DTYPES

# The session config entries that keep ORT's thread pools from spinning after a run: what a user sets to share
# cores between sessions, and what the benchmark used to force on every session.
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
# Spinning stops when a run returns (and restarts with the next run): what ORT offers for infrequent requests.
# The benchmark adds it unless the version's config says otherwise: a pool still spinning after its run held the
# next cell's cores, which measured as torch eager 0.58 -> 13.3 ms per call on 2 cores, waiting or not
# (benchmarks/variants_table.py); inside a run the pool spins as served.
STOP_AFTER_RUN = {"session.force_spinning_stop": "1"}


def session_options(threads: int, inter_op: int = 1, config: dict[str, str] | None = None):
    """SessionOptions with `threads` intra-op and `inter_op` inter-op threads and the version's own session config
    entries (`serving.ort_session_config`), ORT's defaults for everything else.

    ORT's pool threads spin between the parallel sections of a run by default, and a server keeps them spinning:
    that is part of how fast it serves (MiniLM on 2 threads: 13.5 ms spinning, 16.0 ms not), so the benchmark
    times the session that way. What it changes is after the run: `STOP_AFTER_RUN` stops the spinning when the run
    returns, so the next interleaved cell (torch or another session) gets its cores; the harness also waits,
    untimed, for the process to go idle between cells.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op
    for key, value in {**STOP_AFTER_RUN, **(config or {})}.items():
        options.add_session_config_entry(key, value)
    return options


def describe(threads: int, inter_op: int = 1, config: dict[str, str] | None = None) -> dict:
    """The session options in the words of the variant table: threads and whether the pools spin."""
    config = {**STOP_AFTER_RUN, **(config or {})}
    return {"intra_op_threads": threads, "inter_op_threads": inter_op,
            "allow_spinning": config.get("session.intra_op.allow_spinning", "1") != "0",
            "spinning_stops_after_run": config.get("session.force_spinning_stop") == "1",
            **({"config": dict(config)} if config else {})}


def to_numpy(value, dtype=None) -> np.ndarray:
    """A tensor (bfloat16 widened: numpy has none) or array as a contiguous numpy array, in `dtype` when given."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    array = np.asarray(value)
    return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))


def input_plan(session) -> list[tuple[str, int, Any]]:
    """(graph input name, argument index, numpy dtype) per input; an input named input_<i> takes argument i.

    By name rather than position because an exporter may drop an input the graph never reads.
    """
    plan = []
    for position, item in enumerate(session.get_inputs()):
        suffix = item.name.removeprefix("input_")
        index = int(suffix) if item.name.startswith("input_") and suffix.isdigit() else position
        plan.append((item.name, index, ONNX_NUMPY_DTYPES.get(item.type)))
    return plan


def ort_runner(session) -> Callable:
    """Feed torch tensors (or arrays) as numpy arrays in the graph's dtypes; return session.run's list of outputs."""
    plan = input_plan(session)

    def run(*args):
        return session.run(None, {name: to_numpy(args[index], dtype) for name, index, dtype in plan})

    return run
