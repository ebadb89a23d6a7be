"""What an incident report plots, kept in the evidence: the Prometheus evidence's `timelines` (throttling, memory,
restarts and the GPU clock at each grid point across the deploy) and each drift feature's `quantiles` or
`categories` (old against new).

The timelines are read from the recorded fixtures (fixtures/signals/prometheus/, the rollout of
tests/test_prometheus.py at 2026-11-20T10:00:00Z); the drift from two small request logs written to parquet and
read back as `diagnose drift` reads them. No mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collectors.drift import drift_report
from collectors.prometheus import pod_regex_from_selector, read_offline
from diagnose.core.requestlog import read_requests
from diagnose.core.runfolder import RunFolder
from diagnose.drift_stage import drift_command

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "signals" / "prometheus"
DEPLOYED_AT = "2026-11-20T10:00:00Z"
D = 1795168800  # DEPLOYED_AT as a Unix time
OFFLINE = {"container": "model", "pod_regex": pod_regex_from_selector("app=textclf,version=v2"), "namespace": "serving"}
SERIES = ("throttled_ratio", "memory_working_set_bytes", "restarts", "gpu_sm_clock_mhz")


def timelines_of(path: Path, **kwargs) -> tuple[dict, dict]:
    e = read_offline(path, DEPLOYED_AT, **{**OFFLINE, **kwargs})
    assert e.ok, e.reason
    return e.data["timelines"], e.data


@pytest.fixture(scope="module")
def throttled():
    return timelines_of(FIXTURES / "throttled.om")


@pytest.fixture(scope="module")
def oom():
    return timelines_of(FIXTURES / "oom.om")


def split(tl: dict, name: str) -> tuple[list, list]:
    """A series' values before the deploy (t < D) and after it (t > D), nulls left out."""
    before = [v for t, v in zip(tl["t"], tl[name], strict=True) if t < D and v is not None]
    after = [v for t, v in zip(tl["t"], tl[name], strict=True) if t > D and v is not None]
    return before, after


# ---- Prometheus: timelines


def test_the_grid_covers_both_windows_and_every_series_has_a_value_per_point(throttled):
    tl, data = throttled
    assert set(tl) == {"t", *SERIES}
    assert tl["t"][0] == D - 3600 and tl["t"][-1] == D + 3600 and D in tl["t"]
    assert np.all(np.diff(tl["t"]) == data["step_s"]) and len(tl["t"]) == 241
    for name in SERIES:
        assert len(tl[name]) == len(tl["t"]), name
    assert all(isinstance(t, int) for t in tl["t"])
    assert tl["throttled_ratio"][0] is None  # the first point has no step before it on the grid
    assert all(v is not None for v in tl["memory_working_set_bytes"])
    assert len(json.dumps(tl)) < 20_000  # a few hundred points: the evidence file stays small


def test_throttling_rises_with_the_deploy(throttled):
    tl, data = throttled
    before, after = split(tl, "throttled_ratio")
    assert max(before) < 0.1 and np.median(before) == pytest.approx(0.02, abs=0.01)
    assert min(after) > 0.3 and np.median(after) == pytest.approx(0.40, abs=0.02)
    # the step ending at the deploy is still the old level; the next one (10:00:00 .. 10:00:30) the new
    at = tl["t"].index(D)
    assert tl["throttled_ratio"][at] < 0.1 and tl["throttled_ratio"][at + 1] > 0.3
    # the steps add up to the window's ratio (equal periods per step: their mean is close to it)
    assert np.mean(after) == pytest.approx(data["throttled_ratio"]["after"], abs=0.01)
    assert all(round(v, 4) == v for v in after)
    # pod q7w9z's counters restart at 10:30: no negative or absurd step there
    assert all(0 <= v <= 1 for v in before + after)


def test_memory_and_clock_in_the_throttled_fixture(throttled):
    tl, data = throttled
    before, after = split(tl, "memory_working_set_bytes")
    assert all(isinstance(v, int) for v in before + after)
    # the peaks of the window numbers are the timeline's peaks
    at_or_after = [v for t, v in zip(tl["t"], tl["memory_working_set_bytes"], strict=True) if t >= D]
    assert max(at_or_after) == data["memory_working_set_bytes"]["after"]
    assert max(before) == data["memory_working_set_bytes"]["before"]
    assert np.median(after) > np.median(before) * 1.15  # 1.1 -> 1.35 GiB
    clocks = [v for v in tl["gpu_sm_clock_mhz"] if v is not None]
    assert len(clocks) == len(tl["t"])  # dcgm-exporter's 60 s samples held across the 30 s points in between
    assert all(1695 <= v <= 1710 and isinstance(v, int) for v in clocks)
    assert tl["restarts"] == [0] * len(tl["t"])


def test_memory_reaches_the_limit_and_restarts_grow_in_the_oom_fixture(oom):
    tl, data = oom
    limit = data["memory_limit_bytes"]
    before, after = split(tl, "memory_working_set_bytes")
    assert max(before) < 0.6 * limit
    assert max(after) >= 0.99 * limit and max(after) <= limit
    first_full = next(t for t, v in zip(tl["t"], tl["memory_working_set_bytes"], strict=True) if v >= 0.99 * limit)
    assert D + 600 <= first_full <= D + 720  # climbing to the limit ahead of the first OOM kill at 10:12
    restarts = tl["restarts"]
    assert restarts[0] == 0 and all(v is not None for v in restarts)
    assert all(b >= a for a, b in zip(restarts[:-1], restarts[1:], strict=True))  # cumulative
    assert restarts[-1] == data["restarts"] == 3
    steps = [(t - D, r) for t, r, prev in zip(tl["t"][1:], restarts[1:], restarts[:-1], strict=True) if r != prev]
    assert steps == [(720, 1), (1920, 2), (2460, 3)]  # the kills at 10:12, 10:32 and 10:41 (KSM every 60 s)


def test_a_fixture_without_dcgm_has_no_gpu_clock(tmp_path):
    lines = (FIXTURES / "healthy.om").read_text().splitlines(keepends=True)
    kept = [line for line in lines if "DCGM_" not in line]
    assert len(kept) < len(lines)
    path = tmp_path / "metrics.om"
    path.write_text("".join(kept))
    tl, data = timelines_of(path)
    assert "gpu_sm_clock_mhz" not in tl and data["gpu"]["sm_clock_mhz"]["after"] is None
    assert set(tl) == {"t", "throttled_ratio", "memory_working_set_bytes", "restarts"}
    assert all(len(tl[k]) == len(tl["t"]) for k in tl)
    before, after = split(tl, "throttled_ratio")
    assert max(before + after) < 0.1  # healthy: no throttling either side


def test_no_container_or_gpu_series_gives_no_timelines(tmp_path):
    lines = [line for line in (FIXTURES / "healthy.om").read_text().splitlines(keepends=True)
             if line.startswith(("http_request_duration_seconds", "# TYPE http_request_duration_seconds", "# EOF"))]
    path = tmp_path / "metrics.om"
    path.write_text("".join(lines))
    tl, data = timelines_of(path)
    assert tl is None and data["latency"]["timeline"]["t"]  # the latency is still there


def test_a_long_grid_is_thinned_evenly_to_600_points():
    tl, data = timelines_of(FIXTURES / "throttled.om", step_s=5)  # 1441 points
    assert len(tl["t"]) == 600 and tl["t"][0] == D - 3600 and tl["t"][-1] == D + 3600
    for name in SERIES:
        assert len(tl[name]) == 600, name
    gaps = np.diff(tl["t"])
    assert set(gaps) <= {10, 15} and len(set(tl["t"])) == 600  # evenly, within one 5 s step
    before, after = split(tl, "throttled_ratio")  # each value covers the steps since the previous point
    assert np.median(before) < 0.05 and np.median(after) == pytest.approx(0.40, abs=0.03)
    # the memory points keep the peaks of the steps they stand for
    at_or_after = [v for t, v in zip(tl["t"], tl["memory_working_set_bytes"], strict=True) if t >= D]
    assert max(at_or_after) == data["memory_working_set_bytes"]["after"]


# ---- drift: quantiles and categories

N = 600


def request_log(seed: int, *, shift: float, shares: list[float], long_texts: bool, nulls: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = rng.integers(20, 40, N) if long_texts else rng.integers(5, 15, N)
    frame = pd.DataFrame({
        "price": rng.normal(100 + shift, 10, N),
        "country": rng.choice(["de", "fr", "us", "br"], N, p=shares),
        "text": [" ".join(["word"] * int(k)) for k in words],
        "flag": rng.random(N) < 0.5,
    })
    if nulls:
        frame.loc[rng.choice(N, nulls, replace=False), "price"] = np.nan
    return frame


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    old = request_log(1, shift=0, shares=[0.6, 0.3, 0.1, 0.0], long_texts=False)
    new = request_log(2, shift=50, shares=[0.2, 0.3, 0.1, 0.4], long_texts=True, nulls=60)
    paths = {"old": folder / "old.parquet", "new": folder / "new.parquet"}
    old.to_parquet(paths["old"])
    new.to_parquet(paths["new"])
    return paths


@pytest.fixture(scope="module")
def report(logs):
    return drift_report(read_requests(logs["old"]), read_requests(logs["new"]))


def features(report: dict) -> dict:
    return {f["feature"]: f for f in report["features"]}


def test_a_shifted_number_keeps_21_quantiles_that_move(report, logs):
    price = features(report)["price"]
    q = price["quantiles"]
    assert q["p"] == [i / 20 for i in range(21)] and q["p"][0] == 0 and q["p"][-1] == 1.0
    assert len(q["old"]) == len(q["new"]) == 21 and "categories" not in price
    old, new = (read_requests(logs[side])["price"].dropna().to_numpy() for side in ("old", "new"))
    assert len(new) == N - 60  # the nulls are dropped before the quantiles
    assert q["old"] == pytest.approx(np.quantile(old, q["p"]), rel=1e-5)
    assert q["new"] == pytest.approx(np.quantile(new, q["p"]), rel=1e-5)
    assert q["old"][0] == pytest.approx(old.min(), rel=1e-5) and q["new"][-1] == pytest.approx(new.max(), rel=1e-5)
    for side in ("old", "new"):
        assert all(b >= a for a, b in zip(q[side][:-1], q[side][1:], strict=True)), side
    shift = np.subtract(q["new"][2:-2], q["old"][2:-2])  # the inner quantiles: every one moved by about 50
    assert np.all((shift > 40) & (shift < 60))
    assert all(float(f"{v:.6g}") == v for v in q["old"] + q["new"])  # 6 significant digits
    assert price["drift"]


def test_a_size_feature_is_numeric_and_keeps_quantiles(report):
    words = features(report)["text.words"]
    assert words["derived"] and words["type"] == "numeric"
    q = words["quantiles"]
    assert q["old"][0] >= 5 and q["old"][-1] <= 14 and q["new"][0] >= 20 and q["new"][-1] <= 39
    assert q["new"][10] > 2 * q["old"][10]


def test_changed_shares_keep_categories(report):
    country = features(report)["country"]
    c = country["categories"]
    assert "quantiles" not in country and country["type"] == "categorical"
    assert set(c["values"]) == {"de", "fr", "us", "br"} and len(c["old"]) == len(c["new"]) == 4
    assert c["values"][0] == "de"  # the most frequent over both sides together (0.6 + 0.2)
    old, new = dict(zip(c["values"], c["old"], strict=True)), dict(zip(c["values"], c["new"], strict=True))
    assert old["br"] == 0 and new["br"] == pytest.approx(0.4, abs=0.05)
    assert old["de"] == pytest.approx(0.6, abs=0.05) and new["de"] == pytest.approx(0.2, abs=0.05)
    assert sum(old.values()) == pytest.approx(1) and sum(new.values()) == pytest.approx(1)
    assert country["drift"]
    flag = features(report)["flag"]["categories"]  # a bool column: categorical, its values as strings
    assert sorted(flag["values"]) == ["False", "True"]


def test_only_the_ten_most_frequent_categories_are_kept():
    rng = np.random.default_rng(3)
    labels = [f"c{i:02d}" for i in range(15)]
    weights = np.arange(15, 0, -1) / np.arange(15, 0, -1).sum()
    old = pd.DataFrame({"cat": rng.choice(labels, 3000, p=weights)})
    new = pd.DataFrame({"cat": rng.choice(labels, 3000, p=np.roll(weights, 3))})
    c = features(drift_report(old, new))["cat"]["categories"]
    assert len(c["values"]) == len(c["old"]) == len(c["new"]) == 10
    pooled = pd.concat([old["cat"], new["cat"]]).value_counts()
    kept = [int(pooled[v]) for v in c["values"]]
    assert kept == sorted(kept, reverse=True)  # most frequent first, over both sides together
    assert min(kept) >= max(int(pooled[v]) for v in labels if v not in c["values"])
    assert c["old"][0] == pytest.approx((old["cat"] == c["values"][0]).mean(), abs=1e-6)
    assert c["new"][0] == pytest.approx((new["cat"] == c["values"][0]).mean(), abs=1e-6)
    assert sum(c["old"]) < 1 and sum(c["new"]) < 1  # the other five categories are left out


def test_skipped_features_get_neither():
    old = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]})
    new = pd.DataFrame({"x": [np.nan] * 3, "y": ["a", "a", "b"]})
    found = features(drift_report(old, new))
    assert found["x"]["status"] == "skipped"
    assert "quantiles" not in found["x"] and "categories" not in found["x"]
    assert "categories" in found["y"]


def test_drift_json_holds_them(logs, tmp_path):
    drift_command(logs["old"], logs["new"], None, None, None, None, "auto", 0.05, None, tmp_path, as_json=False)
    saved = features(RunFolder(tmp_path).evidence("drift"))
    assert len(saved["price"]["quantiles"]["new"]) == 21 and saved["country"]["categories"]["values"][0] == "de"
