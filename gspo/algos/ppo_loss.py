"""Token-level PPO/GRPO clipped policy loss with dual clip (verl's "vanilla" mode)."""

from __future__ import annotations

import torch

from .loss_metrics import clip_metrics, ratio_spread_metrics
from .masked import masked_mean
from .registry import register_policy_loss

__all__ = ["compute_policy_loss_vanilla"]

_LOG_RATIO_BOUND = 20.0


@register_policy_loss("vanilla")
def compute_policy_loss_vanilla(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level PPO/GRPO clipped loss with dual clip (Schulman et al. 2017; Ye et al. 2020).

    Per token::

        r    = exp(clamp(log_prob - old_log_prob, -20, 20))
        l1   = -A * r
        l2   = -A * clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high)
        lc   = max(l1, l2)
        l3   = -A * clip_ratio_c
        l    = min(l3, lc) if A < 0 else lc      # dual clip bounds the loss for A < 0
        (returned: l, the (B, T) per-token loss; compute_policy_loss aggregates it)

    Extra metrics: ``actor/pg_clipfrac_dual``, the masked token share with
    ``A < 0`` and ``l3 < lc``; ``actor/token_importance_ratio_{min,max}`` over the
    response tokens; and, to compare with GSPO, the sequence-level ratio
    ``s_i = exp(mean_t log r_it)`` as ``actor/seq_importance_ratio{,_min,_max}``.
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for the dual clip, got {clip_ratio_c}")
    mask = response_mask
    # The clamp keeps exp() finite; |log-ratio| = 20 is already far outside any clip range.
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-_LOG_RATIO_BOUND, max=_LOG_RATIO_BOUND)
    ratio = torch.exp(negative_approx_kl)

    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.minimum(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)

    with torch.no_grad():
        metrics = {"actor/ppo_kl": masked_mean(old_log_prob - log_prob, mask)}
        metrics.update(clip_metrics(pg_losses1, pg_losses2, ratio, mask))
        dual = (advantages < 0) & (pg_losses3 < clip_pg_losses1)
        metrics["actor/pg_clipfrac_dual"] = masked_mean(dual.to(mask.dtype), mask)
        metrics.update(ratio_spread_metrics(negative_approx_kl, mask))
    return pg_losses, metrics
