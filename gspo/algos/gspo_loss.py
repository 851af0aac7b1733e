"""GSPO: sequence-level clipped policy loss (Zheng et al. 2025, arXiv:2507.18071)."""

from __future__ import annotations

import functools
import warnings

import torch

from .loss_metrics import clip_metrics
from .masked import masked_mean, masked_sum
from .registry import register_policy_loss

__all__ = ["compute_policy_loss_gspo"]

# exp(10) ~ 2.2e4: large enough never to bind for a sane policy, small enough
# that exp() and its gradient stay finite for any log-ratio.
_MAX_LOG_RATIO = 10.0
# Modes in which a sequence's weight grows with its length.
_LENGTH_WEIGHTED_MODES = frozenset({"token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"})


@functools.cache
def _warn_length_weighted_gspo(loss_agg_mode: str) -> None:
    # lru_cache makes this once per process per mode, independent of warning filters.
    warnings.warn(
        f"GSPO with loss_agg_mode={loss_agg_mode!r} weights each sequence by its length; the GSPO "
        "objective (arXiv:2507.18071, Sec. 4.1) averages length-normalised sequence terms, i.e. "
        "'seq-mean-token-mean'.",
        UserWarning,
        stacklevel=4,
    )


def _warn_if_length_weighted(loss_agg_mode: str) -> None:
    if loss_agg_mode in _LENGTH_WEIGHTED_MODES:
        _warn_length_weighted_gspo(loss_agg_mode)


@register_policy_loss("gspo", check_agg_mode=_warn_if_length_weighted)
def compute_policy_loss_gspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float,
    clip_ratio_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO loss (Zheng et al. 2025, arXiv:2507.18071, Sec. 4).

    Per sequence ``i`` with ``|y_i| = max(1, sum_t M_it)``::

        L_i   = sum_t M_it * (log_prob_it - old_log_prob_it) / |y_i|
        s_i   = exp(L_i)                 # Sec. 4.1: length-normalised sequence ratio
        r_it  = exp(min(10, log_prob_it - sg[log_prob_it] + sg[L_i]))
        l_it  = max(-A_it * r_it, -A_it * clip(r_it, 1 - clip_ratio_low, 1 + clip_ratio_high))
        (returned: l, the (B, T) per-token loss; compute_policy_loss aggregates it)

    ``sg`` is stop-gradient. The VALUE of ``r_it`` is ``s_i`` for every token
    and its gradient is ``s_i * grad log_prob_it``. With a per-sequence
    constant advantage ``A_i`` and ``seq-mean-token-mean`` the loss is
    ``mean_i max(-A_i s_i, -A_i clip(s_i))`` and its gradient is exactly GSPO's
    (Sec. 4.2), because ``grad s_i = s_i * mean_t grad log_prob_it``. With
    per-token advantages it is GSPO-token (Sec. 4.3), so one mode serves both.
    The clip decision is per sequence (every token shares ``s_i``).

    The clamp at 10 keeps ``exp`` and its gradient finite for extreme ratios
    (beyond it the gradient is 0). Clipping only acts off-policy: on-policy
    ``L_i == 0`` exactly, so ``s_i == 1``. There is no dual clip (``clip_ratio_c`` is not an argument).

    Modes that weight a sequence by its length (``token-mean``,
    ``seq-mean-token-sum``, ``seq-mean-token-sum-norm``) are allowed but warn
    once per process per mode (the registry's ``check_agg_mode`` hook).

    Extra metrics: ``actor/seq_importance_ratio`` (mean of ``s_i``, as
    clamped, over non-empty sequences), ``..._max`` and ``..._min``.
    """
    mask = response_mask
    log_ratio = log_prob - old_log_prob
    tokens_per_seq = mask.sum(dim=-1)
    seq_log_ratio = masked_sum(log_ratio, mask, dim=-1) / tokens_per_seq.clamp(min=1.0)  # L_i, (B,)

    log_seq_ratio = log_prob - log_prob.detach() + seq_log_ratio.detach().unsqueeze(-1)
    log_seq_ratio = torch.clamp(log_seq_ratio, max=_MAX_LOG_RATIO)
    seq_ratio = torch.exp(log_seq_ratio)  # (B, T), value s_i on every token of row i

    pg_losses1 = -advantages * seq_ratio
    pg_losses2 = -advantages * torch.clamp(seq_ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    pg_losses = torch.maximum(pg_losses1, pg_losses2)

    with torch.no_grad():
        metrics = {"actor/ppo_kl": masked_mean(-log_ratio, mask)}
        metrics.update(clip_metrics(pg_losses1, pg_losses2, seq_ratio, mask))
        valid = tokens_per_seq > 0
        s = torch.exp(torch.clamp(seq_log_ratio, max=_MAX_LOG_RATIO))[valid]
        zero = s.new_zeros(())
        metrics["actor/seq_importance_ratio"] = s.mean() if s.numel() else zero
        metrics["actor/seq_importance_ratio_max"] = s.max() if s.numel() else zero
        metrics["actor/seq_importance_ratio_min"] = s.min() if s.numel() else zero
    return pg_losses, metrics
