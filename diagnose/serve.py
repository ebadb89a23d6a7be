"""`diagnose serve VERSION`: a registry version behind TorchServe, until Ctrl-C (docs/serve.md).

The terminal gets one line (where to send requests, where the metrics are, a `diagnose loadtest` line to run
against it); TorchServe's own output stays in its work folder, which is removed after a clean stop and kept,
named in the error, when the server fails.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

from diagnose.core.errors import UserError
from diagnose.core.manifest import Manifest


def serve_command(version: str, model: str | None, registry: str | None, port: int, batch_size: int | None,
                  max_batch_delay_ms: int | None, workers: int, variant: str | None = None,
                  swap_to: str | None = None, swap_after_s: float = 30.0) -> int:
    """Resolve the version, start the server, say where it is, wait until Ctrl-C or SIGTERM, stop it (exit 0).
    With `swap_to`, that version replaces the first `swap_after_s` seconds after the server is ready, and one line
    says when each step of the swap ended, to set beside a load test's windows."""
    from diagnose.registry import resolve_registry
    from profilers.serve_torchserve import serve

    found = resolve_registry(registry)
    manifest = found.manifest(model or found.default_model(), version)
    replacement = found.manifest(manifest.name, swap_to) if swap_to else None  # a bad name is refused before start
    workdir = Path(tempfile.mkdtemp(prefix=f"diagnose-serve-{manifest.name}-{manifest.version}-"))
    # a SIGTERM (kill, systemd, docker stop) stops the server as Ctrl-C does: through the `with` below
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with serve(manifest, workdir, port, batch_size, max_batch_delay_ms, workers, variant=variant) as server:
            print(ready_line(server, manifest, model, registry), flush=True)
            try:
                if replacement is not None:
                    swap_later(server, replacement, swap_after_s)
                code = server.process.wait()
            except KeyboardInterrupt:
                code = None
    except UserError:
        if not any(workdir.iterdir()):  # refused before anything was written (no java, a port in use)
            workdir.rmdir()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code is not None:  # the server ended by itself: its logs say why, so they stay
        raise UserError(f"TorchServe stopped (exit {code}); its logs: {server.log_dir}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def swap_later(server, replacement: Manifest, after_s: float) -> None:
    """Wait `after_s` (or until the server exits), swap, and print one line with the wall-clock times of the swap's
    steps: a load test's windows around them show what the swap cost in errors and p99."""
    import subprocess
    import time

    try:
        server.process.wait(timeout=after_s)
        return  # the server ended first: the caller reports it
    except subprocess.TimeoutExpired:
        pass
    started = time.time()
    steps = server.swap(replacement)

    def clock(seconds: float) -> str:
        return time.strftime("%H:%M:%S", time.gmtime(started + seconds))

    print(f"diagnose serve: swapped {server.model_name} to {replacement.version} at {clock(0)} UTC: loaded in "
          f"{steps['load_s']:.1f} s, default from {clock(steps['load_s'])} UTC, the old version unloaded "
          f"{steps['unload_s']:.1f} s later (done {clock(sum(steps.values()))} UTC)", flush=True)


def ready_line(server, manifest: Manifest, model: str | None, registry: str | None) -> str:
    """One line: what is served where, with what batching, and the load test to run against it."""
    loadtest = loadtest_example(server, manifest, model, registry)
    served = f"{manifest.name} {manifest.version}" + (f" as {server.variant}" if server.variant else "")
    return (f"diagnose serve: {served} on TorchServe at {server.url} "
            f"(batch_size {server.batch_size}, max_batch_delay {server.max_batch_delay_ms} ms, "
            f"{server.workers} worker{'s' if server.workers > 1 else ''}; started in "
            f"{server.timings['server_start'] + server.timings['model_load']:.1f} s): "
            f"POST {server.predictions_url} a JSON row {{column: value}}; metrics {server.metrics_url}; "
            f"try: {loadtest}; Ctrl-C stops it")


def loadtest_example(server, manifest: Manifest, model: str | None, registry: str | None) -> str:
    """`diagnose loadtest` against this server, with its metrics, sending this version's own request log (the
    same --model and --registry): a search under the manifest's SLO where it has one, else a fixed rate."""
    parts = ["diagnose loadtest", server.url, "--protocol torchserve", f"--version {manifest.version}"]
    if model:
        parts.append(f"--model {model}")
    if model and model != manifest.name:
        parts.append(f"--server-model {manifest.name}")
    if registry:
        parts.append(f"--registry {registry}")
    parts.append(f"--metrics {server.metrics_url}")
    p99 = manifest.slo.get("p99_ms")
    parts.append(f"--find-max --slo p99={p99:g}ms" if p99 else "--rate 50")
    return " ".join(parts)
