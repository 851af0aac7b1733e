"""Reward functions, their registry, output normalisation, overlong shaping and batch scoring.

Importing this package registers the built-in rewards ("openai/gsm8k", "gsm8k", "addition", and the math-verify
rewards of :mod:`gspo.rewards.math`: "math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval",
"HuggingFaceH4/MATH-500", "math_dapo", "aime*").
"""

# Imported for their registration side effect.
from gspo.rewards.addition import addition_reward
from gspo.rewards.base import RewardError, RewardFn, RewardOutput, normalize_reward
from gspo.rewards.gsm8k import extract_solution, gsm8k_reward
from gspo.rewards.manager import RewardBatch, RewardManager
from gspo.rewards.math import dapo_math_reward, math_reward
from gspo.rewards.registry import (
    get_reward_fn,
    load_custom_reward,
    register_reward,
    register_reward_prefix,
    registered_rewards,
)
from gspo.rewards.shaping import check_overlong_args, overlong_penalty

__all__ = [
    "RewardBatch",
    "RewardError",
    "RewardFn",
    "RewardManager",
    "RewardOutput",
    "addition_reward",
    "dapo_math_reward",
    "check_overlong_args",
    "extract_solution",
    "get_reward_fn",
    "gsm8k_reward",
    "load_custom_reward",
    "math_reward",
    "normalize_reward",
    "overlong_penalty",
    "register_reward",
    "register_reward_prefix",
    "registered_rewards",
]
