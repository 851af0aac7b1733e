from __future__ import annotations

import pytest
import torch

from gspo.data import PromptSampler


def test_deterministic_for_seed():
    a = PromptSampler(10, seed=3).take(25)
    b = PromptSampler(10, seed=3).take(25)
    assert a == b
    assert a != PromptSampler(10, seed=4).take(25)


def test_epoch_is_permutation_from_seed_plus_epoch():
    s = PromptSampler(7, seed=11)
    first, second = s.take(7), s.take(7)
    assert first == torch.randperm(7, generator=torch.Generator().manual_seed(11)).tolist()
    assert second == torch.randperm(7, generator=torch.Generator().manual_seed(12)).tolist()
    assert sorted(first) == sorted(second) == list(range(7))


def test_take_crosses_epoch_boundary():
    s = PromptSampler(5, seed=0)
    full = s.epoch_order(0) + s.epoch_order(1) + s.epoch_order(2)
    assert s.take(3) == full[:3]
    assert (s.epoch, s.position) == (0, 3)
    assert s.take(4) == full[3:7]
    assert (s.epoch, s.position) == (1, 2)
    assert s.take(3) == full[7:10]
    assert (s.epoch, s.position) == (2, 0)  # exactly at a boundary rolls over
    assert s.take(0) == []


def test_take_more_than_one_epoch_at_once():
    s = PromptSampler(3, seed=5)
    out = s.take(8)
    assert out == s.epoch_order(0) + s.epoch_order(1) + s.epoch_order(2)[:2]
    assert (s.epoch, s.position) == (2, 2)


def test_shuffle_false_is_sequential():
    s = PromptSampler(4, seed=123, shuffle=False)
    assert s.take(10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_state_dict_resume_equality():
    ref = PromptSampler(9, seed=42)
    expected = ref.take(40)

    s = PromptSampler(9, seed=42)
    head = s.take(13)
    state = s.state_dict()
    assert state == {"epoch": 1, "position": 4, "seed": 42, "num_items": 9, "shuffle": True}

    resumed = PromptSampler(9, seed=0)  # the saved seed wins
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.position, resumed.seed) == (1, 4, 42)
    assert head + resumed.take(27) == expected
    assert s.take(27) == expected[13:]  # taking after state_dict() is unaffected


def test_load_state_dict_rejects_other_dataset_size():
    state = PromptSampler(9, seed=1).state_dict()
    with pytest.raises(ValueError, match="num_items=9"):
        PromptSampler(10, seed=1).load_state_dict(state)


@pytest.mark.parametrize("kwargs", [{"num_items": 0, "seed": 0}, {"num_items": 3, "seed": "0"}])
def test_invalid_args(kwargs):
    with pytest.raises(ValueError):
        PromptSampler(**kwargs)


def test_negative_take():
    with pytest.raises(ValueError, match="k must be"):
        PromptSampler(3, seed=0).take(-1)
