"""Write a feature log with the real `feast` package (run by a Python that has it: it pins pandas < 3).

`python tests/feast_writer.py REPO`: a feature repo in REPO (SQLite online store, file offline store) with one
feature view, `driver_stats` (conv_rate Float32, avg_daily_trips Int64) of entity `driver`, and a feature service
logging to REPO/logs partitioned by `__log_date`. Ten drivers are materialized; eleven requests are served through
`get_online_features` (one for a driver never materialized: NOT_FOUND) and logged as Feast's logger logs them:
each response's values, event timestamps and statuses under `FeatureServiceLoggingSource.get_schema`, written by
`FeatureStore.write_logged_features` (the file offline store's `pyarrow.dataset.write_dataset`).
"""

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.feature_logging import FeatureServiceLoggingSource, LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.types import Float32, Int64


def main(repo: Path) -> None:
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: diagnose\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rng = np.random.default_rng(0)
    drivers = np.arange(1001, 1011)
    pd.DataFrame({"driver_id": drivers, "event_timestamp": [now - timedelta(hours=1)] * len(drivers),
                  "conv_rate": rng.random(len(drivers)).astype(np.float32),
                  "avg_daily_trips": rng.integers(0, 100, len(drivers))}).to_parquet(repo / "data" / "stats.parquet")

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="driver_stats", entities=[driver], ttl=timedelta(days=1),
                       schema=[Field(name="driver_id", dtype=Int64), Field(name="conv_rate", dtype=Float32),
                               Field(name="avg_daily_trips", dtype=Int64)],
                       source=FileSource(path=str(repo / "data" / "stats.parquet"), timestamp_field="event_timestamp"))
    destination = FileLoggingDestination(path=str(repo / "logs"), partition_by=["__log_date"])
    service = FeatureService(name="driver_ranking", features=[view], logging_config=LoggingConfig(destination))
    store = FeatureStore(repo_path=str(repo))
    store.apply([driver, view, service])
    store.materialize(now - timedelta(days=2), now)

    rows = [{"driver_id": int(i)} for i in [*drivers, 9999]]
    response = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True).proto
    columns: dict = {}
    for name, result in zip(response.metadata.feature_names.val, response.results, strict=True):
        columns[name] = [getattr(v, v.WhichOneof("val")) if v.WhichOneof("val") else None for v in result.values]
        if name != "driver_id":
            columns[name + "__timestamp"] = [t.ToDatetime(tzinfo=timezone.utc) for t in result.event_timestamps]
            columns[name + "__status"] = [int(s) for s in result.statuses]
    served = [now + timedelta(seconds=i) for i in range(len(rows))]
    columns.update({"__log_timestamp": served, "__log_date": [t.date() for t in served],
                    "__request_id": [f"request-{i}" for i in range(len(rows))]})
    schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
    store.write_logged_features(logs=pa.Table.from_pydict({f.name: columns[f.name] for f in schema}, schema=schema),
                                source=service)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
