"""The old-policy rule on its own: the automatic choice, and where each row's old log-probs come from."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gspo.distributed import DistContext
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.old_policy import OldLogProbSource, choose_rollout_log_probs, old_log_prob_source

STEP = 3


def _batch(rows: int = 8, sampled_at: int = STEP) -> RolloutBatch:
    """``rows`` sequences sampled at ``sampled_at``, with the sampler's log-probs."""
    ones = torch.ones(rows, 2)
    return RolloutBatch(prompt_ids=ones.long(), prompt_mask=ones.long(), response_ids=ones.long(), response_mask=ones,
                        group_ids=torch.arange(rows) // 4, prompt_index=torch.arange(rows) // 4,
                        generation_step=torch.full((rows,), sampled_at), rollout_log_probs=-ones)


def _source(batch: RolloutBatch, *, use_rollout_log_probs: bool, mini_batch_rows: int = 4,
            ppo_epochs: int = 1) -> OldLogProbSource:
    return old_log_prob_source(batch, mini_batch_rows=mini_batch_rows, ppo_epochs=ppo_epochs, step=STEP,
                               use_rollout_log_probs=use_rollout_log_probs, dist=DistContext())


@pytest.mark.parametrize(("setting", "matches", "rollout_is", "expected"), [
    (None, True, None, True),  # auto: hf in fp32 computes them as the trainer does
    (None, False, None, False),  # auto: another engine or bf16
    (None, True, "token", False),  # auto: rollout correction needs recomputed old log-probs
    (True, False, None, True),  # a set value wins
    (False, True, None, False),
])
def test_automatic_choice_of_the_samplers_log_probs(setting, matches, rollout_is, expected):
    assert choose_rollout_log_probs(setting, engine_matches_trainer=matches, rollout_is=rollout_is) is expected


def test_samplers_log_probs_stand_in_when_the_current_weights_sampled_every_later_row():
    assert _source(_batch(), use_rollout_log_probs=True) == OldLogProbSource(from_rollout=True, recompute_from=None)


def test_unused_samplers_log_probs_mean_every_row_is_recomputed_for_the_mismatch():
    # The first mini-batch (4 rows) is on-policy, yet all 8 rows are recomputed: the mismatch covers the batch.
    assert _source(_batch(), use_rollout_log_probs=False) == OldLogProbSource(from_rollout=False, recompute_from=0)
    stale = _batch(sampled_at=STEP - 1)  # a carried-over group: its sampler was not the current policy
    assert _source(stale, use_rollout_log_probs=True) == OldLogProbSource(from_rollout=False, recompute_from=0)


def test_without_samplers_log_probs_only_rows_past_the_on_policy_ones_are_recomputed():
    restored = replace(_batch(), rollout_log_probs=None)  # e.g. surplus restored from a run that recomputed
    assert _source(restored, use_rollout_log_probs=True).recompute_from == 4  # after the first mini-batch of 4
    assert _source(restored, use_rollout_log_probs=True, ppo_epochs=2).recompute_from == 0  # epoch 2 revisits all
    assert _source(restored, use_rollout_log_probs=True, mini_batch_rows=8).recompute_from is None  # all on-policy
