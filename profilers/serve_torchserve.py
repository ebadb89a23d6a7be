"""Serve one registry version behind TorchServe: a model archive, a config, the server, the model registered.

TorchServe is a real server of the ecosystem (a Java frontend that batches requests, Python workers that run the
handler), so what a load test sees of it (queueing, dynamic batching, workers, its `ts_*` Prometheus metrics) is
what a team serving a model with it sees. The handler (profilers/torchserve_handler.py) loads the version with
`load_version`, so the model is served with the preprocessing, threads and dtypes the compare measures it with.

Everything TorchServe writes stays in the work folder: its logs (our log4j2 config, no console appender), the
launcher's and the JVM's output (`logs/torchserve.out`), its pid file and its worker sockets (`tmp/`). A server
that cannot start, or a model that does not load, is one `UserError` line naming the log to read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from diagnose.core.errors import UserError
from diagnose.core.manifest import Manifest

HANDLER = Path(__file__).with_name("torchserve_handler.py")
SETTINGS_FILE = "diagnose_serve.json"  # read by the handler (torchserve_handler.SETTINGS_FILE)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90.0  # the JVM's start: several seconds, more on a busy 2-core machine
REGISTER_TIMEOUT_S = 300.0  # every worker imports torch and loads the version
DEFAULT_MAX_BATCH_DELAY_MS = 10  # small beside a 200 ms SLO; long enough for batches to fill at a high rate
STOP_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 10.0  # a swap waits at most this long for the old version's queued and running requests
SOCKET_PATH_MAX = 107  # sun_path on Linux, less its terminating NUL

# TorchServe's own log4j2.xml writes to the console too and logs the frontend at debug; this one keeps the same
# files, in the work folder only, the frontend at info, and drops the worker threads' three lines a batch (written
# synchronously on the frontend's threads: under load, a cost the server would not have with logging turned down).
LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <File name="access_log" fileName="{logs}/access_log.log"><PatternLayout pattern="%d{{ISO8601}} - %m%n"/></File>
    <File name="model_log" fileName="{logs}/model_log.log"><PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c - %m%n"/></File>
    <File name="model_metrics" fileName="{logs}/model_metrics.log"><PatternLayout pattern="%d{{ISO8601}} - %m%n"/></File>
    <File name="ts_log" fileName="{logs}/ts_log.log"><PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c - %m%n"/></File>
    <File name="ts_metrics" fileName="{logs}/ts_metrics.log"><PatternLayout pattern="%d{{ISO8601}} - %m%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="info" additivity="false"><AppenderRef ref="access_log"/></Logger>
    <Logger name="MODEL_LOG" level="info" additivity="false"><AppenderRef ref="model_log"/></Logger>
    <Logger name="MODEL_METRICS" level="info" additivity="false"><AppenderRef ref="model_metrics"/></Logger>
    <Logger name="TS_METRICS" level="info" additivity="false"><AppenderRef ref="ts_metrics"/></Logger>
    <Logger name="org.pytorch.serve.wlm.WorkerThread" level="warn"/>
    <Logger name="org.pytorch.serve.wlm.BatchAggregator" level="warn"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Root level="info"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass(frozen=True)
class Ports:
    """Where the server listens on 127.0.0.1: inference, management and metrics (TorchServe's 8080/8081/8082 by
    default), and its two gRPC ports, on free ports so that two servers (an old and a new version) can run side by
    side without fighting over TorchServe's fixed 7070/7071."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    def all(self) -> tuple[int, ...]:
        return (self.inference, self.management, self.metrics, self.grpc_inference, self.grpc_management)


@dataclass
class Server:
    """A running TorchServe serving one version; `stop()` (or leaving the `with` block) ends it and its workers."""

    process: subprocess.Popen
    ports: Ports
    model_name: str
    version: str
    workdir: Path
    batch_size: int
    max_batch_delay_ms: int
    workers: int
    variant: str | None = None  # an optimized variant of the version (profilers.variants) served instead of it
    timings: dict[str, float] = field(default_factory=dict)  # seconds: server_start, model_load

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def predictions_url(self) -> str:
        return f"{self.url}/predictions/{self.model_name}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def stop(self) -> None:
        """SIGTERM to the JVM, which stops its workers and lets the launcher exit; then SIGKILL to whatever of the
        server's process group is left (all of it, if the JVM does not stop in time)."""
        if self.process.poll() is None:
            self._terminate_jvm()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process, signal.SIGKILL)  # a worker that outlived the JVM

    def _terminate_jvm(self) -> None:
        """The launcher writes the JVM's pid to `$TMPDIR/.model_server.pid`; signalling the launcher instead would
        end it at once and leave the JVM's shutdown to a SIGKILL. No pid yet: the whole group gets the SIGTERM."""
        pid_file = self.workdir / "tmp" / ".model_server.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            if os.getpgid(pid) == self.process.pid:  # our server's JVM, not a reused pid
                os.kill(pid, signal.SIGTERM)
                return
        except (OSError, ValueError, IndexError):
            pass
        _signal_group(self.process, signal.SIGTERM)

    def swap(self, manifest: Manifest) -> dict[str, float]:
        """Serve `manifest`'s version (the same model, another version) in place of the current one, as a rolling
        update of one server does: register it beside the old one and wait until its workers loaded it, make it the
        default (`/predictions/{model}` answers with it from then on), then unregister the old one. Requests keep
        being answered throughout; a load test running across the swap shows what it cost. Returns the seconds
        each step took: load, switch, unload."""
        if manifest.name != self.model_name:
            raise UserError(f"a swap replaces a version of {self.model_name}, not {manifest.name}", manifest.path)
        old, started = self.version, time.monotonic()
        # an archive of its own name: TorchServe unpacks an archive by its file name, so a second `<model>.mar`
        # would be read as the first; registered under the model's name all the same
        archive = build_archive(manifest, self.workdir, {"manifest": str(manifest.path.resolve())},
                                f"{self.model_name}-{manifest.version}")
        register(self, archive.name, manifest.version)
        loaded = time.monotonic()
        self._manage(f"models/{self.model_name}/{urllib.parse.quote(manifest.version)}/set-default", "PUT")
        self.version, switched = manifest.version, time.monotonic()
        self._drain(old)  # the requests routed to the old version before the switch are answered by it
        self._manage(f"models/{self.model_name}/{urllib.parse.quote(old)}", "DELETE")
        return {"load_s": loaded - started, "switch_s": switched - loaded, "unload_s": time.monotonic() - switched}

    def _drain(self, version: str, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait until `version` has no request queued and no worker busy (TorchServe's describe-model answer), or
        `timeout_s`: unregistering a version stops its workers, and a batch they still held would go unanswered."""
        url = f"{self.management_url}/models/{self.model_name}/{urllib.parse.quote(version)}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    described = json.loads(response.read())[0]
            except (OSError, ValueError, IndexError, KeyError):
                return  # nothing to wait on that the server will say
            busy = any(w.get("status") == "WORKING" for w in described.get("workers", []))
            if not busy and not (described.get("jobQueueStatus") or {}).get("pendingRequests"):
                return
            time.sleep(0.05)

    def _manage(self, path: str, method: str) -> None:
        said = _management(self, path, method)
        if said is not None:
            raise UserError(f"TorchServe refused {method} /{path}: {said}")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    """The server runs in its own session (its pgid is the launcher's pid): signal that group, nothing else."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def serve(manifest: Manifest, workdir: Path, port: int = 8080, batch_size: int | None = None,
          max_batch_delay_ms: int | None = None, workers: int = 1,
          management_port: int | None = None, metrics_port: int | None = None,
          variant: str | None = None, cache_dir: Path | None = None) -> Server:
    """Start TorchServe on 127.0.0.1 serving `manifest`'s version as model `manifest.name`, and return once its
    workers have loaded it. Ports default to `port`, `port + 1`, `port + 2`, as TorchServe's 8080/8081/8082;
    `batch_size` defaults to the manifest's `serving.batch_size`, `max_batch_delay_ms` to 10. `variant` serves
    that optimized variant of the version (an ONNX Runtime session, say) behind the same preprocessing: built
    here first, so a variant that does not build is one line before any server starts."""
    check_requirements()
    batch_size = batch_size or manifest.serving.batch_size
    chosen = (port, management_port or port + 1, metrics_port or port + 2)
    ports = Ports(*chosen, *free_ports(2, avoid=chosen))
    check_ports_free(ports)
    workdir = Path(workdir).resolve()
    check_socket_path(workdir)
    for sub in ("model-store", "logs", "tmp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    settings = {"manifest": str(manifest.path.resolve())}
    if variant:
        cache = Path(cache_dir or default_cache_dir()).resolve()
        build_served_variant(manifest, variant, batch_size, cache)
        settings.update(variant=variant, max_batch=batch_size, cache_dir=str(cache))
    build_archive(manifest, workdir, settings)
    started = time.monotonic()
    process = start_torchserve(workdir, ports)
    delay = DEFAULT_MAX_BATCH_DELAY_MS if max_batch_delay_ms is None else max_batch_delay_ms
    server = Server(process, ports, manifest.name, manifest.version, workdir, batch_size, delay, workers, variant)
    try:
        wait_ready(server)
        server.timings["server_start"] = time.monotonic() - started
        register(server)
        server.timings["model_load"] = time.monotonic() - started - server.timings["server_start"]
    except BaseException:
        server.stop()
        raise
    return server


def default_cache_dir() -> Path:
    from profilers.variants import default_cache_dir as variants_cache

    return variants_cache()


def build_served_variant(manifest: Manifest, name: str, max_batch: int, cache_dir: Path, version=None):
    """The variant `name` of the version as the server's workers will run it: built on batches of 1 to `max_batch`
    of the version's own requests (`variant_samples.serving_samples`), so its batch dimension is dynamic, and
    cached by content hash; the workers build it from the same batches, so they load it from the cache. Returns
    the version in the harness's shape with the variant's runner; a variant that does not build is a UserError."""
    from diagnose.core.requestlog import load_requests
    from profilers.runners import load_version
    from profilers.variant_samples import calibration_inputs, serving_samples
    from profilers.variants import VARIANTS, build_variants

    if name not in VARIANTS:
        raise UserError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}", key="--variant")
    if manifest.requests_path is None or not manifest.requests_path.is_file():
        raise UserError("a variant is built from the version's request log, and it has none", manifest.path,
                        "inputs.requests")
    base = version or load_version(manifest)
    requests = load_requests(manifest.requests_path)
    samples = serving_samples(base, requests, max_batch)
    calibration = calibration_inputs(base, requests) if name == "openvino-int8" else None
    built = build_variants(base, samples, [name], cache_dir=cache_dir, calibration_inputs=calibration)[0]
    if built.status != "ok":
        raise UserError(f"variant {name} of {manifest.name} {manifest.version} is {built.status}: {built.reason}",
                        key="--variant")
    return built.as_loaded(base)


def check_requirements() -> None:
    """TorchServe's frontend is a JVM: Java must be there, and the two wheels."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise UserError("TorchServe needs Java 11 or newer, and no `java` was found"
                        + (f" in $JAVA_HOME ({java_home})" if java_home else " on PATH")
                        + ": install one (Debian: apt-get install openjdk-17-jre-headless)")
    for module, package in (("ts", "torchserve"), ("model_archiver", "torch-model-archiver")):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"serving needs {package}: pip install 'torchserve>=0.12' 'torch-model-archiver>=0.12'")


def free_ports(count: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """Ports the OS has free now (held together, so they differ), none of them in `avoid`: the OS hands out
    ephemeral ports in sequence, so the one after a user's `--port` is a likely pick."""
    sockets: list[socket.socket] = []
    try:
        while sum(s.getsockname()[1] not in avoid for s in sockets) < count:  # held, so each port comes once
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets if s.getsockname()[1] not in avoid][:count]
    finally:
        for sock in sockets:
            sock.close()


def check_ports_free(ports: Ports) -> None:
    """A taken port is one line now, not a JVM stack trace in a log after a long wait."""
    names = {ports.inference: "inference", ports.management: "management", ports.metrics: "metrics"}
    if len(set(ports.all())) != len(ports.all()):
        raise UserError(f"the inference, management and metrics ports must differ, got {ports.all()[:3]}", key="--port")
    for number in ports.all():
        if not 0 < number < 65536:
            raise UserError(f"port {number} is out of range: --port takes PORT, PORT+1, PORT+2, all below 65536",
                            key="--port")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds: a TIME_WAIT port is free
            try:
                sock.bind(("127.0.0.1", number))
            except OSError as exc:
                what = names.get(number, "gRPC")
                raise UserError(f"the {what} port {number} on 127.0.0.1 is not free ({exc.strerror}); choose another "
                                "with --port (it takes PORT, PORT+1, PORT+2)", key="--port") from None


def check_socket_path(workdir: Path) -> None:
    """The workers' Unix sockets live in `tmp/` of the work folder, and a socket path holds at most 107 bytes: a
    longer one would fail in the JVM's log, not here."""
    longest = workdir / "tmp" / ".ts.sock.65535"
    if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
        raise UserError(f"the work folder's path is too long for TorchServe's worker sockets ({longest} is over "
                        f"{SOCKET_PATH_MAX} bytes): use a shorter one, or a shorter $TMPDIR")


def build_archive(manifest: Manifest, workdir: Path, settings: dict, archive_name: str | None = None) -> Path:
    """`<store>/<model>.mar`: the handler and its settings (the manifest's path, the variant to serve), built by
    torch-model-archiver.

    The archiver copies through `$TMPDIR/<model name>`: it runs as a child with its own TMPDIR, so two servers
    of the same model started at once do not share that folder. The version's files stay where they are (the
    handler reads them through the manifest), so an archive of a large model is built in a moment."""
    settings_file = workdir / SETTINGS_FILE
    settings_file.write_text(json.dumps(settings))
    store = workdir / "model-store"
    name = archive_name or manifest.name
    command = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name,
               "--version", manifest.version, "--handler", str(HANDLER), "--extra-files", str(settings_file),
               "--export-path", str(store), "--force"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(workdir / "tmp")})
    archive = store / f"{name}.mar"
    if result.returncode != 0 or not archive.is_file():
        said = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise UserError(f"torch-model-archiver failed: {said[-1].strip() if said else f'exit {result.returncode}'}",
                        manifest.path)
    return archive


def config_text(workdir: Path, ports: Ports) -> str:
    """config.properties: loopback only, Prometheus metrics, no token (a local demo), model API on (to register
    the version, and later to swap versions under load), and no system-metrics collector (a Python process every
    minute that would disturb a latency measurement on a small machine)."""
    settings = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_address": "127.0.0.1", "grpc_inference_port": ports.grpc_inference,
        "grpc_management_address": "127.0.0.1", "grpc_management_port": ports.grpc_management,
        "metrics_mode": "prometheus",
        "enable_envvars_config": "true",
        "disable_token_authorization": "true",
        "enable_model_api": "true",
        "disable_system_metrics": "true",
        "model_store": workdir / "model-store",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def start_torchserve(workdir: Path, ports: Ports) -> subprocess.Popen:
    """TorchServe's launcher in the foreground, in its own session, its output and logs in the work folder.

    TMPDIR keeps its pid file (which otherwise refuses a second server on the machine) in the work folder, TEMP
    its workers' sockets (`.ts.sock.<port>`), LOG_LOCATION its log files; PYTHONPATH lets the workers import
    this project for the handler."""
    (workdir / "config.properties").write_text(config_text(workdir, ports))
    (workdir / "log4j2.xml").write_text(LOG4J2.format(logs=workdir / "logs"))
    tmp = str(workdir / "tmp")
    env = {**os.environ, "TMPDIR": tmp, "TEMP": tmp, "LOG_LOCATION": str(workdir / "logs"),
           "METRICS_LOCATION": str(workdir / "logs"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "ts.model_server", "--start", "--foreground", "--ncs",
               "--ts-config", str(workdir / "config.properties"), "--model-store", str(workdir / "model-store"),
               "--log-config", str(workdir / "log4j2.xml")]
    with open(workdir / "logs" / "torchserve.out", "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=workdir, start_new_session=True)


def wait_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until /ping answers; a server that exits first is one line from its logs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise UserError(f"TorchServe stopped at start (exit {server.process.returncode}): {last_error(server)}")
        try:
            with urllib.request.urlopen(f"{server.url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise UserError(f"TorchServe did not answer within {timeout_s:.0f} s; its logs: {server.log_dir}")


def register(server: Server, archive: str | None = None, version: str | None = None) -> None:
    """Register the archive (the model store's `<model>.mar` unless named) with dynamic batching and its workers,
    and wait until the workers have loaded it."""
    query = urllib.parse.urlencode({
        "url": archive or f"{server.model_name}.mar", "model_name": server.model_name, "batch_size": server.batch_size,
        "max_batch_delay": server.max_batch_delay_ms, "initial_workers": server.workers, "synchronous": "true",
    })
    said = _management(server, f"models?{query}", "POST")
    if said is not None:
        raise UserError(f"TorchServe could not load {server.model_name} {version or server.version}: "
                        f"{last_error(server) or said}")


def _management(server: Server, path: str, method: str) -> str | None:
    """One call of TorchServe's management API, waiting as long as a model load may take: None when it succeeded,
    else what the server (or the connection) said."""
    request = urllib.request.Request(f"{server.management_url}/{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=REGISTER_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return _server_message(exc)
    except OSError as exc:
        return str(exc)


def _server_message(exc: urllib.error.HTTPError) -> str:
    """TorchServe's error body is {"code", "type", "message"}."""
    try:
        return json.loads(exc.read()).get("message") or str(exc)
    except (ValueError, AttributeError, OSError):
        return str(exc)


def last_error(server: Server) -> str:
    """The last line that says what failed: a worker's exception (model_log.log: a manifest's UserError, a missing
    module), else the frontend's last error, else the launcher's last line; with the logs' folder."""
    for name, marker in (("model_log.log", "Error"), ("ts_log.log", "[ERROR"), ("torchserve.out", "")):
        path = server.log_dir / name
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        found = [line for line in lines if marker in line and line.strip()]
        if found:
            return f"{_message_part(found[-1])} (logs: {server.log_dir})"
    return f"no error logged (logs: {server.log_dir})"


def _message_part(line: str) -> str:
    """A log4j line "date [LEVEL] thread logger - message" -> the message; the handler's UserError as its own text."""
    message = line.split(" - ", 1)[1] if " - " in line else line
    return message.strip().removeprefix("diagnose.core.errors.UserError: ")
