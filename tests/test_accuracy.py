"""Output comparison of a variant against its version: figures checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from profilers.accuracy import ATOL, RTOL, compare_outputs, outputs_to_arrays


def test_identical_outputs_agree_exactly():
    batches = [torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.5, 0.25]]), torch.tensor([[1.0, -1.0, 0.0]])]
    result = compare_outputs(batches, [b.clone() for b in batches])
    assert result["batches"] == 2 and result["rows"] == 3
    assert result["max_abs"] == 0.0 and result["mean_abs"] == 0.0 and result["max_rel"] == 0.0
    assert result["cosine"] == pytest.approx(1.0) and result["cosine_min"] == pytest.approx(1.0)
    assert result["top1_agreement"] == 1.0
    assert result["within_tolerance"] is True
    assert (result["atol"], result["rtol"]) == (ATOL, RTOL) == (1e-5, 1e-5)


def test_known_perturbation_gives_hand_computed_errors():
    reference = [np.array([[1.0, 2.0], [4.0, -8.0]]), np.array([[0.5, 0.0]])]
    candidate = [np.array([[1.1, 2.0], [4.0, -7.6]]), np.array([[0.5, 0.0]])]
    result = compare_outputs(reference, candidate)
    # |diff| = 0.1, 0, 0, 0.4, 0, 0 ; |ref| = 1, 2, 4, 8, 0.5, 0 (floored at 1e-12 for the relative error)
    assert result["max_abs"] == pytest.approx(0.4)
    assert result["mean_abs"] == pytest.approx(0.5 / 6)
    assert result["max_rel"] == pytest.approx(0.1)  # 0.1 / 1 beats 0.4 / 8 = 0.05
    assert result["mean_rel"] == pytest.approx((0.1 + 0.05) / 6)
    assert result["within_tolerance"] is False
    assert result["top1_agreement"] == 1.0  # the perturbation moves no argmax
    # row cosines: [1.1, 2] vs [1, 2]; [4, -7.6] vs [4, -8]; [0.5, 0] vs itself
    expected = [(1.1 + 4) / (math.hypot(1.1, 2) * math.hypot(1, 2)), (16 + 60.8) / (math.hypot(4, 7.6) * math.hypot(4, 8)), 1.0]
    assert result["cosine"] == pytest.approx(sum(expected) / 3)
    assert result["cosine_min"] == pytest.approx(min(expected))


def test_tolerance_is_atol_plus_rtol_times_reference():
    reference = [np.array([[1000.0, 0.0]])]
    assert compare_outputs(reference, [np.array([[1000.01, 0.0]])])["within_tolerance"] is True  # 0.01 <= 1e-5 + 0.01
    assert compare_outputs(reference, [np.array([[1000.0105, 0.0]])])["within_tolerance"] is False
    assert compare_outputs(reference, [np.array([[1000.0, 2e-5]])])["within_tolerance"] is False  # 2e-5 > atol at a zero
    assert compare_outputs(reference, [np.array([[1000.0, 2e-5]])], atol=1e-4)["within_tolerance"] is True


def test_flipped_argmax_rows_are_counted():
    reference = [np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]]), np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])]
    candidate = [np.array([[2.5, 2.0, 0.0], [3.0, 1.0, 0.0]]), np.array([[0.0, 6.0, 5.0], [1.0, 0.0, 0.0]])]
    result = compare_outputs(reference, candidate)
    assert result["rows"] == 4
    assert result["top1_agreement"] == 0.5


def test_regression_scores_have_no_top1():
    scores = [torch.tensor([[0.3], [1.2]]), torch.tensor([[-0.5]])]
    result = compare_outputs(scores, [s + 0.1 for s in scores])
    assert result["top1_agreement"] is None
    assert result["rows"] == 3 and result["max_abs"] == pytest.approx(0.1)
    flat = compare_outputs([torch.tensor([0.3, 1.2])], [torch.tensor([0.3, 1.2])])  # 1-D: one row, not a classifier
    assert flat["top1_agreement"] is None and flat["rows"] == 1 and flat["cosine"] == pytest.approx(1.0)


def test_dict_tuple_and_model_output_are_flattened_in_order():
    from transformers.modeling_outputs import SequenceClassifierOutput

    logits, hidden = torch.tensor([[1.0, 2.0]]), torch.tensor([[[0.5, 0.5, 0.5]]])
    arrays = outputs_to_arrays({"logits": logits, "extra": (hidden, [np.array([7])])})
    assert [a.shape for a in arrays] == [(1, 2), (1, 1, 3), (1,)]
    assert all(a.dtype == np.float64 for a in arrays)
    model_output = outputs_to_arrays(SequenceClassifierOutput(logits=logits, hidden_states=(hidden,)))
    assert [a.shape for a in model_output] == [(1, 2), (1, 1, 3)]  # unset loss/attentions are absent
    assert outputs_to_arrays(torch.tensor([1, 2], dtype=torch.int64))[0].tolist() == [1.0, 2.0]
    assert outputs_to_arrays(torch.tensor([1.5], dtype=torch.bfloat16))[0].tolist() == [1.5]
    # Only the first output (the logits) is compared: a dict on one side, a list on the other, other outputs differing.
    result = compare_outputs([{"logits": logits, "hidden": hidden}], [[logits.numpy(), hidden.numpy() + 1]])
    assert result["max_abs"] == 0.0 and result["top1_agreement"] == 1.0
    with pytest.raises(TypeError, match="object"):
        outputs_to_arrays(object())


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"reference \[2, 4\], candidate \[2, 3\]"):
        compare_outputs([torch.zeros(2, 4)], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="batches"):
        compare_outputs([torch.zeros(2, 4)], [])
    with pytest.raises(ValueError, match="no batches"):
        compare_outputs([], [])


def test_zero_rows_nan_and_json():
    result = compare_outputs([np.zeros((2, 3))], [np.zeros((2, 3))])
    assert result["cosine"] == 1.0 and result["within_tolerance"] is True
    orthogonal = compare_outputs([np.array([[1.0, 0.0]])], [np.array([[0.0, 1.0]])])
    assert orthogonal["cosine"] == pytest.approx(0.0) and orthogonal["top1_agreement"] == 0.0
    broken = compare_outputs([np.array([[1.0, 2.0]])], [np.array([[np.nan, 2.0]])])
    assert broken["within_tolerance"] is False and broken["max_abs"] is None
    json.dumps(broken, allow_nan=False)  # JSON-able: no NaN sneaks through
    json.dumps(result, allow_nan=False)
