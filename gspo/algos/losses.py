"""Policy-loss entry point: dispatches ``loss_mode`` through ``POLICY_LOSSES`` and aggregates.

Built-in modes: ``gspo`` (gspo_loss.py, sequence-level, Zheng et al. 2025,
arXiv:2507.18071) and ``vanilla`` (ppo_loss.py, token-level PPO/GRPO clip).
Importing this module registers both. A loss returns its per-token loss; this
is the one place that turns it into the scalar with the global counts.
"""

from __future__ import annotations

import torch

from .aggregation import Count, agg_loss, check_loss_agg_mode
from .gspo_loss import compute_policy_loss_gspo  # importing registers "gspo"
from .ppo_loss import compute_policy_loss_vanilla  # importing registers "vanilla"
from .registry import (
    POLICY_LOSSES,
    PolicyLossFn,
    RegisteredLoss,
    describe_loss,
    get_policy_loss_fn,
    register_policy_loss,
)

__all__ = [
    "POLICY_LOSSES",
    "PolicyLossFn",
    "RegisteredLoss",
    "register_policy_loss",
    "get_policy_loss_fn",
    "compute_policy_loss",
    "compute_policy_loss_gspo",
    "compute_policy_loss_vanilla",
]


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    loss_mode: str | PolicyLossFn | RegisteredLoss = "gspo",
    clip_ratio_low: float = 3e-4,
    clip_ratio_high: float = 4e-4,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "seq-mean-token-mean",
    global_num_tokens: Count = None,
    global_num_seqs: Count = None,
    max_response_len: int | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy-gradient loss ``loss_mode`` (a key of ``POLICY_LOSSES``) and its metrics.

    Args:
        old_log_prob: (B, T) log-probs of the sampled tokens under the behaviour policy.
        log_prob: (B, T) log-probs under the current policy (carries the gradient).
        advantages: (B, T) advantages (constant along T for GRPO/GSPO).
        response_mask: (B, T) 0/1 mask of response tokens.
        loss_mode: registry key, ``"gspo"`` or ``"vanilla"`` unless more are registered, or a loss function
            itself (see :mod:`gspo.algos.registry` for the protocol), e.g. one loaded from a file.
        clip_ratio_low, clip_ratio_high: the ratio is clipped to
            ``[1 - clip_ratio_low, 1 + clip_ratio_high]``. The defaults are the
            GSPO paper's sequence-level range (3e-4, 4e-4); token-level PPO
            typically uses 0.2 / 0.28.
        clip_ratio_c: dual-clip constant (vanilla only), must be > 1. Passed only to losses that accept it.
        loss_agg_mode, global_num_tokens, global_num_seqs, max_response_len:
            passed to ``agg_loss``.
        token_weights: (B, T) constant weights multiplying each token's loss before aggregation (the rollout
            correction's importance weights, see :mod:`gspo.algos.rollout_correction`); None = 1.

    Values at masked positions are ignored (replaced by 0 before any
    arithmetic), so padding may hold anything, even -inf, without producing
    NaN in the loss or the gradient.

    Returns:
        ``(loss, metrics)``: 0-dim loss tensor and a dict of python floats
        (``actor/pg_loss``, ``actor/ppo_kl``, ``actor/pg_clipfrac``,
        ``actor/pg_clipfrac_lower``, ``actor/pg_clipfrac_upper`` plus mode-specific keys).
    """
    loss_fn = _resolve(loss_mode)
    check_loss_agg_mode(loss_agg_mode)
    if loss_fn.check_agg_mode is not None:
        loss_fn.check_agg_mode(loss_agg_mode)
    shapes = {t.shape for t in (old_log_prob, log_prob, advantages, response_mask)}
    if len(shapes) != 1 or log_prob.dim() != 2:
        raise ValueError(
            "old_log_prob, log_prob, advantages and response_mask must share one (batch, response_len) "
            f"shape; got {[tuple(t.shape) for t in (old_log_prob, log_prob, advantages, response_mask)]}"
        )
    if clip_ratio_low < 0 or clip_ratio_high < 0:
        raise ValueError(f"clip ratios must be >= 0, got low={clip_ratio_low} high={clip_ratio_high}")
    mask = response_mask.to(dtype=log_prob.dtype, device=log_prob.device)
    keep = mask != 0
    # Zero the padding up front: a non-finite pad value would otherwise reach the
    # backward pass (0 * inf = NaN) even though the forward masks it out.
    old_log_prob, log_prob, advantages = (
        torch.where(keep, t, torch.zeros_like(t)) for t in (old_log_prob, log_prob, advantages)
    )
    hyperparameters = dict(clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high, clip_ratio_c=clip_ratio_c)
    per_token_loss, loss_metrics = loss_fn.fn(
        old_log_prob, log_prob, advantages, mask, **{k: hyperparameters[k] for k in loss_fn.hyperparameters}
    )
    if per_token_loss.shape != log_prob.shape:
        raise ValueError(
            f"policy loss {loss_mode!r} returned a {tuple(per_token_loss.shape)} loss; it must return the "
            f"per-token (batch, response_len) loss {tuple(log_prob.shape)}, which compute_policy_loss aggregates"
        )
    if token_weights is not None:
        per_token_loss = per_token_loss * torch.where(keep, token_weights.detach().to(per_token_loss), 0.0)
    loss = agg_loss(
        per_token_loss,
        mask,
        loss_agg_mode,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        max_response_len=max_response_len,
    )
    metrics = {"actor/pg_loss": float(loss.detach().item())}
    metrics.update({k: float(torch.as_tensor(v).item()) for k, v in loss_metrics.items()})
    return loss, metrics


def _resolve(loss_mode: str | PolicyLossFn | RegisteredLoss) -> RegisteredLoss:
    if isinstance(loss_mode, RegisteredLoss):
        return loss_mode
    if isinstance(loss_mode, str):
        return get_policy_loss_fn(loss_mode)
    return describe_loss(loss_mode)
