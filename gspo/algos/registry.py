"""Registry of policy-gradient losses, in the style of verl's ``core_algos``.

``POLICY_LOSSES`` maps a name to a loss function; ``register_policy_loss(name)``
adds one. Every registered function takes ``(old_log_prob, log_prob,
advantages, response_mask)`` positionally, all (B, T), and the keyword
arguments of ``compute_policy_loss`` except ``loss_mode``; it returns
``(loss, metrics)`` with ``metrics`` a dict of python floats. Also holds the
clip-fraction metrics the losses share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .masked import masked_mean

__all__ = ["POLICY_LOSSES", "PolicyLossFn", "register_policy_loss", "get_policy_loss_fn"]

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

POLICY_LOSSES: dict[str, PolicyLossFn] = {}


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


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-dim tensors -> python floats (one host sync each)."""
    return {k: float(v.item()) for k, v in metrics.items()}
