"""Reward for the embedded addition and sums tasks: exact match of the stripped response."""

from __future__ import annotations

from gspo.rewards.registry import register_reward


@register_reward("addition", "sums")
def addition_reward(response_text: str, ground_truth: str | None, extra_info: dict) -> float:
    """1.0 if the response, stripped of surrounding whitespace, equals the ground truth, else 0.0.

    >>> addition_reward(" 579\\n", "579", {})
    1.0
    >>> addition_reward("579.", "579", {})
    0.0
    >>> addition_reward("The sum is 579", "579", {})
    0.0
    """
    if ground_truth is None:
        raise ValueError("addition_reward needs a ground truth answer, got None")
    return 1.0 if response_text.strip() == str(ground_truth).strip() else 0.0
