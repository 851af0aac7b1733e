"""Clipped policy-gradient losses: GSPO (sequence-level) and vanilla PPO/GRPO (token-level).

Registry in the style of verl's ``core_algos``: ``POLICY_LOSSES`` maps a name
to a loss function; ``register_policy_loss(name)`` adds one;
``compute_policy_loss(..., loss_mode=name)`` dispatches. Every registered
function takes ``(old_log_prob, log_prob, advantages, response_mask)``
positionally and the keyword arguments of ``compute_policy_loss`` (minus
``loss_mode``), and returns ``(loss, metrics)`` with ``metrics`` a dict of
python floats.

Shapes: all four tensors are (B, T); log-probs are natural-log probabilities
of the sampled tokens; ``response_mask`` is 0/1.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Dict, Optional

import torch

from .aggregation import Count, agg_loss, check_loss_agg_mode
from .masked import masked_mean, masked_sum

__all__ = ["POLICY_LOSSES", "register_policy_loss", "get_policy_loss_fn", "compute_policy_loss"]

PolicyLossFn = Callable[..., "tuple[torch.Tensor, Dict[str, float]]"]

POLICY_LOSSES: Dict[str, PolicyLossFn] = {}

# exp(10) ~ 2.2e4: large enough never to bind for a sane policy, small enough
# that exp() and its gradient stay finite for any log-ratio.
_GSPO_MAX_LOG_RATIO = 10.0
_VANILLA_LOG_RATIO_BOUND = 20.0
# Modes in which a sequence's weight grows with its length (see _gspo docstring).
_LENGTH_WEIGHTED_MODES = frozenset({"token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"})


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator registering ``fn`` under ``name`` in ``POLICY_LOSSES``; duplicates raise ValueError."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn

    return decorator


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """The registered loss called ``name``; unknown names raise ValueError listing the choices."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss_mode {name!r}; choose one of {sorted(POLICY_LOSSES)}") from None


def compute_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    loss_mode: str = "gspo",
    clip_ratio_low: float = 3e-4,
    clip_ratio_high: float = 4e-4,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "seq-mean-token-mean",
    global_num_tokens: Count = None,
    global_num_seqs: Count = None,
    max_response_len: Optional[int] = None,
) -> "tuple[torch.Tensor, Dict[str, float]]":
    """Policy-gradient loss ``loss_mode`` (a key of ``POLICY_LOSSES``) and its metrics.

    Args:
        old_log_prob: (B, T) log-probs of the sampled tokens under the behaviour policy.
        log_prob: (B, T) log-probs under the current policy (carries the gradient).
        advantages: (B, T) advantages (constant along T for GRPO/GSPO).
        response_mask: (B, T) 0/1 mask of response tokens.
        loss_mode: registry key, ``"gspo"`` or ``"vanilla"`` unless more are registered.
        clip_ratio_low, clip_ratio_high: the ratio is clipped to
            ``[1 - clip_ratio_low, 1 + clip_ratio_high]``. The defaults are the
            GSPO paper's sequence-level range (3e-4, 4e-4); token-level PPO
            typically uses 0.2 / 0.28.
        clip_ratio_c: dual-clip constant (vanilla only), must be > 1.
        loss_agg_mode, global_num_tokens, global_num_seqs, max_response_len:
            passed to ``agg_loss``.

    Returns:
        ``(loss, metrics)``: 0-dim loss tensor and a dict of python floats
        (``actor/pg_loss``, ``actor/ppo_kl``, ``actor/pg_clipfrac``,
        ``actor/pg_clipfrac_lower``, ``actor/pg_clipfrac_upper`` plus mode-specific keys).
    """
    fn = get_policy_loss_fn(loss_mode)
    check_loss_agg_mode(loss_agg_mode)
    shapes = {t.shape for t in (old_log_prob, log_prob, advantages, response_mask)}
    if len(shapes) != 1 or log_prob.dim() != 2:
        raise ValueError(
            "old_log_prob, log_prob, advantages and response_mask must share one (batch, response_len) "
            f"shape; got {[tuple(t.shape) for t in (old_log_prob, log_prob, advantages, response_mask)]}"
        )
    if clip_ratio_low < 0 or clip_ratio_high < 0:
        raise ValueError(f"clip ratios must be >= 0, got low={clip_ratio_low} high={clip_ratio_high}")
    return fn(
        old_log_prob,
        log_prob,
        advantages,
        response_mask.to(dtype=log_prob.dtype),
        clip_ratio_low=clip_ratio_low,
        clip_ratio_high=clip_ratio_high,
        clip_ratio_c=clip_ratio_c,
        loss_agg_mode=loss_agg_mode,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        max_response_len=max_response_len,
    )


@functools.lru_cache(maxsize=None)
def _warn_length_weighted_gspo(loss_agg_mode: str) -> None:
    # lru_cache makes this once per process per mode, independent of warning filters.
    warnings.warn(
        f"GSPO with loss_agg_mode={loss_agg_mode!r} weights each sequence by its length; the GSPO "
        "objective (arXiv:2507.18671 eq. 5) averages length-normalised sequence terms, i.e. "
        "'seq-mean-token-mean'.".replace("2507.18671", "2507.18071"),
        UserWarning,
        stacklevel=4,
    )


def _clip_metrics(
    pg_losses1: torch.Tensor, pg_losses2: torch.Tensor, ratio: torch.Tensor, mask: torch.Tensor
) -> Dict[str, torch.Tensor]:
    clipped = pg_losses2 > pg_losses1
    as_float = lambda b: b.to(mask.dtype)  # noqa: E731
    return {
        "actor/pg_clipfrac": masked_mean(as_float(clipped), mask),
        "actor/pg_clipfrac_lower": masked_mean(as_float(clipped & (ratio < 1.0)), mask),
        "actor/pg_clipfrac_upper": masked_mean(as_float(clipped & (ratio > 1.0)), mask),
    }


def _to_floats(metrics: Dict[str, torch.Tensor]) -> Dict[str, float]:
    return {k: float(v.item()) for k, v in metrics.items()}


@register_policy_loss("gspo")
def compute_policy_loss_gspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float,
    loss_agg_mode: str,
    global_num_tokens: Count,
    global_num_seqs: Count,
    max_response_len: Optional[int],
) -> "tuple[torch.Tensor, Dict[str, float]]":
    """GSPO loss (Zheng et al. 2025, arXiv:2507.18071, eqs. 5-7 and 10-11).

    Per sequence ``i`` with ``|y_i| = max(1, sum_t M_it)``::

        L_i   = sum_t M_it * (log_prob_it - old_log_prob_it) / |y_i|
        s_i   = exp(L_i)                                  # eq. 7, length-normalised
        r_it  = exp(min(10, log_prob_it - sg[log_prob_it] + sg[L_i]))
        l_it  = max(-A_it * r_it, -A_it * clip(r_it, 1 - clip_ratio_low, 1 + clip_ratio_high))
        loss  = agg_loss(l, M, loss_agg_mode)

    ``sg`` is stop-gradient. The VALUE of ``r_it`` is ``s_i`` for every token
    and its gradient is ``s_i * grad log_prob_it``. With a per-sequence
    constant advantage ``A_i`` and ``seq-mean-token-mean`` the loss is
    ``mean_i max(-A_i s_i, -A_i clip(s_i))`` and its gradient is exactly GSPO's
    (eq. 10), because ``grad s_i = s_i * mean_t grad log_prob_it``. With
    per-token advantages it is GSPO-token (eq. 13-14), so one mode serves both.
    The clip decision is per sequence (every token shares ``s_i``).

    The clamp at 10 keeps ``exp`` and its gradient finite for extreme ratios
    (beyond it the gradient is 0). Clipping only acts off-policy: on-policy
    ``L_i == 0`` exactly, so ``s_i == 1``. ``clip_ratio_c`` is ignored.

    Modes that weight a sequence by its length (``token-mean``,
    ``seq-mean-token-sum``, ``seq-mean-token-sum-norm``) are allowed but warn
    once per process per mode.

    Extra metrics: ``actor/seq_importance_ratio`` (mean of ``s_i``, as
    clamped, over non-empty sequences), ``..._max`` and ``..._min``.
    """
    if loss_agg_mode in _LENGTH_WEIGHTED_MODES:
        _warn_length_weighted_gspo(loss_agg_mode)
    mask = response_mask
    log_ratio = log_prob - old_log_prob
    tokens_per_seq = mask.sum(dim=-1)
    seq_log_ratio = masked_sum(log_ratio, mask, dim=-1) / tokens_per_seq.clamp(min=1.0)  # L_i, (B,)

    log_seq_ratio = log_prob - log_prob.detach() + seq_log_ratio.detach().unsqueeze(-1)
    log_seq_ratio = torch.clamp(log_seq_ratio, max=_GSPO_MAX_LOG_RATIO)
    seq_ratio = torch.exp(log_seq_ratio)  # (B, T), value s_i on every token of row i

    pg_losses1 = -advantages * seq_ratio
    pg_losses2 = -advantages * torch.clamp(seq_ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    pg_losses = torch.maximum(pg_losses1, pg_losses2)
    loss = agg_loss(
        pg_losses,
        mask,
        loss_agg_mode,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        max_response_len=max_response_len,
    )

    with torch.no_grad():
        metrics = {"actor/pg_loss": loss.detach(), "actor/ppo_kl": masked_mean(-log_ratio, mask)}
        metrics.update(_clip_metrics(pg_losses1, pg_losses2, seq_ratio, mask))
        valid = tokens_per_seq > 0
        s = torch.exp(torch.clamp(seq_log_ratio, max=_GSPO_MAX_LOG_RATIO))[valid]
        zero = s.new_zeros(())
        metrics["actor/seq_importance_ratio"] = s.mean() if s.numel() else zero
        metrics["actor/seq_importance_ratio_max"] = s.max() if s.numel() else zero
        metrics["actor/seq_importance_ratio_min"] = s.min() if s.numel() else zero
    return loss, _to_floats(metrics)


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
    loss_agg_mode: str,
    global_num_tokens: Count,
    global_num_seqs: Count,
    max_response_len: Optional[int],
) -> "tuple[torch.Tensor, Dict[str, float]]":
    """Token-level PPO/GRPO clipped loss with dual clip (Schulman et al. 2017; Ye et al. 2020).

    Per token::

        r    = exp(clamp(log_prob - old_log_prob, -20, 20))
        l1   = -A * r
        l2   = -A * clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high)
        lc   = max(l1, l2)
        l3   = -A * clip_ratio_c
        l    = min(l3, lc) if A < 0 else lc      # dual clip bounds the loss for A < 0
        loss = agg_loss(l, M, loss_agg_mode)

    Extra metric: ``actor/pg_clipfrac_dual``, the masked token share with
    ``A < 0`` and ``l3 < lc``.
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for the dual clip, got {clip_ratio_c}")
    mask = response_mask
    negative_approx_kl = torch.clamp(
        log_prob - old_log_prob, min=-_VANILLA_LOG_RATIO_BOUND, max=_VANILLA_LOG_RATIO_BOUND
    )
    ratio = torch.exp(negative_approx_kl)

    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.minimum(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    loss = agg_loss(
        pg_losses,
        mask,
        loss_agg_mode,
        global_num_tokens=global_num_tokens,
        global_num_seqs=global_num_seqs,
        max_response_len=max_response_len,
    )

    with torch.no_grad():
        metrics = {
            "actor/pg_loss": loss.detach(),
            "actor/ppo_kl": masked_mean(old_log_prob - log_prob, mask),
        }
        metrics.update(_clip_metrics(pg_losses1, pg_losses2, ratio, mask))
        dual = (advantages < 0) & (pg_losses3 < clip_pg_losses1)
        metrics["actor/pg_clipfrac_dual"] = masked_mean(dual.to(mask.dtype), mask)
    return loss, _to_floats(metrics)
