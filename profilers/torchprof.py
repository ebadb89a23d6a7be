"""Profile a model version with torch.profiler, on the same requests for both versions.

Profiled times serve attribution only: the profiler's own overhead distorts latency (kineto#325), so every
latency figure comes from the benchmark harness, never from here. The trace is written through
`tensorboard_trace_handler`, which gives both a Chrome trace (open it in Perfetto or chrome://tracing) and
the layout torch-tb-profiler reads: `<logdir>/<version>/<worker>.<timestamp>.pt.trace.json.gz`.

Module paths: TorchScript models carry "Module Hierarchy" in each op when `with_modules=True`; eager
modules do not, so forward hooks wrap every submodule in a `record_function("module::<path>")` annotation
and the trace reader finds the enclosing module of each op by nesting.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from diagnose.core.quiet import FdCapture, kineto_noise
from profilers.runners import LoadedVersion

MODULE_PREFIX = "module::"


@contextmanager
def module_annotations(model):
    """Annotate each submodule's forward with its qualified name (eager nn.Modules only)."""
    import torch

    handles = []
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        for name, module in model.named_modules():
            if not name:
                continue
            label = MODULE_PREFIX + name

            def enter(mod, args, _label=label):
                mod._diagnose_rf = torch.autograd.profiler.record_function(_label)
                mod._diagnose_rf.__enter__()

            def leave(mod, args, output):
                rf = getattr(mod, "_diagnose_rf", None)
                if rf is not None:
                    rf.__exit__(None, None, None)
                    mod._diagnose_rf = None

            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _entered(prof, capture: FdCapture):
    """`with prof:`, its start and stop inside `capture`."""
    with capture:
        prof.__enter__()
    try:
        yield prof
    finally:
        with capture:
            prof.__exit__(None, None, None)


def profile_version(version: LoadedVersion, requests: pd.DataFrame, logdir: Path, label: str,
                    steps: int = 5, warmup: int = 2, seed: int = 0) -> Path:
    """Run `warmup + steps` batches of `requests` under the profiler; return the trace file written."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU]
    if version.manifest.serving.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = Path(logdir) / label
    out.mkdir(parents=True, exist_ok=True)
    batch = version.manifest.serving.batch_size
    rows = requests.sample(n=min(len(requests), batch * (steps + warmup)), replace=len(requests) < batch * (steps + warmup),
                           random_state=seed)
    torch.set_num_threads(version.manifest.serving.threads)
    handler = tensorboard_trace_handler(str(out), worker_name=label, use_gzip=True)
    prof = profile(
        activities=activities, schedule=schedule(wait=0, warmup=warmup, active=steps, repeat=1),
        on_trace_ready=handler, record_shapes=True, with_modules=True, with_flops=True, profile_memory=True,
    )
    kineto = FdCapture(kineto_noise)  # Kineto writes "USDT: ... profiler_start/stop" to fd 2 when the trace starts, stops
    with torch.inference_mode(), module_annotations(version.model), _entered(prof, kineto):
        for i in range(warmup + steps):
            frame = rows.iloc[i * batch:(i + 1) * batch]
            version(version.prepare(frame))
            with kineto:  # the schedule starts and stops the trace inside step(); the model's calls stay outside
                prof.step()
    traces = sorted(out.glob("*.pt.trace.json.gz"))
    if not traces:
        raise RuntimeError(f"torch.profiler wrote no trace into {out}")
    return traces[-1]
