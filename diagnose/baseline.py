"""A saved run as the old side (`diagnose ci --baseline RUN_DIR`): CI need not rerun the old version every build.

The baseline's samples of one version (its `new` side, the version that was accepted, or its `old` side when
`--old` names that) stand in for the old side's cell; only the new version is loaded and timed. As pyperf refuses
to compare results from different machines, a baseline measured on another CPU, core count, OS, Python or other
library versions is refused with the differences named, unless --allow-env-mismatch. The two sides were not
interleaved, so the report warns that a machine that changed between the runs shows up as a change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from diagnose.attribution import NN, NO, ON, OO
from diagnose.core.errors import UserError
from diagnose.core.runfolder import RunFolder


@dataclass(frozen=True)
class Baseline:
    folder: RunFolder
    side: str  # which side of the saved run stands in: "new" (default) or "old"
    version: str
    samples: pd.DataFrame  # that side's deployed cell, relabelled as the old side's
    versions: dict  # its evidence/versions.json entry
    requests: dict  # its evidence/requests.json entry
    environment: dict  # its evidence/environment.json entry
    manifest_text: str
    started_at: str | None

    def describe(self) -> dict:
        """run.json's `baseline` (and report.json's)."""
        return {"dir": str(self.folder.path), "version": self.version, "side": self.side, "started_at": self.started_at}

    def request_log(self) -> Path | None:
        """The baseline's request log, when it is still where it was and unchanged (for drift and attribution)."""
        import hashlib

        path = Path(self.versions.get("requests") or "")
        if not path.is_file():
            return None
        return path if hashlib.sha256(path.read_bytes()).hexdigest() == self.versions.get("requests_sha256") else None

    def unavailable(self) -> dict[str, str]:
        """The crossed cells: nothing can time the baseline's model on the new requests."""
        why = f"compared against the baseline run {self.folder.path}: its model was not loaded here"
        return {NO: why, ON: why}


def load_baseline(path: Path, model: str, old: str | None) -> Baseline:
    """The saved run at `path` as a baseline for `model`; `old` picks its side when it names the run's old version."""
    from diagnose.analysis import measured

    folder = RunFolder(path)
    folder.check_complete()
    reason = folder.incomplete()
    if reason is not None:
        raise UserError(f"the baseline run was interrupted ({reason}); pick a complete run", folder.path)
    run = folder.run()
    if run["model"] != model:
        raise UserError(f"the baseline run measured model {run['model']!r}, not {model!r}", folder.file(RunFolder.RUN))
    if old is not None and old not in (run["old"], run["new"]):
        raise UserError(f"--old {old}: the baseline run measured {run['old']} and {run['new']}", folder.path)
    side = "old" if old is not None and old == run["old"] and old != run["new"] else "new"
    if not measured(folder):
        raise UserError("the baseline run has no benchmark samples (it ran with --no-benchmark)", folder.path)
    samples = folder.samples()
    mine = samples[samples["cell"] == (NN if side == "new" else OO)].copy()
    mine["cell"], mine["model"], mine["requests"] = OO, "old", "old"
    return Baseline(folder=folder, side=side, version=run[side], samples=mine.reset_index(drop=True),
                    versions=folder.evidence("versions", required=True)[side],
                    requests=folder.evidence("requests", required=True)[side],
                    environment=folder.evidence("environment", required=True)[side],
                    manifest_text=folder.manifest_path(side).read_text(), started_at=run.get("started_at"))


def check_environment(baseline: Baseline, here: dict, allow: bool) -> None:
    """Refuse, before any measurement, a baseline measured in another environment than this run's."""
    from collectors.environment import mismatches

    differences = mismatches(baseline.environment, here)
    if differences and not allow:
        raise UserError("the baseline was measured in another environment (" + "; ".join(differences) + "); rerun "
                        "the baseline here, or pass --allow-env-mismatch to compare anyway", baseline.folder.path)


def settled_against(baseline: Baseline, settled):
    """The harness's early-stop check with the baseline's samples as the old side."""
    def check(frame: pd.DataFrame) -> bool:
        return settled(pd.concat([baseline.samples, frame], ignore_index=True))

    return check
