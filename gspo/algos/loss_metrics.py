"""Clip-fraction metrics the policy losses share."""

from __future__ import annotations

import torch

from .masked import masked_mean

__all__ = ["clip_metrics"]


def clip_metrics(
    pg_losses1: torch.Tensor, pg_losses2: torch.Tensor, ratio: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Masked token shares where the clipped term ``pg_losses2`` strictly exceeds ``pg_losses1``.

    ``_lower`` / ``_upper`` split that share by ``ratio < 1`` / ``ratio > 1``.
    With non-negative clip ranges a clipped ratio is never exactly 1, so
    ``pg_clipfrac == pg_clipfrac_lower + pg_clipfrac_upper``. All (B, T) in, 0-dim out.
    """
    clipped = pg_losses2 > pg_losses1
    return {
        "actor/pg_clipfrac": masked_mean(clipped.to(mask.dtype), mask),
        "actor/pg_clipfrac_lower": masked_mean((clipped & (ratio < 1.0)).to(mask.dtype), mask),
        "actor/pg_clipfrac_upper": masked_mean((clipped & (ratio > 1.0)).to(mask.dtype), mask),
    }
