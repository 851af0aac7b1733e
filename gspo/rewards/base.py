"""Reward function contract and output normalisation.

A reward function is ``fn(response_text, ground_truth, extra_info) -> float | dict``.
A dict must hold ``"score"`` and may hold ``"acc"`` and other numeric extras.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gspo.errors import InputError

RewardFn = Callable[[str, str | None, dict], float | dict]

RESPONSE_PREVIEW_CHARS = 200


class RewardError(InputError):
    """A reward function is missing, failed, or returned an unusable value."""


@dataclass(frozen=True)
class RewardOutput:
    """A normalised reward for one response.

    Attributes:
        score: the reward (finite float).
        acc: accuracy in the reward's own sense; equals ``score`` when the
            function returned a plain number (a plain-number reward is its own accuracy).
        extras: other finite numeric entries of a dict reward, as floats.
    """

    score: float
    acc: float
    extras: dict[str, float] = field(default_factory=dict)


def preview(text: str, limit: int = RESPONSE_PREVIEW_CHARS) -> str:
    """``repr`` of the first ``limit`` characters of ``text``, marked when cut.

    >>> preview("abc")
    "'abc'"
    >>> preview("abcdef", limit=3)
    "'abc'... (6 chars)"
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"


def as_number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (bool, int, float, numpy/torch scalar), else None.

    >>> as_number(True), as_number(np.float32(0.5)), as_number("1")
    (1.0, 0.5, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return float(value)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_complex:
        return float(value.item())
    return None


def normalize_reward(value: Any, *, fn_name: str, response_text: str) -> RewardOutput:
    """Validate a reward function's return value and convert it to :class:`RewardOutput`.

    Accepts a real number (bool/int/float/numpy scalar/0-d tensor) or a dict
    with a numeric ``"score"``; ``"acc"`` defaults to the score. Non-numeric
    extras (e.g. a predicted answer string) are dropped, as are non-finite ones.

    >>> normalize_reward(1, fn_name="f", response_text="r")
    RewardOutput(score=1.0, acc=1.0, extras={})
    >>> normalize_reward({"score": 0.5, "acc": False, "pred": "7", "len": 3}, fn_name="f", response_text="r")
    RewardOutput(score=0.5, acc=0.0, extras={'len': 3.0})

    Raises:
        RewardError: missing/non-numeric/non-finite score or acc; names the
            function and shows a prefix of the response.
    """

    def fail(problem: str) -> RewardError:
        return RewardError(f"reward function {fn_name!r} {problem}; response: {preview(response_text)}")

    if isinstance(value, dict):
        if "score" not in value:
            raise fail(f"returned a dict without a 'score' key (keys: {sorted(map(str, value))})")
        score = _finite(value["score"], "score", fail)
        acc = _finite(value["acc"], "acc", fail) if "acc" in value else score
        extras: dict[str, float] = {}
        for key, v in value.items():
            if key in ("score", "acc"):
                continue
            num = as_number(v)
            if num is not None and math.isfinite(num):
                extras[str(key)] = num
        return RewardOutput(score=score, acc=acc, extras=extras)
    score = _finite(value, "score", fail)
    return RewardOutput(score=score, acc=score)


def _finite(value: Any, what: str, fail: Callable[[str], RewardError]) -> float:
    num = as_number(value)
    if num is None:
        raise fail(f"returned a non-numeric {what}: {type(value).__name__} {value!r:.100}")
    if not math.isfinite(num):
        raise fail(f"returned a non-finite {what}: {num}")
    return num
