"""The drift stage: what changed in the requests, saved as evidence; and `diagnose drift` on its own.

In a compare it runs before the benchmark on the two request logs the cells replay, and saves the `drift`
evidence (schema diff, per-feature drift, the model's expected schema checked) and the request sizes (each
request's size features, keyed by side and row; `RunFolder.REQUEST_SIZES`), which analysis joins
to the per-request latencies to say how much of the change the shift explains (`diagnose.shift_latency`).
A failure here is recorded in drift.json, never fatal: drift evidence sharpens the diagnosis but the
benchmark does not need it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from diagnose.core.errors import UserError, first_line
from diagnose.core.runfolder import RunFolder, make_dir


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


def feast_windows(old: pd.DataFrame, new: pd.DataFrame) -> dict:
    """What each side read of a Feast log folder (its time window, rows in it, rows kept, values not PRESENT), for
    the drift evidence: a NOT_FOUND spike dropped from the replay is a change in the requests too."""
    from diagnose.core.requestlog import FEAST

    return {side: frame.attrs[FEAST] for side, frame in (("old", old), ("new", new)) if FEAST in frame.attrs}


def record_drift(folder: RunFolder, old: pd.DataFrame, new: pd.DataFrame, expected: dict | None = None) -> dict:
    """The compare's stage: the drift evidence and the request sizes in the run folder; a failure is recorded there."""
    from collectors.drift import drift_report

    try:
        report = drift_report(old, new, expected=expected or None)
        report.update({"feast": windows} if (windows := feast_windows(old, new)) else {})
        save_drift(folder, old, new, report)
    except Exception as exc:  # a failing source is recorded, never a crash
        report = folder.write_evidence("drift", {"status": "error", "reason": f"{type(exc).__name__}: {first_line(exc)}"})
    return report


def save_drift(folder: RunFolder, old: pd.DataFrame, new: pd.DataFrame, report: dict) -> None:
    """Write a drift report and each request's size features (keyed by side and row) into `folder`."""
    from collectors.drift import size_features

    sizes = pd.concat([
        size_features(frame).reset_index(drop=True).assign(side=side, request_index=range(len(frame)))
        for side, frame in (("old", old), ("new", new))
    ], ignore_index=True)
    folder.write_request_sizes(sizes)
    folder.write_evidence("drift", report)


def drift_command(old_requests: Path | None, new_requests: Path | None, old: str | None, new: str | None,
                  model: str | None, registry: str | None, method: str, alpha: float, threshold: float | None,
                  out: Path | None, as_json: bool) -> str:
    """`diagnose drift`: request logs given directly, or taken from two versions' manifests."""
    from collectors.drift import drift_report
    from diagnose.core.feast_logs import rows_by_side
    from diagnose.core.requestlog import read_requests
    from reports.sections import render_drift

    expected, rows = None, {}
    if old or new:
        if not (old and new):
            raise UserError("--old and --new go together (or pass --old-requests and --new-requests)")
        from diagnose.registry import resolve_registry

        reg = resolve_registry(registry)
        name = model or reg.default_model()
        manifests = {"old": reg.manifest(name, old), "new": reg.manifest(name, new)}
        paths = {"old": manifests["old"].requests_or(old_requests, "--old-requests"),
                 "new": manifests["new"].requests_or(new_requests, "--new-requests")}
        rows = rows_by_side(manifests)  # a Feast log folder: each side's rows around the new version's deploy
    else:
        if old_requests is None or new_requests is None:
            raise UserError("pass --old-requests A --new-requests B, or --old V1 --new V2 to use the manifests' requests")
        paths = {"old": Path(old_requests), "new": Path(new_requests)}
    frames = {side: read_requests(path, rows.get(side)) for side, path in paths.items()}
    if old or new:
        expected = expected_schema(manifests["new"], None, list(frames["new"].columns)) or None
    report = drift_report(frames["old"], frames["new"], method=method, alpha=alpha, threshold=threshold, expected=expected)
    report["paths"] = {side: str(path) for side, path in paths.items()}
    report.update({"feast": windows} if (windows := feast_windows(frames["old"], frames["new"])) else {})
    if out is not None:
        folder = RunFolder(make_dir(out))
        save_drift(folder, frames["old"], frames["new"], report)
        folder.write(RunFolder.DRIFT_MD, render_drift(report))
    if as_json:
        return json.dumps(report, indent=2) + "\n"
    return render_drift(report) + (f"\nsaved in {out}\n" if out is not None else "")
