from __future__ import annotations

import pytest

from gspo.rewards import addition_reward, get_reward_fn


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected"),
    [
        ("579", "579", 1.0),
        ("  579\n", "579", 1.0),
        ("5 79", "579", 0.0),
        ("0579", "579", 0.0),
        ("", "579", 0.0),
        ("-3", "-3", 1.0),
    ],
)
def test_addition(response, ground_truth, expected):
    assert addition_reward(response, ground_truth, {}) == expected


def test_registered():
    assert get_reward_fn("addition") is addition_reward


def test_missing_ground_truth():
    with pytest.raises(ValueError, match="needs a ground truth"):
        addition_reward("1", None, {})
