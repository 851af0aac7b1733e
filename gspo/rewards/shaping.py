"""DAPO overlong reward shaping (soft length penalty), pure functions."""

from __future__ import annotations

from typing import overload

import torch


def check_overlong_args(max_response_length: int, buffer_len: int, penalty_factor: float) -> None:
    """Raise ValueError, naming the argument, unless ``0 < buffer_len <= max_response_length`` and factor >= 0."""
    if max_response_length <= 0:
        raise ValueError(f"max_response_length must be > 0, got {max_response_length}")
    if buffer_len <= 0:
        raise ValueError(f"buffer_len must be > 0, got {buffer_len}")
    if buffer_len > max_response_length:
        raise ValueError(
            f"buffer_len ({buffer_len}) must be <= max_response_length ({max_response_length})"
        )
    if penalty_factor < 0:
        raise ValueError(f"penalty_factor must be >= 0, got {penalty_factor}")


@overload
def overlong_penalty(
    response_length: int, *, max_response_length: int, buffer_len: int, penalty_factor: float
) -> float: ...
@overload
def overlong_penalty(
    response_length: torch.Tensor, *, max_response_length: int, buffer_len: int, penalty_factor: float
) -> torch.Tensor: ...
def overlong_penalty(response_length, *, max_response_length, buffer_len, penalty_factor):
    """DAPO soft overlong penalty (<= 0) for responses of ``response_length`` tokens.

    With ``E = max_response_length - buffer_len``: 0 for ``L <= E``, then linear
    down to ``-penalty_factor`` at ``L = max_response_length``:
    ``min(-(L - E) / buffer_len * penalty_factor, 0)``. Lengths beyond the
    maximum are clamped at ``-penalty_factor`` (as in the DAPO paper).

    Args:
        response_length: a python int, or an integer/float tensor of any shape (e.g. (B,)).
        max_response_length, buffer_len: in tokens; ``0 < buffer_len <= max_response_length``.
        penalty_factor: penalty at full length, >= 0.

    Returns:
        a float for an int input, else a float32 tensor shaped like the input.

    >>> [overlong_penalty(n, max_response_length=100, buffer_len=20, penalty_factor=1.0) for n in (50, 80, 90, 100)]
    [0.0, 0.0, -0.5, -1.0]
    >>> overlong_penalty(torch.tensor([80, 95]), max_response_length=100, buffer_len=20, penalty_factor=2.0)
    tensor([ 0.0000, -1.5000])
    """
    check_overlong_args(max_response_length, buffer_len, penalty_factor)
    expected = max_response_length - buffer_len
    if isinstance(response_length, torch.Tensor):
        excess = (response_length.to(torch.float32) - expected).clamp(min=0.0, max=float(buffer_len))
        # "+ 0.0" turns the -0.0 produced for zero excess into 0.0.
        return -(excess / buffer_len) * penalty_factor + 0.0
    excess = min(max(response_length - expected, 0), buffer_len)
    return -excess / buffer_len * penalty_factor + 0.0
