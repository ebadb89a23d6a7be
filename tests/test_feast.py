"""Feast feature logs as a version's requests: the feature columns in the service's order, the deploy's window.

The logs here are written as Feast writes them: the columns and types of `FeatureServiceLoggingSource.get_schema`
and `pyarrow.dataset.write_dataset` partitioned by `__log_date`, the call of Feast's file offline store
(`write_logged_features`). `test_a_log_written_by_real_feast_reads_the_same` runs the real `feast` package, which
pins pandas below 3, from a separate interpreter: `DIAGNOSE_FEAST_PYTHON=/path/to/venv/bin/python`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml
from conftest import run_cli, write_manifest

from diagnose.core.errors import UserError
from diagnose.core.feast_logs import FeastRows, digest, rows_by_side
from diagnose.core.manifest import load_manifest
from diagnose.core.requestlog import FEAST, load_requests, read_requests

HERE = Path(__file__).resolve().parent
DEPLOYED = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
VIEW = "driver_stats"
FEATURES = {"conv_rate": pa.float32(), "avg_daily_trips": pa.int64(), "embedding": pa.list_(pa.float32())}
COLUMNS = [f"{VIEW}__{name}" for name in FEATURES]
PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE = 1, 3, 4

# Takes the service's features in its order and in their logged types: a swap or a cast fails the call.
MODEL = '''
import torch


class Ranker(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, {width}), torch.nn.ReLU(), torch.nn.Linear({width}, 1))

    def forward(self, conv_rate, trips, embedding):
        assert conv_rate.dtype == torch.float32 and trips.dtype == torch.int64 and embedding.dtype == torch.float32
        return self.net(torch.cat([conv_rate[:, None], trips[:, None].float(), embedding], dim=1))


def build():
    return Ranker()
'''


def feast_schema(join_keys: dict, view: str, features: dict) -> pa.Schema:
    """`FeatureServiceLoggingSource.get_schema` for one feature view: keys, then each feature with its companions,
    then the log metadata."""
    fields = list(join_keys.items())
    for name, dtype in features.items():
        fields += [(f"{view}__{name}", dtype), (f"{view}__{name}__timestamp", pa.timestamp("s", tz="UTC")),
                   (f"{view}__{name}__status", pa.int32())]
    fields += [("__log_timestamp", pa.timestamp("us", tz="UTC")), ("__log_date", pa.date32()),
               ("__request_id", pa.string())]
    return pa.schema(fields)


def write_feast_log(folder: Path, start: datetime, trips: tuple[int, int], rows: int, seed: int,
                    statuses: dict | None = None) -> None:
    """One flush of Feast's logger: `rows` requests a second apart from `start`, trips drawn from `trips`; `statuses`
    maps a row to {feature: status} (NOT_FOUND logs a null value, as Feast does; OUTSIDE_MAX_AGE a stale one)."""
    rng = np.random.default_rng(seed)
    statuses = statuses or {}
    served = [start + timedelta(seconds=i) for i in range(rows)]
    values = {"conv_rate": rng.random(rows).astype(np.float32).tolist(),
              "avg_daily_trips": rng.integers(*trips, rows).tolist(),
              "embedding": [rng.normal(size=4).astype(np.float32).tolist() for _ in range(rows)]}
    data: dict = {"driver_id": rng.integers(1000, 2000, rows).tolist()}
    for name in FEATURES:
        status = [statuses.get(i, {}).get(name, PRESENT) for i in range(rows)]
        data[f"{VIEW}__{name}"] = [None if s == NOT_FOUND else v for v, s in zip(values[name], status, strict=True)]
        data[f"{VIEW}__{name}__timestamp"] = [start - timedelta(hours=1)] * rows
        data[f"{VIEW}__{name}__status"] = status
    data.update({"__log_timestamp": served, "__log_date": [t.date() for t in served],
                 "__request_id": [f"{seed}-{i}" for i in range(rows)]})
    schema = feast_schema({"driver_id": pa.int64()}, VIEW, FEATURES)
    ds.write_dataset(pa.Table.from_pydict(data, schema=schema), base_dir=folder, format="parquet",
                     basename_template=f"{uuid.uuid4().hex}-{{i}}.parquet", partitioning=["__log_date"],
                     existing_data_behavior="overwrite_or_ignore")


def service_log(folder: Path) -> Path:
    """A day of one feature service's log around DEPLOYED (flushes on both dates, out of time order): 100 requests
    before with 10 to 20 trips, 100 from the deploy on with 100 to 200, 10 of them NOT_FOUND for every feature and
    5 OUTSIDE_MAX_AGE for conv_rate."""
    lost = {i: dict.fromkeys(FEATURES, NOT_FOUND) for i in range(0, 100, 10)}
    stale = {i: {"conv_rate": OUTSIDE_MAX_AGE} for i in range(5, 100, 20)}
    write_feast_log(folder, DEPLOYED, (100, 200), 100, seed=2, statuses=lost | stale)
    write_feast_log(folder, DEPLOYED - timedelta(seconds=100), (10, 20), 100, seed=1)
    return folder


def feast_version(root: Path, version: str, width: int, feast: dict | None = None, deployed: datetime | None = None,
                  log: bool = True) -> Path:
    folder = root / "rank" / version
    inputs = {"requests": "logs", "preprocess": None, **({"feast": feast} if feast else {})}
    write_manifest(folder, format="python", artifact="model:build", inputs=inputs,
                   serving={"batch_size": 4, "threads": 1}, slo={},
                   **({"deployment": {"deployed_at": deployed.isoformat()}} if deployed else {}))
    (folder / "model.py").write_text(MODEL.format(width=width))
    if log:
        service_log(folder / "logs")
    return folder / "manifest.yaml"


def test_a_log_folder_is_the_services_features_in_order_as_logged(tmp_path):
    folder = service_log(tmp_path / "logs")
    assert sorted(p.parent.name for p in folder.rglob("*.parquet")) == ["2026-11-19", "2026-11-20"]
    frame = load_requests(folder)
    assert list(frame.columns) == COLUMNS  # keys, companions and log metadata are not model inputs
    assert [str(frame[c].dtype) for c in COLUMNS[:2]] == ["float32", "int64"]
    assert frame[COLUMNS[2]].iloc[0].dtype == np.float32
    assert len(frame) == 200 - 10 - 5  # a value not PRESENT never reached the model: its request is dropped
    trips = frame[COLUMNS[1]].to_numpy()
    assert (trips[:100] < 20).all() and (trips[100:] >= 100).all()  # ordered by log time across files and dates
    summary = frame.attrs[FEAST]
    assert summary["logged"] == 200 and summary["rows"] == 185 and summary["files"] == 2
    assert summary["not_present"][COLUMNS[0]] == {"OUTSIDE_MAX_AGE": 5, "NOT_FOUND": 10}
    assert summary["not_present"][COLUMNS[1]] == {"NOT_FOUND": 10}
    # drift reads the same rows in the same order (its per-row sizes join the replay's rows by position)
    drift = read_requests(folder)
    assert list(drift.columns) == COLUMNS and drift[COLUMNS[1]].tolist() == trips.tolist()


def test_chosen_features_and_a_fill_value_are_taken_as_a_server_would(tmp_path):
    folder = service_log(tmp_path / "logs")
    chosen = load_requests(folder, FeastRows(features=(COLUMNS[1], COLUMNS[0])))
    assert list(chosen.columns) == [COLUMNS[1], COLUMNS[0]] and len(chosen) == 185
    with pytest.raises(UserError, match=r"'driver_stats__conv_rate__status' is Feast's record of "
                                        r"'driver_stats__conv_rate', not a feature"):
        load_requests(folder, FeastRows(features=(f"{COLUMNS[0]}__status",)))
    filled = load_requests(folder, FeastRows(features=(COLUMNS[0], COLUMNS[1]), missing=0))
    assert len(filled) == 200 and filled[COLUMNS[1]].dtype == np.int64
    assert (filled[COLUMNS[0]] == 0).sum() == 15 and (filled[COLUMNS[1]] == 0).sum() == 10
    with pytest.raises(UserError, match=r"inputs.feast.missing: 0 cannot stand for a missing value of "
                                        r"'driver_stats__embedding'"):
        load_requests(folder, FeastRows(missing=0))
    lost = tmp_path / "lost"
    write_feast_log(lost, DEPLOYED, (1, 9), 4, seed=3, statuses={i: {"avg_daily_trips": NOT_FOUND} for i in range(4)})
    with pytest.raises(UserError, match=r"lost: every one of the 4 requests in the log has a feature that is not "
                                        r"PRESENT \(driver_stats__avg_daily_trips: NOT_FOUND 4\); set inputs.feast.missing"):
        load_requests(lost)


def test_features_named_status_or_timestamp_are_features(tmp_path):
    """A companion is told by its feature, not by its suffix: `orders__status` is a feature, `orders__status__status`
    its status."""
    import pyarrow.parquet as pq

    schema = feast_schema({"order_id": pa.int64()}, "orders", {"status": pa.int32(), "timestamp": pa.float64()})
    served = [DEPLOYED + timedelta(seconds=i) for i in range(3)]
    data = {"order_id": [1, 2, 3], "orders__status": [7, 8, 9], "orders__status__timestamp": served,
            "orders__status__status": [PRESENT, PRESENT, NOT_FOUND], "orders__timestamp": [0.5, 1.5, 2.5],
            "orders__timestamp__timestamp": served, "orders__timestamp__status": [PRESENT] * 3,
            "__log_timestamp": served, "__log_date": [t.date() for t in served], "__request_id": ["a", "b", "c"]}
    (tmp_path / "logs").mkdir()
    pq.write_table(pa.Table.from_pydict(data, schema=schema), tmp_path / "logs" / "part-0.parquet")
    frame = load_requests(tmp_path / "logs")
    assert list(frame.columns) == ["orders__status", "orders__timestamp"]
    assert frame["orders__status"].tolist() == [7, 8] and frame["orders__status"].dtype == np.int32
    assert frame.attrs[FEAST]["not_present"] == {"orders__status": {"NOT_FOUND": 1}}


def test_the_deploy_splits_the_log_and_a_window_or_bounds_narrow_each_side(tmp_path):
    old, new = load_manifest(feast_version(tmp_path, "v1", 8)), load_manifest(feast_version(tmp_path, "v2", 8,
                                                                                            deployed=DEPLOYED))
    rows = rows_by_side({"old": old, "new": new})
    assert (rows["old"].start, rows["old"].end, rows["new"].start, rows["new"].end) == (None, DEPLOYED, DEPLOYED, None)
    frames = {side: load_requests(Path(m.requests_path), rows[side]) for side, m in (("old", old), ("new", new))}
    assert len(frames["old"]) == 100 and (frames["old"][COLUMNS[1]] < 20).all()
    assert len(frames["new"]) == 85 and (frames["new"][COLUMNS[1]] >= 100).all()
    # a window reaches that far from the deploy on each side; start/end replace it
    windowed = load_manifest(feast_version(tmp_path, "v3", 8, feast={"window": "30s"}, log=False))
    rows = rows_by_side({"old": windowed, "new": new})
    assert (rows["old"].start, rows["old"].end) == (DEPLOYED - timedelta(seconds=30), DEPLOYED)
    assert len(load_requests(Path(old.requests_path), rows["old"])) == 30
    bounded = load_manifest(feast_version(tmp_path, "v4", 8, deployed=DEPLOYED, log=False, feast={
        "window": "1h", "end": (DEPLOYED + timedelta(seconds=50)).isoformat()}))
    rows = rows_by_side({"old": old, "new": bounded})
    assert (rows["new"].start, rows["new"].end) == (DEPLOYED, DEPLOYED + timedelta(seconds=50))
    assert len(load_requests(Path(old.requests_path), rows["new"])) == 50 - 5 - 3  # NOT_FOUND at 0, 10, .. 40; stale at 5, 25, 45
    with pytest.raises(UserError, match=r"inputs.feast.window: needs the new version's deployment.deployed_at"):
        rows_by_side({"old": old, "new": windowed})
    with pytest.raises(UserError, match=r"no request logged in \[2026-11-21T00:00:00Z, the end\); the log covers "
                                        r"2026-11-19T23:58:20Z, 2026-11-20T00:01:39Z"):
        load_requests(Path(old.requests_path), FeastRows(start=DEPLOYED + timedelta(days=1)))


@pytest.mark.parametrize("feast, key, message", [
    ({"featurs": [COLUMNS[0]]}, "inputs.feast", "unknown key 'featurs'"),
    ({"features": COLUMNS[0]}, "inputs.feast.features", "must be a list of column names"),
    ({"features": [COLUMNS[0], COLUMNS[0]]}, "inputs.feast.features", "names a column twice"),
    ({"features": ["__request_id"]}, "inputs.feast.features", "is Feast's log metadata, not a feature"),
    ({"window": "two hours"}, "inputs.feast.window", "must be a positive duration"),
    ({"window": -5}, "inputs.feast.window", "must be a positive duration"),
    ({"start": "yesterday"}, "inputs.feast.start", "must be an ISO 8601 time"),
    ({"start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "inputs.feast", "is not before end"),
    ({"missing": "zero"}, "inputs.feast.missing", "must be 'drop' or the number the server fills in"),
    ({"missing": True}, "inputs.feast.missing", "must be 'drop' or the number the server fills in"),
    ("logs", "inputs.feast", "must be a mapping"),
])
def test_a_bad_inputs_feast_key_is_named_when_the_manifest_is_read(tmp_path, feast, key, message):
    path = feast_version(tmp_path, "v1", 8, log=False)
    raw = yaml.safe_load(path.read_text())
    raw["inputs"]["feast"] = feast
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=f"manifest.yaml: {re.escape(key)}: .*{re.escape(message)}"):
        load_manifest(path)


def test_the_digest_tells_a_changed_log_apart(tmp_path):
    folder = service_log(tmp_path / "logs")
    before = digest(folder)
    assert digest(folder) == before and len(before) == 64
    write_feast_log(folder, DEPLOYED + timedelta(hours=1), (1, 2), 3, seed=9)
    assert digest(folder) != before


def test_a_compare_reads_both_versions_requests_from_feast_log_folders(tmp_path):
    root = tmp_path / "registry"
    feast_version(root, "v1", 8)
    feast_version(root, "v2", 64, deployed=DEPLOYED, feast={"features": COLUMNS})
    out = tmp_path / "run"
    result = run_cli("compare", "--registry", str(root), "--old", "v1", "--new", "v2", "--budget", "2",
                     "--no-profile", "--no-verify", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    requests = json.loads((out / "evidence" / "requests.json").read_text())
    for side, rows in (("old", 100), ("new", 85)):  # before the deploy; from it on, less the values not PRESENT
        assert requests[side]["rows"] == rows and list(requests[side]["columns"]) == COLUMNS
        assert requests[side]["path"] == str(root / "rank" / {"old": "v1", "new": "v2"}[side] / "logs")
    versions = json.loads((out / "evidence" / "versions.json").read_text())
    assert versions["new"]["requests_sha256"] == digest(root / "rank" / "v2" / "logs")
    samples = json.loads(result.stdout)["latency"]
    assert samples["old"]["n"] > 0 and samples["new"]["n"] > 0
    drift = json.loads((out / "evidence" / "drift.json").read_text())
    assert drift["feast"]["old"]["window"] == [None, "2026-11-20T00:00:00Z"]
    assert drift["feast"]["new"]["window"] == ["2026-11-20T00:00:00Z", None]
    assert drift["feast"]["new"]["not_present"][COLUMNS[0]] == {"OUTSIDE_MAX_AGE": 5, "NOT_FOUND": 10}
    assert COLUMNS[1] in [f["feature"] for f in drift["features"] if f.get("drift")]  # 10-20 trips -> 100-200
    assert COLUMNS[0] not in [f["feature"] for f in drift["features"] if f.get("drift")]


def test_diagnose_drift_reads_the_window_around_the_deploy(tmp_path):
    root = tmp_path / "registry"
    feast_version(root, "v1", 8, feast={"window": "1m"})
    feast_version(root, "v2", 8, deployed=DEPLOYED, feast={"window": "1m"})
    result = run_cli("drift", "--registry", str(root), "--old", "v1", "--new", "v2", "--json")
    assert result.returncode == 0, result.stderr
    windows = json.loads(result.stdout)["feast"]
    assert windows["old"]["window"] == ["2026-11-19T23:59:00Z", "2026-11-20T00:00:00Z"]
    assert (windows["old"]["rows"], windows["new"]["logged"], windows["new"]["rows"]) == (60, 60, 51)


def _bad_compare(root: Path, tmp_path: Path):
    return run_cli("compare", "--registry", str(root), "--old", "v1", "--new", "v2", "--budget", "1",
                   "--no-profile", "--no-verify", "--out", str(tmp_path / "run"))


@pytest.mark.parametrize("case, needles", [
    ("no parquet", ["rank/v2/logs: no Feast log files (*.parquet) in the folder"]),
    ("not feast", ["not a Feast feature log: no __log_timestamp or __request_id column"]),
    ("missing feature", ["inputs.feast.features: no column 'driver_stats__acc_rate' in the log; its feature columns: "
                         + ", ".join(COLUMNS)]),
    ("wrong key", ["rank/v2/manifest.yaml: inputs.feast: unknown key 'feature'"]),
    ("empty window", ["rank/v2/logs: no request logged in [2026-11-21T00:00:00Z, the end); the log covers "
                      "2026-11-19T23:58:20Z, 2026-11-20T00:01:39Z"]),
])
def test_bad_feast_inputs_end_a_compare_with_one_line(tmp_path, case, needles):
    root = tmp_path / "registry"
    feast_version(root, "v1", 8)
    logs = root / "rank" / "v2" / "logs"
    feast = {"missing feature": {"features": [COLUMNS[0], f"{VIEW}__acc_rate"]}, "wrong key": {"feature": COLUMNS}}
    feast_version(root, "v2", 8, deployed=DEPLOYED + (timedelta(days=1) if case == "empty window" else timedelta()),
                  feast=feast.get(case), log=case not in ("no parquet", "not feast"))
    if case == "no parquet":
        (logs / "2026-11-20").mkdir(parents=True)
        (logs / "2026-11-20" / "_SUCCESS").write_text("")
    elif case == "not feast":
        logs.mkdir()
        import pandas as pd

        pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(logs / "part-0.parquet")
    result = _bad_compare(root, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.skipif(not os.environ.get("DIAGNOSE_FEAST_PYTHON"),
                    reason="set DIAGNOSE_FEAST_PYTHON to a Python with `feast` installed (it pins pandas < 3)")
def test_a_log_written_by_real_feast_reads_the_same(tmp_path):
    """Real Feast serves features from its online store (one entity never materialized: NOT_FOUND) and writes the
    log with its file offline store; the log has the schema the fixtures above write, and reads the same."""
    subprocess.run([os.environ["DIAGNOSE_FEAST_PYTHON"], str(HERE / "feast_writer.py"), str(tmp_path / "repo")],
                   check=True, capture_output=True, timeout=120)
    import pyarrow.parquet as pq

    real = tmp_path / "repo" / "logs"
    ours = tmp_path / "ours"
    write_feast_log(ours, DEPLOYED, (1, 9), 3, seed=4)
    features = {"conv_rate": pa.float32(), "avg_daily_trips": pa.int64()}
    expected = pq.read_schema(next(ours.rglob("*.parquet")))
    expected = pa.schema([f for f in expected if "embedding" not in f.name])
    written = [pq.read_schema(file) for file in real.rglob("*.parquet")]
    assert all(datetime.fromisoformat(file.parent.name) for file in real.rglob("*.parquet"))  # partitioned by date
    assert all(schema.remove_metadata().equals(expected.remove_metadata()) for schema in written), (written, expected)
    frame = load_requests(real)
    assert list(frame.columns) == [f"{VIEW}__conv_rate", f"{VIEW}__avg_daily_trips"]
    assert [str(t) for t in frame.dtypes] == ["float32", "int64"]
    assert frame.attrs[FEAST]["not_present"] == {f"{VIEW}__{name}": {"NOT_FOUND": 1} for name in features}
    assert len(frame) == frame.attrs[FEAST]["logged"] - 1
