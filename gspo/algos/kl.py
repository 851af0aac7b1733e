"""Per-token KL penalty estimators between the policy and a reference policy.

Estimators of ``KL(pi || pi_ref)`` from samples of ``pi`` (Schulman 2020,
"Approximating KL Divergence", http://joschu.net/blog/kl-approx.html), as in
verl's ``kl_penalty``. ``log_prob`` and ``ref_log_prob`` are (B, T) log-probs
of the sampled tokens; the result is (B, T), unmasked (aggregate it with
``agg_loss`` or ``masked_mean``).
"""

from __future__ import annotations

import torch

__all__ = ["KL_TYPES", "kl_penalty"]

KL_TYPES: tuple[str, ...] = ("kl", "abs", "mse", "low_var_kl")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Per-token KL estimate.

    With ``d = log_prob - ref_log_prob``:

    - ``kl`` (k1): ``d``; unbiased, high variance, can be negative.
    - ``abs``: ``|d|``.
    - ``mse`` (k2): ``0.5 * d**2``.
    - ``low_var_kl`` (k3): ``exp(-d) - (-d) - 1`` >= 0, unbiased and low
      variance. As in verl, ``-d`` is clamped to [-20, 20] before ``exp`` and
      the result to [-10, 10], so one wild token cannot dominate.

    Raises:
        ValueError: ``kl_type`` not in ``KL_TYPES``.
    """
    if kl_type not in KL_TYPES:
        raise ValueError(f"unknown kl_type {kl_type!r}; choose one of {list(KL_TYPES)}")
    if log_prob.shape != ref_log_prob.shape:
        raise ValueError(f"shape mismatch: {tuple(log_prob.shape)} vs {tuple(ref_log_prob.shape)}")
    diff = log_prob - ref_log_prob
    if kl_type == "kl":
        return diff
    if kl_type == "abs":
        return diff.abs()
    if kl_type == "mse":
        return 0.5 * diff.square()
    log_ratio = torch.clamp(ref_log_prob - log_prob, min=-20.0, max=20.0)
    kld = torch.exp(log_ratio) - log_ratio - 1.0
    return torch.clamp(kld, min=-10.0, max=10.0)
