"""Registry of policy-gradient losses, in the style of verl's ``core_algos``.

A policy loss is a function of ``(old_log_prob, log_prob, advantages, response_mask)``, all (B, T), plus the
keyword hyper-parameters it names in its signature (``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``:
only those it declares are passed). It returns ``(per_token_loss, metrics)``: the (B, T) loss before aggregation
and a dict of 0-dim tensors. It does NOT aggregate: :func:`gspo.algos.compute_policy_loss` does, with the global
token / sequence counts, so a new loss cannot get micro-batch or data-parallel normalisation wrong.

``register_policy_loss(name)`` adds one to ``POLICY_LOSSES``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["POLICY_LOSSES", "PolicyLossFn", "RegisteredLoss", "get_policy_loss_fn", "register_policy_loss"]

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

# The hyper-parameters compute_policy_loss can pass; a loss receives those its signature names.
LOSS_HYPERPARAMETERS = ("clip_ratio_low", "clip_ratio_high", "clip_ratio_c")


@dataclass(frozen=True)
class RegisteredLoss:
    """A policy loss and what :func:`compute_policy_loss` needs to call it."""

    fn: PolicyLossFn
    hyperparameters: tuple[str, ...]  # the names of LOSS_HYPERPARAMETERS the function accepts
    check_agg_mode: Callable[[str], None] | None = None  # called with loss_agg_mode before every call


def describe_loss(fn: PolicyLossFn, check_agg_mode: Callable[[str], None] | None = None) -> RegisteredLoss:
    """Wrap ``fn`` (validated: it must accept the four tensors) for :func:`compute_policy_loss`."""
    if not callable(fn):
        raise TypeError(f"a policy loss must be callable, got {fn!r}")
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = tuple(name for name in LOSS_HYPERPARAMETERS if takes_all or name in params)
    return RegisteredLoss(fn, accepted, check_agg_mode)


POLICY_LOSSES: dict[str, RegisteredLoss] = {}


def register_policy_loss(
    name: str, *, check_agg_mode: Callable[[str], None] | None = None
) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator registering ``fn`` under ``name`` in ``POLICY_LOSSES``; duplicates raise ValueError.

    ``check_agg_mode(loss_agg_mode)``, when given, may warn or raise for aggregation modes the loss is not
    meant for (GSPO warns for the length-weighted ones).
    """

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = describe_loss(fn, check_agg_mode)
        return fn

    return decorator


def get_policy_loss_fn(name: str) -> RegisteredLoss:
    """The registered loss called ``name``; unknown names raise ValueError listing the choices."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss_mode {name!r}; choose one of {sorted(POLICY_LOSSES)}") from None
