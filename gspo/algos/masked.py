"""Masked reductions over padded (batch, response_len) tensors.

``mask`` is a 0/1 tensor (float or bool) broadcastable to ``values``. Padded
positions never leak into a result: they are selected away with
``torch.where`` before the multiply, so a non-finite value under a zero mask
cannot turn a sum into NaN.
"""

from __future__ import annotations

import torch

__all__ = ["masked_sum", "masked_mean"]


def _as_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not like.is_floating_point():
        raise TypeError(f"values must be a floating tensor, got {like.dtype}")
    return mask.to(dtype=like.dtype, device=like.device)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask)`` over ``dim`` (all elements when ``dim`` is None).

    Args:
        values: floating tensor, e.g. (B, T).
        mask: 0/1 tensor broadcastable to ``values``.
        dim: reduction dimension, or None for a full reduction to a scalar.

    Returns:
        Scalar when ``dim`` is None, else ``values`` with ``dim`` removed.
    """
    weights = _as_weights(mask, values)
    # where() first: 0 * inf would be NaN, and padding may hold -inf log-probs.
    weighted = torch.where(weights != 0, values, torch.zeros_like(values)) * weights
    return weighted.sum() if dim is None else weighted.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / max(1, sum(mask))`` over ``dim``.

    The denominator is clamped at 1, so an all-masked slice gives 0, never NaN.

    >>> import torch
    >>> masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]), dim=-1)
    tensor([2., 5.])
    """
    weights = _as_weights(mask, values)
    total = masked_sum(values, weights, dim)
    count = torch.broadcast_to(weights, torch.broadcast_shapes(weights.shape, values.shape))
    count = count.sum() if dim is None else count.sum(dim=dim)
    return total / count.clamp(min=1.0)
