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
                  max_batch_delay_ms: int | None, workers: int) -> int:
    """Resolve the version, start the server, say where it is, wait until Ctrl-C or SIGTERM, stop it (exit 0)."""
    from diagnose.registry import resolve_registry
    from profilers.serve_torchserve import serve

    found = resolve_registry(registry)
    manifest = found.manifest(model or found.default_model(), version)
    workdir = Path(tempfile.mkdtemp(prefix=f"diagnose-serve-{manifest.name}-{manifest.version}-"))
    # a SIGTERM (kill, systemd, docker stop) stops the server as Ctrl-C does: through the `with` below
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with serve(manifest, workdir, port, batch_size, max_batch_delay_ms, workers) as server:
            print(ready_line(server, manifest, model, registry), flush=True)
            try:
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


def ready_line(server, manifest: Manifest, model: str | None, registry: str | None) -> str:
    """One line: what is served where, with what batching, and the load test to run against it."""
    loadtest = loadtest_example(server, manifest, model, registry)
    return (f"diagnose serve: {manifest.name} {manifest.version} on TorchServe at {server.url} "
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
