import pytest
import torch

from gspo.algos import (
    SAME_VALUE_TOLERANCE,
    changed_row_mask,
    failed_group_mask,
    informative_group_mask,
    informative_row_mask,
)

F64 = torch.float64


def test_dapo_rule_with_non_contiguous_groups():
    # id 4: [1, 1, 1] all equal -> drop; id 2: [0, 1] mixed -> keep; id 9: singleton -> keep;
    # id 6: [0, 0] all-zero -> drop.
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 0.0], dtype=F64)
    ids = torch.tensor([4, 2, 4, 2, 9, 6, 4, 6])
    keep = informative_row_mask(values, ids)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [False, True, False, True, True, False, False, False]
    unique_ids, informative = informative_group_mask(values, ids)
    assert unique_ids.tolist() == [2, 4, 6, 9]
    assert informative.tolist() == [True, False, False, True]


def test_float_noise_does_not_keep_an_all_equal_group():
    a = 0.1 + 0.2  # 0.30000000000000004
    values = torch.tensor([a, 0.3], dtype=F64)
    ids = torch.tensor([0, 0])
    assert values[0] != values[1]
    assert informative_row_mask(values, ids).tolist() == [False, False]
    # A strict std > 0 test would keep it: that is what the tolerance is for.
    assert informative_row_mask(values, ids, tolerance=0.0).tolist() == [True, True]


def test_exactly_equal_group_is_dropped_even_with_zero_tolerance():
    values = torch.tensor([0.1, 0.1, 0.1], dtype=F64)
    assert informative_row_mask(values, torch.tensor([1, 1, 1]), tolerance=0.0).tolist() == [False] * 3


def test_uses_population_std():
    # [0, 1.8e-6]: population std 0.9e-6 <= 1e-6 -> drop (unbiased std 1.27e-6 would keep it).
    values = torch.tensor([0.0, 1.8e-6], dtype=F64)
    assert informative_row_mask(values, torch.tensor([3, 3])).tolist() == [False, False]
    # [0, 2.2e-6]: population std 1.1e-6 > 1e-6 -> keep.
    values = torch.tensor([0.0, 2.2e-6], dtype=F64)
    assert informative_row_mask(values, torch.tensor([3, 3])).tolist() == [True, True]


def test_singleton_kept_even_when_zero():
    assert informative_row_mask(torch.tensor([0.0, 0.0]), torch.tensor([1, 2])).tolist() == [True, True]


def test_integer_metrics_and_errors():
    keep = informative_row_mask(torch.tensor([1, 0, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert keep.tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        informative_row_mask(torch.zeros(3), torch.zeros(3, dtype=torch.long), tolerance=-1.0)
    with pytest.raises(ValueError):
        informative_row_mask(torch.zeros(3), torch.zeros(2, dtype=torch.long))


def test_empty_batch():
    keep = informative_row_mask(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.shape == (0,) and keep.dtype == torch.bool


def test_failed_means_no_response_solved_the_prompt():
    # id 3: accuracies [0, 0] -> failed; id 1: [0, 0.5] partial credit solves it; id 8: [1, 1] solved.
    ids, failed = failed_group_mask(torch.tensor([0.0, 0.5, 0.0, 1.0, 1.0, 0.0]), torch.tensor([3, 1, 3, 8, 8, 1]))
    assert ids.tolist() == [1, 3, 8] and failed.tolist() == [False, True, False]
    ids, failed = failed_group_mask(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 2]))  # integer accuracies
    assert failed.tolist() == [True, False]


def test_changed_rows_use_the_keep_rules_tolerance():
    # Group 5 holds one value 1.1e-6 away from its reference (> 1e-6: changed, every row of the group); group 2
    # only 0.9e-6 away (agrees); group 7 agrees exactly.
    values = torch.tensor([1.0, 1.0 + 1.1e-6, 0.0, 0.9e-6, 1.0], dtype=F64)
    reference = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0], dtype=F64)
    ids = torch.tensor([5, 5, 2, 2, 7])
    assert changed_row_mask(values, reference, ids).tolist() == [True, True, False, False, False]
    assert SAME_VALUE_TOLERANCE == 1e-6
    assert changed_row_mask(values, reference, ids, tolerance=0.0).tolist() == [True, True, True, True, False]
