"""Rollout/trainer mismatch metrics and truncated importance weights against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from gspo.algos.rollout_correction import (
    importance_weight_metrics,
    importance_weight_metrics_from_sums,
    importance_weight_sums,
    mismatch_metrics_from_sums,
    rollout_importance_weights,
    rollout_mismatch_metrics,
    rollout_mismatch_sums,
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


# Ragged rows for the geometric level: pi_old / pi_rollout per response token, padding after.
#   row 0, 3 tokens: 0.8/0.4 = 2, 0.1/0.2 = 0.5, 0.4/0.1 = 4   product 4     geometric 4^(1/3) = 1.5874011
#   row 1, 1 token:  0.6/0.4 = 1.5 (padding ratio 100 ignored)   product 1.5   geometric 1.5
#   row 2, 2 tokens: 0.45/0.5 = 0.9, 0.2/0.5 = 0.4               product 0.36  geometric sqrt(0.36) = 0.6
RAGGED_OLD = torch.log(torch.tensor([[0.8, 0.1, 0.4], [0.6, 0.9, 0.9], [0.45, 0.2, 0.5]]))
RAGGED_ROLLOUT = torch.log(torch.tensor([[0.4, 0.2, 0.1], [0.4, 0.009, 0.009], [0.5, 0.5, 0.5]]))
RAGGED_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
CUBE_ROOT_4 = 4 ** (1 / 3)


def test_geometric_weight_is_the_truncated_geometric_mean_over_each_response():
    weights = rollout_importance_weights(RAGGED_OLD, RAGGED_ROLLOUT, RAGGED_MASK, level="geometric", threshold=2.0)
    expected = torch.tensor([[CUBE_ROOT_4] * 3, [1.5, 0.0, 0.0], [0.6, 0.6, 0.0]])
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-6)
    # Threshold 1.5: row 0's 1.587 is truncated, row 1 sits exactly at it, row 2 is below it.
    truncated = rollout_importance_weights(RAGGED_OLD, RAGGED_ROLLOUT, RAGGED_MASK, level="geometric", threshold=1.5)
    expected = torch.tensor([[1.5] * 3, [1.5, 0.0, 0.0], [0.6, 0.6, 0.0]])
    torch.testing.assert_close(truncated, expected, rtol=0, atol=1e-6)
    # Token-weighted over the 6 response tokens: (3 * 1.5 + 1.5 + 2 * 0.6) / 6 = 1.2; 4 of 6 tokens at 1.5.
    assert importance_weight_metrics(truncated, RAGGED_MASK, 1.5) == pytest.approx(
        {"rollout_corr/rollout_is_mean": 1.2, "rollout_corr/rollout_is_truncated_frac": 4 / 6})


def test_geometric_equals_the_other_levels_on_a_one_token_response_and_differs_from_the_product():
    levels = {level: rollout_importance_weights(RAGGED_OLD, RAGGED_ROLLOUT, RAGGED_MASK, level=level, threshold=2.0)
              for level in ("token", "sequence", "geometric")}
    assert levels["token"][1, 0] == levels["sequence"][1, 0] == levels["geometric"][1, 0] == pytest.approx(1.5)
    # The product: row 0 min(4, 2) = 2, row 2 0.36; the geometric mean 1.587 and 0.6.
    torch.testing.assert_close(levels["sequence"][[0, 2], 0], torch.tensor([2.0, 0.36]), rtol=0, atol=1e-6)


def test_geometric_weight_stays_near_one_over_a_long_slightly_mismatched_response():
    # 2,000 tokens, each 1% more (less) likely under pi_old than under the engine: the product is
    # exp(+-2000 * 0.01) = exp(+-20), truncated to 2 or ~2e-9; the geometric mean is exp(+-0.01) = 1.01005 / 0.99005.
    mask = torch.ones(2, 2000)
    rollout = torch.full((2, 2000), -3.0)
    old = rollout + torch.tensor([[0.01], [-0.01]])
    geometric = rollout_importance_weights(old, rollout, mask, level="geometric", threshold=2.0)
    product = rollout_importance_weights(old, rollout, mask, level="sequence", threshold=2.0)
    torch.testing.assert_close(geometric[:, 0], torch.tensor([math.exp(0.01), math.exp(-0.01)]), rtol=1e-5, atol=0)
    torch.testing.assert_close(product[:, 0], torch.tensor([2.0, math.exp(-20.0)]), rtol=1e-3, atol=0)


def test_geometric_weights_carry_no_gradient_and_an_empty_response_gets_weight_zero():
    from gspo.algos import compute_policy_loss

    old = RAGGED_OLD.clone().requires_grad_(True)
    mask = torch.cat([RAGGED_MASK, torch.zeros(1, 3)])  # a fourth, empty response
    weights = rollout_importance_weights(torch.cat([old, torch.zeros(1, 3)]), torch.cat([RAGGED_ROLLOUT,
                                         torch.zeros(1, 3)]), mask, level="geometric", threshold=2.0)
    assert not weights.requires_grad and weights.grad_fn is None
    assert weights[3].tolist() == [0.0, 0.0, 0.0]
    # On-policy vanilla loss, advantage 1, token-mean over the 6 tokens: loss = -(3 * 1.5874 + 1.5 + 2 * 0.6) / 6;
    # d loss / d log_prob_t = -w_t / 6, and nothing reaches the log-probs the weights came from.
    log_prob = torch.zeros(4, 3, requires_grad=True)
    loss, _ = compute_policy_loss(log_prob.detach(), log_prob, torch.ones(4, 3), mask, loss_mode="vanilla",
                                  loss_agg_mode="token-mean", token_weights=weights)
    assert loss.item() == pytest.approx(-(3 * CUBE_ROOT_4 + 1.5 + 1.2) / 6, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -weights / 6, rtol=0, atol=1e-7)
    assert old.grad is None


def test_unknown_level_is_an_error_that_lists_the_levels():
    with pytest.raises(ValueError, match="token, sequence, geometric"):
        rollout_importance_weights(OLD, ROLLOUT, MASK, level="product", threshold=2.0)


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


def test_sums_of_row_subsets_add_up_to_the_metrics_of_all_rows():
    # What two ranks holding row 0 and row 1 all-reduce: the metrics equal those of both rows together.
    parts = [rollout_mismatch_sums(OLD[i:i + 1], ROLLOUT[i:i + 1], MASK[i:i + 1]) for i in range(2)]
    sums, maximum = parts[0][0] + parts[1][0], torch.maximum(parts[0][1], parts[1][1])
    assert mismatch_metrics_from_sums(sums, maximum) == pytest.approx(rollout_mismatch_metrics(OLD, ROLLOUT, MASK),
                                                                      abs=1e-12)
    assert sums.tolist()[0::3] == [3.0, 2.0]  # response tokens, sequences with a token
    weights = rollout_importance_weights(OLD, ROLLOUT, MASK, level="token", threshold=1.2)
    summed = importance_weight_sums(weights[:1], MASK[:1], 1.2) + importance_weight_sums(weights[1:], MASK[1:], 1.2)
    assert summed.tolist() == pytest.approx([3.0, 1.2 + 0.5 + 1.0, 1.0])
    assert importance_weight_metrics_from_sums(summed) == pytest.approx(importance_weight_metrics(weights, MASK, 1.2))


def test_a_rank_without_response_tokens_contributes_zeros():
    sums, maximum = rollout_mismatch_sums(OLD[:0], ROLLOUT[:0], MASK[:0])
    assert sums.tolist() == [0.0] * 5 and maximum.tolist() == [0.0]
    assert mismatch_metrics_from_sums(sums, maximum) == {}
    assert importance_weight_metrics_from_sums(importance_weight_sums(OLD[:0], MASK[:0], 2.0)) == {}
