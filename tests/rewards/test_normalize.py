from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gspo.rewards import RewardError, RewardOutput, normalize_reward


def norm(value, response="the response"):
    return normalize_reward(value, fn_name="my_reward", response_text=response)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, RewardOutput(1.0, 1.0)),
        (0.25, RewardOutput(0.25, 0.25)),
        (True, RewardOutput(1.0, 1.0)),
        (np.float32(0.5), RewardOutput(0.5, 0.5)),
        (np.int64(-1), RewardOutput(-1.0, -1.0)),
        (np.bool_(False), RewardOutput(0.0, 0.0)),
        (np.array(2.0), RewardOutput(2.0, 2.0)),
        (torch.tensor(0.5), RewardOutput(0.5, 0.5)),
        ({"score": 0.5}, RewardOutput(0.5, 0.5)),  # acc defaults to score
        ({"score": -1.0, "acc": 0.0}, RewardOutput(-1.0, 0.0)),
        (
            {"score": 1, "acc": True, "format": 1, "pred": "72", "bad": math.nan},
            RewardOutput(1.0, 1.0, {"format": 1.0}),
        ),
    ],
)
def test_valid(value, expected):
    out = norm(value)
    assert out == expected
    assert all(isinstance(v, float) for v in (out.score, out.acc, *out.extras.values()))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (math.nan, "non-finite score: nan"),
        (math.inf, "non-finite score: inf"),
        (np.float64("nan"), "non-finite score"),
        ("1.0", "non-numeric score: str"),
        (None, "non-numeric score: NoneType"),
        ([1.0], "non-numeric score: list"),
        (1 + 2j, "non-numeric score: complex"),
        (torch.tensor([1.0, 2.0]), "non-numeric score: Tensor"),
        ({"acc": 1.0}, r"without a 'score' key \(keys: \['acc'\]\)"),
        ({"score": "high"}, "non-numeric score"),
        ({"score": 1.0, "acc": math.nan}, "non-finite acc"),
    ],
)
def test_invalid(value, match):
    with pytest.raises(RewardError, match=match) as info:
        norm(value, response="x" * 1000)
    message = str(info.value)
    assert "'my_reward'" in message
    assert "x" * 200 in message and "x" * 201 not in message
    assert "(1000 chars)" in message
