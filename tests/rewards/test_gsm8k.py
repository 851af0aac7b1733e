from __future__ import annotations

import pytest

from gspo.rewards import extract_solution, get_reward_fn, gsm8k_reward


@pytest.mark.parametrize(
    ("response", "ground_truth", "method", "score"),
    [
        ("3 + 4 = 72\n#### 72", "72", "strict", 1.0),
        ("#### 1,234", "1234", "strict", 1.0),
        ("#### 1234", "1,234", "strict", 1.0),  # ground truth normalised the same way
        ("#### $10", "10", "strict", 1.0),
        ("#### -5", "-5", "strict", 1.0),
        ("#### -5", "5", "strict", 0.0),
        ("#### 72.", "72", "strict", 1.0),
        ("#### 72.5", "72", "strict", 0.0),
        ("#### 18.00", "18", "strict", 1.0),  # same number written with decimals
        ("#### 2.50", "2.5", "strict", 1.0),
        ("#### 18.01", "18", "strict", 0.0),
        ("#### 180", "18", "strict", 0.0),  # only zeros after a decimal point are dropped
        ("#### $18", "18", "strict", 1.0),
        ("She pays $18 in total.", "18", "flexible", 1.0),
        ("#### 71\nwait, no\n#### 72", "72", "strict", 1.0),  # last match wins
        ("I think it is 72", "72", "strict", 0.0),  # strict ignores a number without ####
        ("####72", "72", "strict", 0.0),  # verl's format requires the space
        ("no answer here", "72", "strict", 0.0),
        ("", "72", "flexible", 0.0),
        ("first 12, then 72", "72", "flexible", 1.0),
        ("72 then 12", "72", "flexible", 0.0),  # flexible picks the last number
        ("it costs $1,000.", "1000", "flexible", 1.0),
        ("the answer is -3...", "-3", "flexible", 1.0),
        ("#### 72", "#### 72", "strict", 1.0),  # a full reference solution is reduced to its answer
    ],
)
def test_gsm8k_table(response, ground_truth, method, score):
    assert gsm8k_reward(response, ground_truth, {"method": method}) == {"score": score, "acc": score}


@pytest.mark.parametrize(
    ("text", "method", "expected"),
    [
        ("#### 72", "strict", "72"),
        ("#### $1,234.", "strict", "1234"),
        ("x = 5, y = 6.", "flexible", "6"),
        ("just words, and dots...", "flexible", None),
        ("nothing", "strict", None),
    ],
)
def test_extract_solution(text, method, expected):
    assert extract_solution(text, method) == expected


def test_default_method_is_strict():
    assert gsm8k_reward("it is 72", "72", {})["score"] == 0.0


def test_invalid_method():
    with pytest.raises(ValueError, match="method must be one of"):
        gsm8k_reward("#### 1", "1", {"method": "fuzzy"})


def test_missing_ground_truth():
    with pytest.raises(ValueError, match="needs a ground truth"):
        gsm8k_reward("#### 1", None, {})


def test_registered_names():
    assert get_reward_fn("openai/gsm8k") is gsm8k_reward
    assert get_reward_fn("gsm8k") is gsm8k_reward
