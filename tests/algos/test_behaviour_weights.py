"""The decoupled objective for rows an older policy sampled (a rollout pool, mode=async): pinned weights, no
gradient through them, rows of staleness 0 untouched, and their old log-probs always the proximal policy's."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from gspo.algos import behaviour_weight_metrics_from_sums, behaviour_weight_sums, behaviour_weights
from gspo.distributed import DistContext
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.old_policy import old_log_prob_source
from gspo.trainer.update import PolicyUpdate

# Two rows of two tokens: token ratios pi_proximal / pi_behaviour of 2 and 1 (row 0), 0.5 and 0.5 (row 1).
PROXIMAL = torch.log(torch.tensor([[0.5, 0.4], [0.1, 0.2]]))
BEHAVIOUR = torch.log(torch.tensor([[0.25, 0.4], [0.2, 0.4]]))
MASK = torch.ones(2, 2)
STALE = torch.tensor([True, True])


def test_geometric_level_is_one_weight_per_sequence_the_geometric_mean():
    weights = behaviour_weights(PROXIMAL, BEHAVIOUR, MASK, STALE, level="geometric", cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[math.sqrt(2)] * 2, [0.5, 0.5]]))
    capped = behaviour_weights(PROXIMAL, BEHAVIOUR, MASK, STALE, level="geometric", cap=1.2)
    torch.testing.assert_close(capped, torch.tensor([[1.2, 1.2], [0.5, 0.5]]))


def test_token_level_truncates_each_token_ratio():
    weights = behaviour_weights(PROXIMAL, BEHAVIOUR, MASK, STALE, level="token", cap=1.5)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 1.0], [0.5, 0.5]]))


def test_rows_of_staleness_zero_weigh_exactly_one_and_padding_zero():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    weights = behaviour_weights(PROXIMAL, BEHAVIOUR, mask, torch.tensor([True, False]), level="token", cap=1.5)
    assert weights.tolist() == [[1.5, 0.0], [1.0, 1.0]]


def test_no_gradient_flows_through_the_behaviour_or_proximal_log_probs():
    proximal, behaviour = PROXIMAL.clone().requires_grad_(), BEHAVIOUR.clone().requires_grad_()
    current = PROXIMAL.clone().requires_grad_()
    weights = behaviour_weights(proximal, behaviour, MASK, STALE, level="geometric", cap=2.0)
    assert not weights.requires_grad
    (weights * (current - proximal).exp()).sum().backward()
    assert behaviour.grad is None
    # The proximal policy enters the loss only through the ratio's denominator, as the PPO clip's old policy.
    torch.testing.assert_close(proximal.grad, -current.grad)


def test_weight_statistics_over_the_stale_tokens():
    weights = behaviour_weights(PROXIMAL, BEHAVIOUR, MASK, torch.tensor([True, False]), level="token", cap=1.5)
    metrics = behaviour_weight_metrics_from_sums(behaviour_weight_sums(weights, MASK, torch.tensor([True, False]), 1.5))
    assert metrics["async/stale_rows_frac"] == 0.5
    assert metrics["async/behav_weight_mean"] == pytest.approx(1.25)
    assert metrics["async/behav_weight_truncated_frac"] == 0.5
    assert metrics["async/behav_log_weight_rms"] == pytest.approx(math.sqrt(math.log(1.5) ** 2 / 2))


def _batch(generation_step: list[int]) -> RolloutBatch:
    ones = torch.ones(2, 2)
    return RolloutBatch(prompt_ids=ones.long(), prompt_mask=ones.long(), response_ids=ones.long(), response_mask=MASK,
                        group_ids=torch.zeros(2, dtype=torch.long), prompt_index=torch.zeros(2, dtype=torch.long),
                        generation_step=torch.tensor(generation_step), rollout_log_probs=BEHAVIOUR.clone(),
                        old_log_probs=PROXIMAL.clone())


def _update(loss_mode: str) -> PolicyUpdate:
    actor = SimpleNamespace(policy_loss=SimpleNamespace(loss_mode=loss_mode))
    context = SimpleNamespace(behaviour_weight_cap=2.0, dist=DistContext(), actor=actor,
                              behaviour_weight_level="geometric" if loss_mode == "gspo" else "token")
    return PolicyUpdate(context)


def test_a_batch_without_stale_rows_takes_the_synchronous_path():
    batch = _batch([3, 3])
    assert _update("gspo").weight_stale_rows(batch, step=3) == {}
    assert batch.rollout_is_weights is None


def test_stale_rows_are_weighted_at_the_losss_level():
    batch = _batch([2, 3])
    metrics = _update("gspo").weight_stale_rows(batch, step=3)
    torch.testing.assert_close(batch.rollout_is_weights, torch.tensor([[math.sqrt(2)] * 2, [1.0, 1.0]]))
    assert metrics["async/stale_rows_frac"] == 0.5
    vanilla = _batch([2, 2])
    _update("vanilla").weight_stale_rows(vanilla, step=3)
    torch.testing.assert_close(vanilla.rollout_is_weights, torch.tensor([[2.0, 1.0], [0.5, 0.5]]))


def test_stale_rows_never_take_the_samplers_log_probs_as_old():
    """Even where the sampler's log-probs may stand in (same engine precision), rows of an earlier version are
    recomputed: the clip is against the proximal policy, the weight against the sampler."""
    batch = _batch([2, 3])  # the stale row sits in the first (on-policy) mini-batch
    source = old_log_prob_source(batch, mini_batch_rows=2, ppo_epochs=1, step=3, use_rollout_log_probs=True,
                                 dist=DistContext(), weigh_stale_rows=True)
    assert not source.from_rollout and source.recompute_from == 0
    # A synchronous run's carried-over surplus in the first mini-batch keeps today's rule.
    assert old_log_prob_source(batch, mini_batch_rows=2, ppo_epochs=1, step=3, use_rollout_log_probs=True,
                               dist=DistContext()).from_rollout
