"""The manifest of one model version: what to load, what requests to replay, how it is served.

The keys are a contract (docs/manifest.md). Parsing validates everything up front so that a bad manifest
fails with one line naming the file and the key, before any model is loaded.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diagnose.core.errors import UserError, first_line
from diagnose.core.feast_logs import FeastOptions, parse_options
from diagnose.core.times import parse_time

FORMATS = ("torchscript", "exported", "onnx", "python")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Upper bounds: a value past these is a typo, and would otherwise fail much later (thread pools, a batch larger than
# any request log) and be blamed on the request log or the model instead of the manifest key.
MAX_VALUES = {"threads": 1024, "batch_size": 65536}
FRACTIONS = ("max_accuracy_drop", "min_cosine")  # slo keys that are shares: at most 1
# read by the signal collectors as text
DEPLOYMENT_STRINGS = ("namespace", "selector", "container", "pod_regex", "latency_metric")


@dataclass(frozen=True)
class Serving:
    device: str = "cpu"
    batch_size: int = 1
    threads: int = 2
    precision: str = "fp32"
    # cast float inputs to `precision` too (as a serving handler that casts requests would); without it the model
    # is fed the dtype the request log holds, as production feeds it what the client sent
    cast_inputs: bool = False
    # ONNX Runtime session config entries the version is served with ({"session.intra_op.allow_spinning": "0"});
    # empty: ORT's defaults, as a server that sets nothing runs it
    ort_session_config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    format: str
    artifact: str
    requests: str | None
    preprocess: str | None
    serving: Serving
    path: Path
    deployment: dict[str, Any] | None = None
    slo: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)  # inputs.schema: what the model expects of each column
    feast: FeastOptions | None = None  # inputs.feast: the columns and rows a Feast log folder gives this version

    @property
    def version_dir(self) -> Path:
        return self.path.parent

    @property
    def artifact_path(self) -> Path:
        """The file that holds the weights; for `python`, the module file of "module:factory"."""
        if self.format == "python":
            return self.version_dir / (self.artifact.split(":", 1)[0] + ".py")
        return self.version_dir / self.artifact

    @property
    def requests_path(self) -> Path | None:
        return self.version_dir / self.requests if self.requests else None

    @property
    def preprocess_file(self) -> Path | None:
        """The module file of `inputs.preprocess` ("module:function", dotted module under the version folder)."""
        if not self.preprocess:
            return None
        return self.version_dir / (self.preprocess.split(":", 1)[0].replace(".", "/") + ".py")

    def preprocess_sha256(self) -> str | None:
        """Content hash of the preprocess module: tells edited preprocessing from the same code."""
        file = self.preprocess_file
        return hashlib.sha256(file.read_bytes()).hexdigest() if file is not None and file.is_file() else None

    def requests_or(self, override: str | Path | None, flag: str) -> Path:
        """The request log to replay: `override` (a command-line flag) when given, else the manifest's."""
        if override is not None:
            return Path(override)
        if self.requests_path is None:
            raise UserError(f"no requests: set inputs.requests or pass {flag}", self.path, "inputs.requests")
        return self.requests_path

    def artifact_sha256(self) -> str:
        """Content hash of the artifact: tells a changed model from a renamed one."""
        digest = hashlib.sha256()
        with open(self.artifact_path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The manifest as resolved: the contract keys plus where it was read from."""
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "artifact": self.artifact,
            "inputs": {"requests": self.requests, "preprocess": self.preprocess, "schema": self.input_schema or None,
                       "feast": self.feast.to_dict() if self.feast else None},
            "serving": asdict(self.serving),
            "deployment": self.deployment,
            "slo": dict(self.slo),
            "description": self.description,
            "path": str(self.path),
        }


def _inside(version_dir: Path, rel: str, path: Path, key: str) -> str:
    """Refuse paths that leave the version folder: a registry must not reach into the rest of the disk."""
    if not isinstance(rel, str) or not rel.strip():
        raise UserError("must be a non-empty path inside the version folder", path, key)
    if "\0" in rel:
        raise UserError("must not contain a NUL byte", path, key)
    candidate = Path(rel)
    if candidate.is_absolute() or not (version_dir / candidate).resolve().is_relative_to(version_dir.resolve()):
        raise UserError(f"'{rel}' leaves the version folder {version_dir}", path, key)
    return rel


def _module_ref(value: Any, path: Path, key: str) -> tuple[str, str]:
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise UserError(f"must be 'module:function', got {value!r}", path, key)
    module, attr = value.split(":")
    if not module.replace("_", "a").replace(".", "a").isalnum() or not attr.isidentifier():
        raise UserError(f"'{value}' is not a valid 'module:function'", path, key)
    return module, attr


def _positive_int(section: dict, name: str, default: int, path: Path) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALUES[name]:
        raise UserError(f"must be an integer from 1 to {MAX_VALUES[name]}, got {value!r}", path, f"serving.{name}")
    return value


def _bool(section: dict, name: str, path: Path) -> bool:
    value = section.get(name, False)
    if not isinstance(value, bool):
        raise UserError(f"must be true or false, got {value!r}", path, f"serving.{name}")
    return value


def _session_config(value: Any, path: Path) -> dict[str, str]:
    """ONNX Runtime's session config entries are string pairs ("session.intra_op.allow_spinning": "0"); a number or
    a bool is taken as its string ("0", "1"), anything else is refused here rather than by ORT mid-benchmark."""
    key = "serving.ort_session_config"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"must be a mapping of ONNX Runtime config keys to values, got {type(value).__name__}", path, key)
    config = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not name.startswith("session."):
            raise UserError(f"{name!r} is not an ONNX Runtime session config key (they start with 'session.')", path, key)
        if isinstance(entry, bool):
            entry = int(entry)
        if not isinstance(entry, (str, int)):
            raise UserError(f"must be a string or an integer, got {entry!r}", path, f"{key}.{name}")
        config[name] = str(entry)
    return config


def _slo(raw: dict, path: Path) -> dict:
    """Finite positive numbers, shares at most 1: report.json is strict JSON, and NaN or inf has no meaning here."""
    slo = _mapping(raw, "slo", path, required=False)
    for key, value in slo.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"must be a finite positive number, got {value!r}", path, f"slo.{key}")
        if key in FRACTIONS and value > 1:
            raise UserError(f"must be a share in (0, 1], got {value!r}", path, f"slo.{key}")
    return slo


def _deployment(raw: dict, path: Path) -> dict | None:
    """Checked here, where it enters: a bad time or selector would otherwise only make a signal source fail later."""
    if raw.get("deployment") is None:
        return None
    deployment = _mapping(raw, "deployment", path, required=False)
    for name in DEPLOYMENT_STRINGS:
        value = deployment.get(name)
        if value is not None and not isinstance(value, str):
            raise UserError(f"must be a string, got {type(value).__name__}", path, f"deployment.{name}")
    _pod_regex(deployment.get("pod_regex"), path)
    deployed_at = deployment.get("deployed_at")
    if deployed_at is not None and parse_time(deployed_at) is None:
        raise UserError(f"must be an ISO 8601 time such as 2026-11-20T10:00:00Z, got {deployed_at!r}", path,
                        "deployment.deployed_at")
    return deployment


def _pod_regex(regex: str | None, path: Path) -> None:
    """The pods' names as Prometheus matches them (`pod=~"..."`, fully anchored; RE2, so no lookaround and no
    backreference): refused here rather than by Prometheus in the middle of a compare."""
    if regex is None:
        return
    key = "deployment.pod_regex"
    try:
        re.compile(regex)
    except re.error as exc:
        raise UserError(f"not a regular expression ({exc}): {regex!r}", path, key) from None
    if re.search(r"\(\?<?[=!]|\\[1-9]", regex):
        raise UserError(f"Prometheus regexes (RE2) have no lookaround or backreference: {regex!r}", path, key)


def _choice(section: dict, name: str, default: str, choices: tuple[str, ...], path: Path, key: str) -> str:
    value = section.get(name, default)
    if value not in choices:
        raise UserError(f"must be one of {', '.join(choices)}; got {value!r}", path, key)
    return value


def _mapping(raw: dict, name: str, path: Path, required: bool) -> dict:
    value = raw.get(name)
    if value is None:
        if required:
            raise UserError("is missing", path, name)
        return {}
    if not isinstance(value, dict):
        raise UserError(f"must be a mapping, got {type(value).__name__}", path, name)
    return value


SCHEMA_KEYS = {"kind": str, "dtype": str, "rank": int, "shape": list, "nullable": bool}


def _input_schema(value: Any, path: Path) -> dict:
    """`inputs.schema`: column -> {kind, dtype, rank, shape, nullable}, each key optional (docs/drift.md)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"must be a mapping of column -> expectations, got {type(value).__name__}", path, "inputs.schema")
    for column, spec in value.items():
        key = f"inputs.schema.{column}"
        if not isinstance(spec, dict):
            raise UserError(f"must be a mapping, got {type(spec).__name__}", path, key)
        for name, expected in spec.items():
            if name not in SCHEMA_KEYS:
                raise UserError(f"unknown key {name!r}; use {', '.join(SCHEMA_KEYS)}", path, key)
            if not isinstance(expected, SCHEMA_KEYS[name]) or (name == "rank" and isinstance(expected, bool)):
                raise UserError(f"must be {SCHEMA_KEYS[name].__name__}, got {expected!r}", path, f"{key}.{name}")
            if name == "shape" and not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
                                           for d in expected):
                raise UserError(f"must list positive integers or null (any size), got {expected!r}", path, f"{key}.{name}")
    return {str(k): v for k, v in value.items()}


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file (a manifest, registry.yaml) as data; one line naming the file when it is missing, unreadable,
    not UTF-8 or not YAML."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found", path) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", path) from None
    except OSError as exc:
        raise UserError(f"cannot read the {what}: {first_line(exc)}", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path) from None


def load_manifest(path: Path) -> Manifest:
    """Read and validate `path`; every problem is a UserError naming the key."""
    path = Path(path)
    raw = read_yaml(path, "manifest")
    if not isinstance(raw, dict):
        raise UserError("must be a YAML mapping of manifest keys", path)
    version_dir = path.parent

    for key in ("name", "version", "format", "artifact"):
        if key not in raw:
            raise UserError("is missing", path, key)
        if not isinstance(raw[key], str) or not raw[key]:
            raise UserError(f"must be a non-empty string, got {raw[key]!r}", path, key)
    fmt = raw["format"]
    if fmt not in FORMATS:
        raise UserError(f"must be one of {', '.join(FORMATS)}; got {fmt!r}", path, "format")

    if fmt == "python":
        module, _ = _module_ref(raw["artifact"], path, "artifact")
        _inside(version_dir, module.replace(".", "/") + ".py", path, "artifact")
    else:
        _inside(version_dir, raw["artifact"], path, "artifact")

    inputs = _mapping(raw, "inputs", path, required=True)
    requests = inputs.get("requests")
    if requests is not None:
        _inside(version_dir, requests, path, "inputs.requests")
    preprocess = inputs.get("preprocess")
    if preprocess is not None:
        module, _ = _module_ref(preprocess, path, "inputs.preprocess")
        _inside(version_dir, module.replace(".", "/") + ".py", path, "inputs.preprocess")

    input_schema = _input_schema(inputs.get("schema"), path)
    feast = parse_options(inputs.get("feast"), path)
    if feast is not None and requests is not None and (version_dir / requests).is_file():
        raise UserError(f"reads a Feast log folder, but inputs.requests names the file {requests!r}", path, "inputs.feast")
    serving_raw = _mapping(raw, "serving", path, required=False)
    serving = Serving(
        device=_choice(serving_raw, "device", "cpu", DEVICES, path, "serving.device"),
        batch_size=_positive_int(serving_raw, "batch_size", 1, path),
        threads=_positive_int(serving_raw, "threads", 2, path),
        precision=_choice(serving_raw, "precision", "fp32", PRECISIONS, path, "serving.precision"),
        cast_inputs=_bool(serving_raw, "cast_inputs", path),
        ort_session_config=_session_config(serving_raw.get("ort_session_config"), path),
    )
    slo = _slo(raw, path)
    deployment = _deployment(raw, path)

    manifest = Manifest(
        name=raw["name"],
        version=raw["version"],
        format=fmt,
        artifact=raw["artifact"],
        requests=requests,
        preprocess=preprocess,
        serving=serving,
        path=path,
        deployment=deployment,
        slo=slo,
        description=str(raw.get("description") or ""),
        input_schema=input_schema,
        feast=feast,
    )
    if not manifest.artifact_path.is_file():
        raise UserError(f"artifact not found: {manifest.artifact_path}", path, "artifact")
    return manifest
