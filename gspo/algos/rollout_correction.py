"""The rollout/trainer mismatch: how far the engine's sampling distribution is from the trainer's, and verl's
rollout correction (truncated importance weights from the rollout policy to the old policy).

All inputs are (N, R) over response tokens: ``old_log_probs`` the trainer's recomputed log-probs of the sampled
tokens (pi_old), ``rollout_log_probs`` the engine's (pi_rollout), ``mask`` 1 on response tokens.
"""

from __future__ import annotations

import torch

from .masked import masked_mean, masked_sum

ROLLOUT_IS_LEVELS = ("token", "sequence", "geometric")
# verl's safety bound on the log of an importance weight, so exp() can neither overflow nor vanish to 0.
_LOG_WEIGHT_BOUND = 20.0


MISMATCH_SUMS = ("tokens", "diff", "diff_squared", "sequences", "abs_seq_log_ratio")
"""What :func:`rollout_mismatch_sums` adds up, in order: response tokens, sum and sum of squares of
|pi_old - pi_rollout| over them, sequences with a response token, and the sum over those of
|mean_t (log pi_old - log pi_rollout)|."""


def rollout_mismatch_sums(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor,
                          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mismatch metrics' sufficient statistics over these rows: ((5,) float64 sums named by
    :data:`MISMATCH_SUMS`, (1,) float64 maximum of |pi_old - pi_rollout|, 0 without response tokens).

    Sums and maxima of several ranks' rows add up (all-reduce sum / max) to those of all the rows, so
    :func:`mismatch_metrics_from_sums` gives every rank the batch's metrics from 6 numbers, whatever its size.
    """
    keep = mask > 0
    diff = (old_log_probs.double().exp() - rollout_log_probs.double().exp()).abs()[keep]
    has_tokens = keep.any(-1)
    seq = masked_mean(old_log_probs.double() - rollout_log_probs.double(), mask.double(), dim=-1)[has_tokens]
    sums = torch.stack([keep.sum().double(), diff.sum(), diff.square().sum(), has_tokens.sum().double(),
                        seq.abs().sum()])
    return sums, diff.max().reshape(1) if diff.numel() else torch.zeros(1, dtype=torch.float64)


def mismatch_metrics_from_sums(sums: torch.Tensor, maximum: torch.Tensor) -> dict[str, float]:
    """verl's ``training/rollout_probs_diff_{mean,max,std}`` (std unbiased, as torch.std) and
    ``training/rollout_seq_log_ratio_diff_mean`` from :func:`rollout_mismatch_sums`' statistics (summed over
    ranks); nothing without response tokens."""
    tokens, diff, diff_squared, sequences, abs_seq_log_ratio = sums.tolist()
    if tokens == 0:
        return {}
    mean = diff / tokens
    # Unbiased variance from the sums: (sum x^2 - n mean^2) / (n - 1), clamped at 0 against rounding.
    variance = max(diff_squared - tokens * mean * mean, 0.0) / (tokens - 1) if tokens > 1 else 0.0
    return {"training/rollout_probs_diff_mean": mean,
            "training/rollout_probs_diff_max": float(maximum[0]),
            "training/rollout_probs_diff_std": variance ** 0.5,
            "training/rollout_seq_log_ratio_diff_mean": abs_seq_log_ratio / sequences}


def rollout_mismatch_metrics(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor,
                             mask: torch.Tensor) -> dict[str, float]:
    """verl's ``training/rollout_probs_diff_{mean,max,std}``: |pi_old - pi_rollout| of the sampled tokens in
    probability space over all response tokens (std unbiased, as torch.std); plus
    ``training/rollout_seq_log_ratio_diff_mean``: mean over sequences of |mean_t (log pi_old - log pi_rollout)|,
    the error GSPO's sequence log-ratio ``(1/|y|) sum_t log(pi_theta / pi_old)`` would carry if the rollout
    log-probs stood in for the old ones. Over one process's rows; across ranks, all-reduce
    :func:`rollout_mismatch_sums` and call :func:`mismatch_metrics_from_sums`.

    >>> m = rollout_mismatch_metrics(torch.log(torch.tensor([[0.5, 0.2]])), torch.log(torch.tensor([[0.4, 0.2]])),
    ...                              torch.ones(1, 2))
    >>> round(m["training/rollout_probs_diff_mean"], 6), round(m["training/rollout_probs_diff_max"], 6)
    (0.05, 0.1)
    """
    return mismatch_metrics_from_sums(*rollout_mismatch_sums(old_log_probs, rollout_log_probs, mask))


def rollout_importance_weights(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, mask: torch.Tensor,
                               *, level: str, threshold: float) -> torch.Tensor:
    """(N, R) truncated importance weights pi_old / pi_rollout (detached, 0 at padding), verl's ``rollout_is``.

    ``token``: w_t = min(exp(log pi_old_t - log pi_rollout_t), threshold), one per token (for token-level losses).
    ``sequence``: w = min(exp(sum_t (log pi_old_t - log pi_rollout_t)), threshold), the sequence's product of
    token ratios, broadcast over its tokens. Over thousands of tokens of a bf16 engine against an fp32 trainer the
    product drifts to the threshold or towards 0.
    ``geometric``: w = min(exp((1/|y|) sum_t (log pi_old_t - log pi_rollout_t)), threshold), the geometric mean of
    the token ratios over the response mask, broadcast over its tokens: the length-normalised ratio GSPO's own
    importance ratio uses (Zheng et al. 2025, arXiv 2507.18071), so it is the level for GSPO. verl defines the
    same weight (``exp(masked_mean(log_ratio))``); its current releases apply it by rejection only
    (``rollout_rs``), its earlier ones also truncated it as here (``rollout_is_level=geometric``,
    ``rollout_is_mode=truncate``).
    Log-weights are clamped to [-20, 20] before exp(), as verl does.

    >>> rollout_importance_weights(torch.log(torch.tensor([[0.5, 0.2]])), torch.log(torch.tensor([[0.25, 0.4]])),
    ...                            torch.ones(1, 2), level="token", threshold=1.5)
    tensor([[1.5000, 0.5000]])
    >>> rollout_importance_weights(torch.log(torch.tensor([[0.5, 0.2]])), torch.log(torch.tensor([[0.25, 0.4]])),
    ...                            torch.ones(1, 2), level="geometric", threshold=1.5)
    tensor([[1., 1.]])
    """
    if level not in ROLLOUT_IS_LEVELS:
        raise ValueError(f"rollout_is level {level!r} is not one of {', '.join(ROLLOUT_IS_LEVELS)}")
    log_ratio = torch.where(mask > 0, old_log_probs.detach().float() - rollout_log_probs.detach().float(), 0.0)
    if level == "sequence":
        log_ratio = masked_sum(log_ratio, mask, dim=-1)[:, None].expand_as(log_ratio)
    elif level == "geometric":
        log_ratio = masked_mean(log_ratio, mask, dim=-1)[:, None].expand_as(log_ratio)
    weights = log_ratio.clamp(-_LOG_WEIGHT_BOUND, _LOG_WEIGHT_BOUND).exp().clamp(max=threshold)
    return weights * (mask > 0)


IMPORTANCE_WEIGHT_SUMS = ("tokens", "weight", "truncated")
"""What :func:`importance_weight_sums` adds up, in order: response tokens, their weights, those truncated."""


def importance_weight_sums(weights: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """(3,) float64 sums named by :data:`IMPORTANCE_WEIGHT_SUMS` over these rows' response tokens; they add up
    over ranks (all-reduce sum)."""
    keep = mask > 0
    return torch.stack([keep.sum().double(), weights.double()[keep].sum(),
                        (weights[keep] >= threshold).sum().double()])


def importance_weight_metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """Mean weight over response tokens and the share of tokens truncated, from :func:`importance_weight_sums`
    (summed over ranks); nothing without response tokens."""
    tokens, weight, truncated = sums.tolist()
    if tokens == 0:
        return {}
    return {"rollout_corr/rollout_is_mean": weight / tokens,
            "rollout_corr/rollout_is_truncated_frac": truncated / tokens}


def importance_weight_metrics(weights: torch.Tensor, mask: torch.Tensor, threshold: float) -> dict[str, float]:
    """Mean weight over response tokens and the share of tokens whose weight was truncated at ``threshold``."""
    return importance_weight_metrics_from_sums(importance_weight_sums(weights, mask, threshold))


def behaviour_weights(proximal_log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor, mask: torch.Tensor,
                      stale: torch.Tensor, *, level: str, cap: float) -> torch.Tensor:
    """(N, R) decoupled-objective weights for rows sampled by an older policy (AReaL's behaviour importance
    weight): min(pi_proximal / pi_behaviour, cap) on the ``stale`` (N,) bool rows, exactly 1 on the others;
    detached (no gradient reaches either log-prob), 0 at padding.

    ``proximal_log_probs``: the policy at the start of the training step (the PPO clip's "old" policy);
    ``behaviour_log_probs``: the sampler's. ``level``: ``geometric`` (the geometric mean of the response's token
    ratios, one weight per sequence: GSPO's length-normalised ratio) or ``token`` (vanilla PPO), as
    :func:`rollout_importance_weights`.

    >>> proximal, behaviour = torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2]])), torch.log(torch.tensor([[0.25, 0.4],
    ...                                                                                       [0.25, 0.4]]))
    >>> behaviour_weights(proximal, behaviour, torch.ones(2, 2), torch.tensor([True, False]), level="token", cap=1.5)
    tensor([[1.5000, 0.5000],
            [1.0000, 1.0000]])
    """
    weights = rollout_importance_weights(proximal_log_probs, behaviour_log_probs, mask, level=level, threshold=cap)
    return torch.where(stale[:, None], weights, (mask > 0).to(weights.dtype))


BEHAVIOUR_WEIGHT_SUMS = ("stale_rows", "rows", "tokens", "weight", "truncated", "log_weight_squared")
"""What :func:`behaviour_weight_sums` adds up, in order: stale rows, all rows, the stale rows' response tokens,
their weights, those truncated at the cap, and their squared log-weights."""


def behaviour_weight_sums(weights: torch.Tensor, mask: torch.Tensor, stale: torch.Tensor, cap: float) -> torch.Tensor:
    """(6,) float64 sums named by :data:`BEHAVIOUR_WEIGHT_SUMS` over these rows; they add up over ranks."""
    keep = (mask > 0) & stale[:, None]
    values = weights.double()[keep]
    return torch.stack([stale.sum().double(), torch.tensor(float(stale.numel()), dtype=torch.float64),
                        keep.sum().double(), values.sum(), (values >= cap).sum().double(),
                        values.clamp(min=1e-30).log().square().sum()])


def behaviour_weight_metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """``async/stale_rows_frac``; over the stale rows' tokens ``async/behav_weight_mean``,
    ``async/behav_weight_truncated_frac`` and ``async/behav_log_weight_rms``."""
    stale_rows, rows, tokens, weight, truncated, log_squared = sums.tolist()
    metrics = {"async/stale_rows_frac": stale_rows / max(rows, 1.0)}
    if tokens:
        metrics.update({"async/behav_weight_mean": weight / tokens,
                        "async/behav_weight_truncated_frac": truncated / tokens,
                        "async/behav_log_weight_rms": (log_squared / tokens) ** 0.5})
    return metrics
