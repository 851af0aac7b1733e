"""Clip-fraction and importance-ratio metrics the policy losses share."""

from __future__ import annotations

import torch

from .masked import masked_mean

__all__ = ["clip_metrics", "ratio_spread_metrics"]


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


def ratio_spread_metrics(log_ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spread of token-level ratios ``r_it = exp(log_ratio)`` and of sequence ratios ``s_i = exp(mean_t log r_it)``.

    ``actor/token_importance_ratio_{min,max}`` over masked tokens; ``actor/seq_importance_ratio`` (mean over
    non-empty rows) and its ``_min`` / ``_max``. (B, T) in, 0-dim out; zeros when the mask is empty.
    """
    tokens_per_seq = mask.sum(dim=-1)
    seq = torch.exp((log_ratio * mask).sum(dim=-1) / tokens_per_seq.clamp(min=1.0))[tokens_per_seq > 0]
    tok = torch.exp(log_ratio[mask > 0])
    if not tok.numel():
        zero = log_ratio.new_zeros(())
        return {name: zero for name in ("actor/token_importance_ratio_min", "actor/token_importance_ratio_max",
                                        "actor/seq_importance_ratio", "actor/seq_importance_ratio_min",
                                        "actor/seq_importance_ratio_max")}
    return {"actor/token_importance_ratio_min": tok.min(), "actor/token_importance_ratio_max": tok.max(),
            "actor/seq_importance_ratio": seq.mean(), "actor/seq_importance_ratio_min": seq.min(),
            "actor/seq_importance_ratio_max": seq.max()}
