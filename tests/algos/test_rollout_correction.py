"""Rollout/trainer mismatch metrics and truncated importance weights against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from gspo.algos.rollout_correction import (
    importance_weight_metrics,
    rollout_importance_weights,
    rollout_mismatch_metrics,
)

# Row 0: pi_old (0.5, 0.2), pi_rollout (0.4, 0.4), third token padding; row 1: one token, identical.
OLD = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.3, 0.7, 0.7]]))
ROLLOUT = torch.log(torch.tensor([[0.4, 0.4, 0.1], [0.3, 0.1, 0.2]]))
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_mismatch_metrics_hand_computed():
    # |p_old - p_rollout| on the 3 response tokens: 0.1, 0.2, 0 -> mean 0.1, max 0.2, unbiased std
    # sqrt((0 + 0.01 + 0.01) / 2) = 0.1. Sequence log-ratio: row 0 (ln 1.25 + ln 0.5) / 2 = -0.2350015, row 1 0
    # -> mean |.| = 0.11750075.
    metrics = rollout_mismatch_metrics(OLD, ROLLOUT, MASK)
    assert metrics["training/rollout_probs_diff_mean"] == pytest.approx(0.1, abs=1e-7)
    assert metrics["training/rollout_probs_diff_max"] == pytest.approx(0.2, abs=1e-7)
    assert metrics["training/rollout_probs_diff_std"] == pytest.approx(0.1, abs=1e-7)
    expected = abs(math.log(1.25) + math.log(0.5)) / 2 / 2
    assert metrics["training/rollout_seq_log_ratio_diff_mean"] == pytest.approx(expected, abs=1e-7)


def test_mismatch_metrics_of_identical_policies_are_zero_and_empty_mask_gives_nothing():
    metrics = rollout_mismatch_metrics(OLD, OLD.clone(), MASK)
    assert all(value == 0.0 for value in metrics.values())
    assert rollout_mismatch_metrics(OLD, ROLLOUT, torch.zeros_like(MASK)) == {}


def test_token_level_weights_truncate_each_token():
    # ratios 0.5/0.4 = 1.25, 0.2/0.4 = 0.5, row 1: 1; padding 0 (its ratio 9 never counts).
    weights = rollout_importance_weights(OLD, ROLLOUT, MASK, level="token", threshold=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.25, 0.5, 0.0], [1.0, 0.0, 0.0]]), rtol=0, atol=1e-6)
    truncated = rollout_importance_weights(OLD, ROLLOUT, MASK, level="token", threshold=1.2)
    torch.testing.assert_close(truncated, torch.tensor([[1.2, 0.5, 0.0], [1.0, 0.0, 0.0]]), rtol=0, atol=1e-6)
    assert importance_weight_metrics(truncated, MASK, 1.2) == pytest.approx(
        {"rollout_corr/rollout_is_mean": (1.2 + 0.5 + 1.0) / 3, "rollout_corr/rollout_is_truncated_frac": 1 / 3})


def test_sequence_level_weight_is_the_truncated_product_broadcast_over_the_sequence():
    # row 0: 1.25 * 0.5 = 0.625 on both tokens; row 1: 1.
    weights = rollout_importance_weights(OLD, ROLLOUT, MASK, level="sequence", threshold=2.0)
    torch.testing.assert_close(weights, torch.tensor([[0.625, 0.625, 0.0], [1.0, 0.0, 0.0]]), rtol=0, atol=1e-6)
    # A sequence 3x more likely under pi_old: 3 truncated to 2.
    high = rollout_importance_weights(torch.log(torch.tensor([[0.9, 0.5]])), torch.log(torch.tensor([[0.3, 0.5]])),
                                      torch.ones(1, 2), level="sequence", threshold=2.0)
    torch.testing.assert_close(high, torch.tensor([[2.0, 2.0]]), rtol=0, atol=1e-6)


def test_weights_are_safety_bounded_detached_and_finite_at_padding():
    old = torch.tensor([[0.0, 0.0]], requires_grad=True)
    rollout = torch.tensor([[-50.0, -float("inf")]])
    weights = rollout_importance_weights(old, rollout, torch.tensor([[1.0, 0.0]]), level="token", threshold=1e12)
    assert weights[0, 0].item() == pytest.approx(math.exp(20.0), rel=1e-6)  # log-weight 50 clamped to 20
    assert weights[0, 1].item() == 0.0 and not weights.requires_grad


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="geometric"):
        rollout_importance_weights(OLD, ROLLOUT, MASK, level="geometric", threshold=2.0)


def test_policy_loss_multiplies_each_tokens_loss_by_its_weight():
    from gspo.algos import compute_policy_loss

    # On-policy (ratio 1), advantage 1: every token's vanilla loss is -1. Weights (2, 0.5) and a padded third
    # token (weight 7, ignored): token-mean = -(2 + 0.5) / 2 = -1.25; gradient per token -w / 2.
    log_prob = torch.zeros(1, 3, requires_grad=True)
    advantages, mask = torch.ones(1, 3), torch.tensor([[1.0, 1.0, 0.0]])
    weights = torch.tensor([[2.0, 0.5, 7.0]])
    loss, _ = compute_policy_loss(log_prob.detach(), log_prob, advantages, mask, loss_mode="vanilla",
                                  loss_agg_mode="token-mean", token_weights=weights)
    assert loss.item() == pytest.approx(-1.25)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([[-1.0, -0.25, 0.0]]))
    plain, _ = compute_policy_loss(log_prob.detach(), log_prob, advantages, mask, loss_mode="vanilla",
                                   loss_agg_mode="token-mean")
    assert plain.item() == pytest.approx(-1.0)
