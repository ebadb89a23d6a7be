"""Request logs: validation names the column and row; batching stacks and pads like a serving batcher."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose.core.errors import CellUnavailable, UserError
from diagnose.core.requestlog import LOGGED_DTYPES, describe, load_requests, validate
from profilers.runners import collate


def test_mixed_kinds_in_one_column(tmp_path):
    frame = pd.DataFrame({"x": pd.Series([1.5, "hello"], dtype=object)})
    with pytest.raises(UserError, match=r"column 'x' row 1: holds text, but row 0 holds number"):
        validate(frame, tmp_path / "r.parquet")


def test_infinite_scalar(tmp_path):
    with pytest.raises(UserError, match=r"column 'a' row 2: inf"):
        validate(pd.DataFrame({"a": [1.0, 2.0, np.inf]}), tmp_path / "r.csv")


def test_nested_nan_inside_list(tmp_path):
    frame = pd.DataFrame({"img": [[[1.0, 2.0], [3.0, 4.0]], [[1.0, np.nan], [3.0, 4.0]]]})
    path = tmp_path / "r.parquet"
    frame.to_parquet(path)
    with pytest.raises(UserError, match=r"column 'img' row 1: list holds NaN"):
        load_requests(path)


def test_csv_and_parquet_agree(tmp_path):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.25, 0.125]})
    frame.to_csv(tmp_path / "r.csv", index=False)
    frame.to_parquet(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(load_requests(tmp_path / "r.csv"), load_requests(tmp_path / "r.parquet"))


def test_unsupported_suffix(tmp_path):
    with pytest.raises(UserError, match="unsupported requests format '.txt'"):
        load_requests(tmp_path / "r.txt")


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="cannot read requests file"):
        load_requests(path)


def test_collate_pads_ragged_lists_with_zero():
    frame = pd.DataFrame({"ids": [[1, 2, 3], [4]], "score": [0.5, 1.5]})
    ids, score = collate(frame)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert str(ids.dtype) == "torch.int64" and str(score.dtype) == "torch.float64"  # the frame's own dtypes
    assert score.tolist() == [0.5, 1.5]
    frame.attrs[LOGGED_DTYPES] = False  # a log with no dtypes of its own (CSV): float32 and int64
    assert str(collate(frame)[1].dtype) == "torch.float32"


def test_collate_pads_nested_ragged_lists():
    frame = pd.DataFrame({"m": [[[1, 2], [3]], [[4]]]})
    (m,) = collate(frame)
    assert m.tolist() == [[[1, 2], [3, 0]], [[4, 0], [0, 0]]]


def test_collate_refuses_text():
    with pytest.raises(CellUnavailable, match="holds text"):
        collate(pd.DataFrame({"t": ["hello"]}))


def test_describe_counts_list_leaves_and_text_length():
    frame = pd.DataFrame({"m": [[[1, 2], [3]], [[4]]], "t": ["ab", "abcd"], "n": [1, 2]})
    d = describe(frame)
    assert d["rows"] == 2
    assert d["columns"]["m"] == {"kind": "list", "mean_len": 2.0, "max_len": 3}
    assert d["columns"]["t"] == {"kind": "text", "mean_len": 3.0, "max_len": 4}
    assert d["columns"]["n"]["kind"] == "number"
