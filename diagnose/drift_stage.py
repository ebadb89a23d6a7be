"""The drift stage: what changed in the requests, saved as evidence; and `diagnose drift` on its own.

In a compare it runs before the benchmark on the two request logs the cells replay, and saves
`evidence/drift.json` (schema diff, per-feature drift, the model's expected schema checked) and
`evidence/request_sizes.parquet` (each request's size features, keyed by side and row), which analysis joins
to the per-request latencies to say how much of the change the shift explains (`diagnose.shift_latency`).
A failure here is recorded in drift.json, never fatal: drift evidence sharpens the diagnosis but the
benchmark does not need it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from diagnose.core import runfolder
from diagnose.core.errors import UserError

DRIFT_FILE = "evidence/drift.json"
SIZES_FILE = "evidence/request_sizes.parquet"


def expected_schema(manifest, input_spec: list[dict] | None, columns: list[str]) -> dict:
    """What the model expects of each request column: the manifest's `inputs.schema`, over what the artifact declares.

    The artifact's inputs map to request columns only when there is no preprocess (columns are collated in
    order); then each input's rank and fixed dimensions, less the batch dimension, are what a cell must hold.
    """
    expected: dict = {}
    if input_spec and not manifest.preprocess:
        for column, spec in zip(columns, input_spec, strict=False):
            cell_shape = spec["shape"][1:]
            entry = {"rank": len(cell_shape), "kind": "list" if cell_shape else "number"}
            if cell_shape and any(d is not None for d in cell_shape):
                entry["shape"] = cell_shape
            expected[str(column)] = entry
    for column, spec in (manifest.input_schema or {}).items():
        expected[column] = {**expected.get(column, {}), **spec}
    return expected


def record_drift(run_dir: Path, old: pd.DataFrame, new: pd.DataFrame, expected: dict | None = None) -> dict:
    """The compare's stage: drift.json and request_sizes.parquet in the run folder; a failure is recorded there."""
    from collectors.drift import drift_report

    try:
        report = drift_report(old, new, expected=expected or None)
        save_drift(run_dir, old, new, report)
    except Exception as exc:  # a failing source is recorded, never a crash
        report = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        runfolder.write_json(run_dir / DRIFT_FILE, report)
    return report


def save_drift(run_dir: Path, old: pd.DataFrame, new: pd.DataFrame, report: dict) -> None:
    """Write a drift report and each request's size features (keyed by side and row) into `run_dir`."""
    from collectors.drift import size_features

    sizes = pd.concat([
        size_features(frame).reset_index(drop=True).assign(side=side, request_index=range(len(frame)))
        for side, frame in (("old", old), ("new", new))
    ], ignore_index=True)
    runfolder.write_parquet(run_dir / SIZES_FILE, sizes)
    runfolder.write_json(run_dir / DRIFT_FILE, report)


def drift_command(old_requests: Path | None, new_requests: Path | None, old: str | None, new: str | None,
                  model: str | None, registry: str | None, method: str, alpha: float, threshold: float | None,
                  out: Path | None, as_json: bool) -> str:
    """`diagnose drift`: request logs given directly, or taken from two versions' manifests."""
    from collectors.drift import drift_report, read_requests
    from reports.sections import render_drift

    expected = None
    if old or new:
        if not (old and new):
            raise UserError("--old and --new go together (or pass --old-requests and --new-requests)")
        from diagnose.registry import resolve_registry

        reg = resolve_registry(registry)
        name = model or reg.default_model()
        manifests = {"old": reg.manifest(name, old), "new": reg.manifest(name, new)}
        paths = {side: override or m.requests_path for side, m, override in
                 (("old", manifests["old"], old_requests), ("new", manifests["new"], new_requests))}
        for side, path in paths.items():
            if path is None:
                raise UserError(f"no requests: set inputs.requests or pass --{side}-requests", manifests[side].path,
                                "inputs.requests")
    else:
        if old_requests is None or new_requests is None:
            raise UserError("pass --old-requests A --new-requests B, or --old V1 --new V2 to use the manifests' requests")
        paths = {"old": Path(old_requests), "new": Path(new_requests)}
    frames = {side: read_requests(path) for side, path in paths.items()}
    if old or new:
        expected = expected_schema(manifests["new"], None, list(frames["new"].columns)) or None
    report = drift_report(frames["old"], frames["new"], method=method, alpha=alpha, threshold=threshold, expected=expected)
    report["paths"] = {side: str(path) for side, path in paths.items()}
    if out is not None:
        save_drift(Path(out), frames["old"], frames["new"], report)
        runfolder.write_text(Path(out) / "drift.md", render_drift(report))
    if as_json:
        return json.dumps(report, indent=2) + "\n"
    return render_drift(report) + (f"\nsaved in {out}\n" if out is not None else "")
