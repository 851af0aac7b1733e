import pytest
import torch

from gspo.algos import contiguous_row_order, count_groups, groups_in_order, relabel_groups, rows_of_first_groups

IDS = torch.tensor([7, 3, 7, 9, 3, 1])  # groups in order of first appearance: 7, 3, 9, 1


def test_groups_in_order_of_first_appearance():
    assert groups_in_order(IDS).tolist() == [7, 3, 9, 1]
    assert count_groups(IDS) == 4
    assert groups_in_order(torch.zeros(0, dtype=torch.long)).tolist() == [] and count_groups(torch.zeros(0)) == 0


def test_rows_of_the_first_groups_are_whole_groups():
    assert rows_of_first_groups(IDS, 2).tolist() == [True, True, True, False, True, False]  # groups 7 and 3
    assert rows_of_first_groups(IDS, 0).tolist() == [False] * 6
    assert rows_of_first_groups(IDS, 9).tolist() == [True] * 6


def test_contiguous_row_order_keeps_group_and_row_order():
    order = contiguous_row_order(IDS)
    assert order.tolist() == [0, 2, 1, 4, 3, 5]
    assert IDS[order].tolist() == [7, 7, 3, 3, 9, 1]


def test_relabel_groups_renames_in_order_of_first_appearance():
    assert relabel_groups(IDS, torch.tensor([10, 11, 12, 13])).tolist() == [10, 11, 10, 12, 11, 13]
    with pytest.raises(ValueError, match="3 ids for 4 groups"):
        relabel_groups(IDS, torch.tensor([10, 11, 12]))
