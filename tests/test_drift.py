"""Schema and distribution drift between two request logs: every finding on fixture logs with a known change,
identical samples give exactly nothing (ties included), the A/A false-positive rate stays at alpha, and odd
input (all-null, mixed, ragged, corrupt files) never crashes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from collectors import drift
from collectors.drift import (
    ALPHA,
    DISTANCE_THRESHOLD,
    PSI_THRESHOLD,
    check_expected,
    drift_report,
    feature_drift,
    read_requests,
    schema,
    schema_diff,
    size_features,
)
from diagnose.core.errors import UserError

WORDS = np.array("the a ticket refund order late shipping account password reset login error page payment card "
                 "failed charged twice help please urgent thanks hello broken app crash".split())
N = 400


def texts(rng: np.random.Generator, n: int, low: int, high: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, k)) for k in rng.integers(low, high + 1, n)]


def requests(seed: int, n: int = N, *, long_texts=False, price_dtype=np.float32, age_nulls=0, candidates=20,
             image=32, extra=False) -> pd.DataFrame:
    """A request log of a ticket classifier + recommender: text, numbers, a categorical, lists, images."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "text": texts(rng, n, 20, 60) if long_texts else texts(rng, n, 5, 15),
        "price": rng.gamma(2.0, 10.0, n).astype(price_dtype),
        "age": rng.normal(40, 12, n).round(),
        "country": rng.choice(["de", "fr", "us"], n, p=[0.5, 0.3, 0.2]),
        "tier": rng.integers(0, 4, n),
        "candidates": [rng.integers(0, 10_000, candidates).tolist() for _ in range(n)],
        "image": [rng.random((3, image, image)).round(2).tolist() for _ in range(n)],
    })
    if age_nulls:
        frame.loc[rng.choice(n, age_nulls, replace=False), "age"] = np.nan
    if extra:
        frame["session_len"] = rng.integers(1, 50, n)
    return frame


@pytest.fixture(scope="module")
def pair():
    old = requests(1)
    new = requests(2, long_texts=True, price_dtype=np.float64, age_nulls=N // 8, candidates=80, image=48, extra=True)
    return old, new, drift_report(old, new)


def by_feature(report_or_entries) -> dict:
    entries = report_or_entries["features"] if isinstance(report_or_entries, dict) else report_or_entries
    return {entry["feature"]: entry for entry in entries}


def changes(report: dict) -> dict:
    return {(c["column"], c["change"]): c for c in report["schema_changes"]}


# ---- the fixture pair: one finding per known change


def test_longer_texts_drift_through_their_size_features(pair):
    _, _, report = pair
    chars = by_feature(report)["text.chars"]
    assert chars["drift"] and chars["derived"] and chars["source"] == "text" and chars["method"] == "ks"
    assert 3.5 < chars["ratio_mean"] < 4.5
    assert chars["text"].startswith("text.chars: mean ") and "KS 1" in chars["text"] and chars["text"].endswith("(Holm) -> drift")
    assert by_feature(report)["text.words"]["drift"]
    assert "text" not in by_feature(report)  # free text itself is tested only through its sizes
    assert changes(report)[("text", "length")]["text"].startswith("column 'text': length range [")


def test_new_column_is_a_schema_finding_not_a_feature(pair):
    _, _, report = pair
    added = changes(report)[("session_len", "added")]
    assert added["text"] == "column 'session_len' added (number, int64)"
    assert "session_len" not in by_feature(report)


def test_float32_to_float64_is_a_dtype_finding(pair):
    _, _, report = pair
    assert changes(report)[("price", "dtype")]["text"] == "column 'price': float32 -> float64"
    assert not by_feature(report)["price"]["drift"]  # same distribution, wider type


def test_nulls_appearing_is_a_finding_and_the_rest_is_still_tested(pair):
    _, _, report = pair
    nulls = changes(report)[("age", "nulls")]
    assert nulls["text"] == "column 'age': nulls appeared (0% -> 12.5% of rows)"
    assert (nulls["old"], nulls["new"]) == (0.0, 0.125)
    age = by_feature(report)["age"]
    assert age["status"] == "ok" and age["method"] == "ks" and age["p_value"] is not None
    assert (age["old_n"], age["new_n"], age["old_nulls"], age["new_nulls"]) == (N, N - N // 8, 0, N // 8)
    assert not age["drift"]


def test_more_candidates_drift_and_change_the_length_range(pair):
    _, _, report = pair
    length = by_feature(report)["candidates.len"]
    assert length["drift"] and (length["old_mean"], length["new_mean"], length["ratio_mean"]) == (20.0, 80.0, 4.0)
    assert changes(report)[("candidates", "length")]["text"] == "column 'candidates': length range [20, 20] -> [80, 80]"
    assert "candidates.dim1" not in by_feature(report)  # a flat list has no inner dims


def test_bigger_images_are_a_shape_finding_and_drift_in_dims(pair):
    _, _, report = pair
    assert changes(report)[("image", "shape")]["text"] == "column 'image': shape [[32,32],[32,32]] -> [[48,48],[48,48]]"
    features = by_feature(report)
    assert features["image.dim1"]["drift"] and features["image.dim2"]["drift"] and features["image.elements"]["drift"]
    assert features["image.elements"]["old_p50"] == 3 * 32 * 32 and features["image.elements"]["new_p50"] == 3 * 48 * 48
    assert not features["image.len"]["drift"]  # still three channels
    assert features["payload_bytes"]["drift"]


def test_report_shape_order_and_json(pair):
    old, new, report = pair
    json.dumps(report, allow_nan=False)  # no NaN, inf or numpy scalars anywhere
    assert report["status"] == "ok" and report["identical"] is False and report["rows"] == {"old": N, "new": N}
    assert report["settings"] == {"method": "auto", "alpha": ALPHA, "threshold": None, "small_sample": 1000, "correction": "holm"}
    flags = [entry["drift"] for entry in report["features"]]
    assert flags == sorted(flags, reverse=True)  # drifted first
    drifted = [entry["feature"] for entry in report["features"] if entry["drift"]]
    assert drifted == sorted(drifted) == report["drifted"]
    assert set(drifted) == {"candidates.len", "image.dim1", "image.dim2", "image.elements", "payload_bytes", "text.chars",
                            "text.words"}
    assert report["summary"][0] == f"drift in {len(drifted)} of {len(report['features'])} features"
    assert report["schema"]["old"] == schema(old) and report["schema"]["new"] == schema(new)
    assert [(c["column"], c["change"]) for c in report["schema_changes"]] == sorted(changes(report))


def test_holm_adjusts_all_p_values_together(pair):
    _, _, report = pair
    tested = [e for e in report["features"] if e["method"] in ("ks", "chisquare")]
    raw = [e["p_value"] for e in tested]
    assert [e["p_adjusted"] for e in tested] == pytest.approx(drift._holm(raw))
    assert all(e["drift"] == (e["p_adjusted"] <= ALPHA) for e in tested)
    assert drift._holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])


def test_a_p_value_under_alpha_is_no_drift_after_holm():
    rng = np.random.default_rng(5)
    old = pd.DataFrame({f"x{i}": rng.normal(size=300) for i in range(10)})
    new = pd.DataFrame({f"x{i}": rng.normal(size=300) for i in range(10)})
    new["x0"] += 0.2  # a small shift: raw p below alpha, but not below alpha / 11
    x0 = by_feature(feature_drift(old, new))["x0"]
    assert x0["p_value"] < ALPHA < x0["p_adjusted"] and not x0["drift"]
    assert by_feature(feature_drift(old, new, alpha=0.5))["x0"]["drift"]


def test_threaded_path_gives_the_same_report(pair, monkeypatch):
    old, new, report = pair
    monkeypatch.setattr(drift, "PARALLEL_VALUES", 0)
    assert drift_report(old, new) == report


# ---- identical samples: exactly nothing


@pytest.mark.parametrize("n", [300, 5000])
def test_identical_samples_give_no_drift_and_no_schema_change(n):
    rng = np.random.default_rng(3)
    frame = requests(3, n=n) if n <= 300 else pd.DataFrame({"x": rng.normal(size=n), "ties": rng.integers(0, 4, n),
                                                             "few": rng.integers(0, 40, n).astype(float),
                                                             "text": texts(rng, n, 1, 8)})
    frame["ties"] = rng.integers(0, 4, n)  # heavy ties
    report = drift_report(frame, frame.copy())
    assert report["identical"] is True and report["schema_changes"] == [] and report["drifted"] == []
    for entry in report["features"]:
        assert entry["statistic"] == 0.0, entry
        assert entry["p_value"] in (None, 1.0)
    assert report["summary"] == [f"no drift in {len(report['features'])} features"]
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # same sample, other order
    report = drift_report(frame, shuffled)
    assert report["identical"] is False and report["drifted"] == [] and report["schema_changes"] == []
    assert all(entry["statistic"] == 0.0 for entry in report["features"])


# ---- empty, all-null, mixed, kind changes: findings, never crashes


@pytest.mark.parametrize("side", ["old", "new", "both"])
def test_all_null_column_on_either_side(side):
    old, new = requests(4, n=60), requests(5, n=60)
    for name, frame in (("old", old), ("new", new)):
        if side in (name, "both"):
            frame["age"] = np.nan
            frame["text"] = None
    report = drift_report(old, new)
    json.dumps(report, allow_nan=False)
    features = by_feature(report)
    for frame_side in ("old", "new"):
        kinds = {c: report["schema"][frame_side]["columns"][c]["kind"] for c in ("age", "text")}
        assert kinds == ({"age": "empty", "text": "empty"} if side in (frame_side, "both") else {"age": "number", "text": "text"})
    reason = {"old": "no values in old", "new": "no values in new", "both": "no values in old or new"}[side]
    assert features["age"]["status"] == "skipped" and features["age"]["reason"] == reason and not features["age"]["drift"]
    if side != "both":
        assert features["text.chars"]["status"] == "skipped" and features["text.chars"]["reason"] == reason
        assert ("age", "kind") in changes(report) and ("age", "nulls") in changes(report)
    assert any(line.startswith("2 features skipped") or "skipped" in line for line in report["summary"])


def test_zero_rows_and_mixed_cells_do_not_crash():
    frame = pd.DataFrame({"x": pd.Series([1.0, "a", 2.0, None, 3.0], dtype=object),
                          "ragged": [[1, [2, 3]], [4], None, [[5, 6, 7]], []],
                          "blob": [b"ab", b"", None, b"abcd", b"x"]})
    columns = schema(frame)["columns"]
    assert columns["x"]["mixed"] is True and columns["x"]["kind"] == "number"
    assert columns["ragged"]["rank"] == 2 and columns["ragged"]["shape"] == [[2, 3]]
    assert size_features(frame)["ragged.elements"].tolist()[:2] == [3.0, 1.0]
    assert columns["blob"]["kind"] == "bytes" and size_features(frame)["blob.bytes"].tolist()[:2] == [2.0, 0.0]
    entries = by_feature(feature_drift(frame.iloc[:0], frame))
    assert entries["payload_bytes"]["reason"] == "no values in old"
    assert by_feature(feature_drift(frame, frame))["x"]["reason"] == "mixed kinds in one column"
    json.dumps(drift_report(frame.iloc[:0], frame), allow_nan=False)


def test_kind_change_is_named_and_not_tested():
    old = pd.DataFrame({"zip": np.arange(50)})
    new = pd.DataFrame({"zip": [f"z{i}" for i in range(50)]})
    report = drift_report(old, new)
    assert changes(report)[("zip", "kind")]["text"] == "column 'zip': kind number -> text"
    assert by_feature(report)["zip"]["reason"] == "kind changed: number -> text"
    assert "zip.chars" not in by_feature(report)  # a size feature of one side only


def test_domain_change_on_a_categorical_column():
    old = pd.DataFrame({"country": ["de", "fr", "us"] * 40})
    new = pd.DataFrame({"country": ["de", "fr", "us", "br"] * 30})
    report = drift_report(old, new)
    assert changes(report)[("country", "domain")]["text"] == "column 'country': values added ['br'], removed []"
    country = by_feature(report)["country"]
    assert country["type"] == "categorical" and country["method"] == "chisquare" and country["drift"]
    assert "share of 'br' 0% -> 25%" in country["text"]


# ---- expected schema (the manifest's inputs.schema)


def test_expected_schema_checks():
    frame = requests(6, n=40, age_nulls=4)
    found = check_expected({
        "price": {"dtype": "float64", "kind": "number"},           # float32 in the requests
        "session": {"dtype": "int64"},                              # missing
        "candidates": {"rank": 2, "dtype": "int64"},                # rank 1
        "image": {"rank": 3, "shape": [3, 64, None], "dtype": "float64"},  # 32 wide
        "age": {"nullable": False},
        "text": {"kind": "text", "dtype": "str"},
        "country": {}, "tier": {},
    }, schema(frame))
    got = {(f["column"], f["change"]): f for f in found}
    assert set(got) == {("price", "dtype"), ("session", "missing"), ("candidates", "rank"), ("image", "shape"), ("age", "nulls")}
    assert (got["price", "dtype"]["old"], got["price", "dtype"]["new"]) == ("float64", "float32")
    assert got["price", "dtype"]["text"] == "column 'price': expected float64, requests hold float32"
    assert (got["candidates", "rank"]["old"], got["candidates", "rank"]["new"]) == (2, 1)
    assert got["image", "shape"]["new"] == [[3, 3], [32, 32], [32, 32]]
    assert got["age", "nulls"]["new"] == 4
    # inner dims only (len == rank - 1) is accepted too; matching specs give nothing, extra columns are named
    ok = check_expected({"image": {"shape": [32, 32], "rank": 3}, "price": {"dtype": "float32"}}, schema(frame))
    unexpected = {(c, "unexpected") for c in ("text", "age", "country", "tier", "candidates")}
    assert {(f["column"], f["change"]) for f in ok} == unexpected
    assert check_expected({}, schema(frame)) == []
    report = drift_report(frame, frame, expected={"price": {"dtype": "float64"}})
    assert [f["change"] for f in report["expected_schema"] if f["column"] == "price"] == ["dtype"]
    assert any(line == "column 'price': expected float64, requests hold float32" for line in report["summary"])


# ---- test selection: large samples, explicit methods


def test_large_samples_use_distances_and_agree_with_scipy():
    rng = np.random.default_rng(7)
    n = 5000
    old = pd.DataFrame({"x": rng.normal(0, 1, n), "c": rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])})
    new = pd.DataFrame({"x": rng.normal(0.3, 1, n + 17), "c": rng.choice(4, n + 17, p=[0.1, 0.2, 0.3, 0.4])})
    features = by_feature(feature_drift(old, new))
    x, c = features["x"], features["c"]
    assert (x["method"], x["threshold"], x["p_value"]) == ("wasserstein", DISTANCE_THRESHOLD, None)
    assert x["statistic"] == pytest.approx(sps.wasserstein_distance(old.x, new.x) / np.std(old.x), rel=1e-9) and x["drift"]
    assert (c["method"], c["type"]) == ("jensenshannon", "categorical")
    p, q = np.bincount(old.c, minlength=4) / n, np.bincount(new.c, minlength=4) / (n + 17)
    assert c["statistic"] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9) and c["drift"]
    same = by_feature(feature_drift(old, old.sample(frac=1.0, random_state=1)))
    assert same["x"]["statistic"] == 0.0 and same["c"]["statistic"] == 0.0
    # integer size features use a counting sort: the same distance as scipy's on the values
    lists_old = pd.DataFrame({"ids": [[0] * k for k in rng.integers(5, 40, n)]})
    lists_new = pd.DataFrame({"ids": [[0] * k for k in rng.integers(8, 40, n - 3)]})
    entry = by_feature(feature_drift(lists_old, lists_new))["ids.len"]
    a, b = size_features(lists_old)["ids.len"], size_features(lists_new)["ids.len"]
    assert entry["statistic"] == pytest.approx(sps.wasserstein_distance(a, b) / np.std(a), rel=1e-9)
    assert entry["old_p50"] == np.median(a) and entry["new_p50"] == np.median(b)


def test_constant_old_sample_distance_is_zero_or_infinite():
    old = pd.DataFrame({"ids": [[1, 2, 3]] * 2000})  # ids.len is always 3: std 0
    assert by_feature(feature_drift(old, old.copy()))["ids.len"]["statistic"] == 0.0
    moved = by_feature(feature_drift(old, pd.DataFrame({"ids": [[1, 2, 3, 4]] * 2000})))["ids.len"]
    assert moved["method"] == "wasserstein" and moved["drift"] and moved["statistic"] is None and "inf" in moved["text"]
    constant = pd.DataFrame({"k": np.full(2000, 7.0)})  # one value: categorical
    assert by_feature(feature_drift(constant, constant.copy()))["k"]["type"] == "categorical"
    spread = pd.DataFrame({"k": np.random.default_rng(1).normal(size=2000)})  # 2001 values pooled: numeric
    entry = by_feature(feature_drift(constant, spread))["k"]
    assert entry["type"] == "numeric" and entry["drift"] and entry["statistic"] is None


def test_psi_method():
    rng = np.random.default_rng(8)
    old = pd.DataFrame({"x": rng.normal(0, 1, 2000), "c": rng.choice(["a", "b", "c"], 2000)})
    new = pd.DataFrame({"x": rng.normal(0.5, 1, 2000), "c": rng.choice(["a", "b", "c"], 2000, p=[0.6, 0.2, 0.2])})
    features = by_feature(feature_drift(old, new, method="psi"))
    assert {e["method"] for e in features.values()} == {"psi"}
    assert features["x"]["threshold"] == PSI_THRESHOLD and features["x"]["drift"] and features["c"]["drift"]
    # by hand: 10 quantile bins of old
    edges = np.quantile(old.x, np.arange(1, 10) / 10)
    po = np.bincount(np.searchsorted(edges, old.x, side="left"), minlength=10) / 2000
    pn = np.bincount(np.searchsorted(edges, new.x, side="left"), minlength=10) / 2000
    assert features["x"]["statistic"] == pytest.approx(np.sum((pn - po) * np.log(pn / po)), rel=1e-6)
    same = by_feature(feature_drift(old, old, method="psi"))
    assert same["x"]["statistic"] == 0.0 and not same["x"]["drift"]
    assert by_feature(feature_drift(old, new, method="psi", threshold=10.0))["x"]["drift"] is False
    with pytest.raises(ValueError, match="unknown drift method"):
        feature_drift(old, new, method="t-test")


def test_false_positive_rate_of_random_splits():
    rng = np.random.default_rng(11)
    any_drift = 0
    for _ in range(40):
        frame = pd.DataFrame({f"x{i}": rng.normal(size=600) for i in range(8)})
        frame["tier"] = rng.choice(4, 600, p=[0.4, 0.3, 0.2, 0.1])
        frame["ids"] = [[0] * k for k in rng.integers(5, 40, 600)]
        order = rng.permutation(600)
        old, new = frame.iloc[order[:300]].reset_index(drop=True), frame.iloc[order[300:]].reset_index(drop=True)
        any_drift += bool([e for e in feature_drift(old, new) if e["drift"]])
    assert any_drift / 40 <= 0.10


# ---- size features


def test_size_features_names_values_and_payload():
    frame = pd.DataFrame({
        "text": ["héllo wörld", "  a\u00a0b\tc  ", None],
        "ids": [np.arange(4, dtype=np.int32), np.arange(2, dtype=np.int32), None],
        "img": [np.zeros((3, 2, 5), np.float32), np.zeros((3, 4, 1), np.float32), np.zeros((3, 1, 1), np.float32)],
        "score": [0.5, np.nan, 1.5],
        "blob": [b"abc", None, b""],
    })
    sizes = size_features(frame)
    assert list(sizes.columns) == ["text.chars", "text.words", "ids.len", "img.len", "img.dim1", "img.dim2", "img.elements",
                                   "blob.bytes", "payload_bytes"]
    assert all(dtype == np.float64 for dtype in sizes.dtypes)
    assert sizes["text.chars"].tolist()[:2] == [11.0, 9.0] and np.isnan(sizes["text.chars"][2])
    assert sizes["text.words"].tolist()[:2] == [2.0, 3.0]
    assert sizes["ids.len"].tolist()[:2] == [4.0, 2.0] and np.isnan(sizes["ids.len"][2])
    assert sizes["img.dim1"].tolist() == [2.0, 4.0, 1.0] and sizes["img.elements"].tolist() == [30.0, 12.0, 3.0]
    # utf-8 bytes + 4 per int32/float32 leaf + 8 per float64 number + bytes
    assert sizes["payload_bytes"].tolist() == [13 + 16 + 120 + 8 + 3, 10 + 8 + 48 + 0 + 0, 0 + 0 + 12 + 8 + 0]
    assert schema(frame)["columns"]["img"]["element_dtype"] == "float32"


def test_word_counts_match_python_split():
    rng = np.random.default_rng(12)
    alphabet = list(" \t\n\x0b\x0c\r\x1c\x1f\x00\x08\x0e\x85\xa0\u1680\u2000\u200a\u2028\u3000abé€") + ["", "xyz"]
    values = ["".join(rng.choice(alphabet, k)) for k in rng.integers(0, 25, 3000)] + ["", " ", "a " * 400]
    sizes = size_features(pd.DataFrame({"t": values}))
    assert sizes["t.words"].tolist() == [float(len(v.split())) for v in values]
    assert sizes["t.chars"].tolist() == [float(len(v)) for v in values]
    # Arrow-backed strings in several chunks (as parquet row groups or pd.concat leave them), object strings
    chunked = pd.concat([pd.Series(values[:1000], dtype="str"), pd.Series(values[1000:], dtype="str")], ignore_index=True)
    pd.testing.assert_frame_equal(size_features(pd.DataFrame({"t": chunked})), sizes)
    pd.testing.assert_frame_equal(size_features(pd.DataFrame({"t": pd.Series(values, dtype=object)})), sizes)


def test_parquet_round_trip_gives_the_same_size_features(tmp_path):
    frame = requests(9, n=30)[["candidates", "image", "text"]]
    frame.loc[3, "candidates"] = None
    frame["ragged"] = [[[1.0] * (i % 3)] * (i % 4) for i in range(30)]
    path = tmp_path / "requests.parquet"
    frame.to_parquet(path)
    cells = pd.read_parquet(path)
    assert isinstance(cells["candidates"][0], np.ndarray) and isinstance(cells["image"][0], np.ndarray)
    expected = size_features(frame)
    pd.testing.assert_frame_equal(size_features(cells), expected)
    read = read_requests(path)
    pd.testing.assert_frame_equal(size_features(read), expected)
    # Arrow-backed list columns in several chunks, as large files come back
    halves = pd.concat([read.iloc[:11], read.iloc[11:]], ignore_index=True)
    pd.testing.assert_frame_equal(size_features(halves), expected)
    assert schema_diff(schema(frame), schema(cells)) == [] and schema_diff(schema(frame), schema(read)) == []
    assert schema(read)["columns"]["image"]["shape"] == [[32, 32], [32, 32]]


# ---- reading


def test_read_requests_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.parquet: requests file not found"):
        read_requests(tmp_path / "missing.parquet")
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(UserError, match=r"r.json: unsupported requests format '.json'"):
        read_requests(tmp_path / "r.json")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="bad.parquet: cannot read requests file"):
        read_requests(tmp_path / "bad.parquet")
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(UserError, match=r"empty.parquet: requests file holds no requests \(0 rows\)"):
        read_requests(tmp_path / "empty.parquet")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(UserError, match="blank.csv: requests file is empty"):
        read_requests(tmp_path / "blank.csv")


def test_read_requests_keeps_nulls(tmp_path):
    pd.DataFrame({"a": [1.0, None, 3.0], "t": ["x", None, "z"]}).to_csv(tmp_path / "r.csv", index=False)
    frame = read_requests(tmp_path / "r.csv")
    assert frame["a"].isna().tolist() == [False, True, False]
    assert schema(frame)["columns"]["t"]["nulls"] == 1
