"""Where model versions come from: a folder `<registry>/<model>/<version>/manifest.yaml`.

Resolution order: `--registry DIR`, `$DIAGNOSE_REGISTRY`, `./models` when present, else the embedded
registry that ships in `fixtures/` (its artifacts are built at first use into the cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from diagnose.core.errors import UserError
from diagnose.core.manifest import Manifest, load_manifest, read_yaml

INDEX = "registry.yaml"  # optional: {default_model: NAME}


def _read_index(index: Path) -> dict:
    """registry.yaml as a mapping (an empty file is one); anything else is the user's to fix, named by file."""
    data = read_yaml(index, "registry index")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"must be a YAML mapping such as 'default_model: NAME', got {type(data).__name__}", index)
    return data


@dataclass(frozen=True)
class Registry:
    root: Path
    embedded: bool = False

    @property
    def label(self) -> str:
        return f"embedded registry ({self.root})" if self.embedded else str(self.root)

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, model: str) -> list[str]:
        folder = self.root / model
        return sorted(p.name for p in folder.iterdir() if (p / "manifest.yaml").is_file())

    def default_model(self) -> str:
        """The only model, or the one `registry.yaml` names; otherwise the user must say which."""
        models = self.models()
        index = self.root / INDEX
        if index.is_file():
            name = _read_index(index).get("default_model")
            if name is not None:
                if not isinstance(name, str):
                    raise UserError(f"must be a model name (a string), got {name!r}", index, "default_model")
                if name not in models:
                    raise UserError(f"names model {name!r}, which is not in the registry", index, "default_model")
                return name
        if len(models) == 1:
            return models[0]
        if not models:
            raise UserError("the registry holds no models", self.root)
        raise UserError(f"the registry holds several models ({', '.join(models)}); choose one with --model", self.root)

    def manifest(self, model: str, version: str) -> Manifest:
        models = self.models()
        if model not in models:
            raise UserError(f"unknown model {model!r}; the registry holds: {', '.join(models) or 'none'}", self.root)
        versions = self.versions(model)
        if version not in versions:
            raise UserError(
                f"unknown version {version!r} of model {model!r}; known: {', '.join(versions) or 'none'}", self.root / model
            )
        version_dir = self.root / model / version
        if self.embedded:
            from fixtures.embedded import ensure_built

            ensure_built(version_dir, model, version)
        return load_manifest(version_dir / "manifest.yaml")


def resolve_registry(option: str | None, cwd: Path | None = None) -> Registry:
    cwd = cwd or Path.cwd()
    for source, value in (("--registry", option), ("$DIAGNOSE_REGISTRY", os.environ.get("DIAGNOSE_REGISTRY"))):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise UserError(f"{source}: registry folder not found: {root}")
            return Registry(root.resolve())
    local = cwd / "models"
    if local.is_dir():
        return Registry(local.resolve())
    from fixtures.embedded import embedded_registry_root

    return Registry(embedded_registry_root(), embedded=True)


def version_with_requests(registry: str | None, model: str | None, version: str, requests: Path | None):
    """One version's manifest and request log (the manifest's, or `--requests`): what optimize and profile run on."""
    from diagnose.core.feast_logs import rows_by_side
    from diagnose.core.requestlog import load_requests

    found = resolve_registry(registry)
    manifest = found.manifest(model or found.default_model(), version)
    return manifest, load_requests(manifest.requests_or(requests, "--requests"), rows_by_side({"new": manifest})["new"])
