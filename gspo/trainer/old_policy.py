"""The old-policy rule: which rows' old log-probs are the current ones, the sampler's, or a recomputed forward.

PPO-style ratios compare the policy being updated with the policy at the start of the update ("old"). In one
train batch of ``num_mini_batches`` mini-batches and ``ppo_epochs`` epochs:

- with one epoch, the first mini-batch's gradient is taken before any optimizer step, so its old log-probs ARE
  the current ones: the update uses the detached current log-probs (ratio 1 by construction, no extra forward);
- every later row needs the start-of-update policy's log-probs: the sampler's (``rollout_log_probs``) when the
  current weights sampled it at this step in the update's precision, otherwise a recomputing forward pass;
- whether the sampler's may stand in at all is ``actor.use_rollout_log_probs``; null (auto) means yes exactly
  when the engine computes them as the trainer would (hf in fp32) and rollout correction is off;
- when the sampler's log-probs are there but do not stand in, the forward pass recomputes every row (as verl
  does), so the rollout/trainer mismatch is measured over the whole batch; the update still takes the on-policy
  shortcut on its leading rows.

This module is the only place that decides; the actor and the update ask it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gspo.distributed import DistContext
from gspo.trainer.batch import RolloutBatch


def choose_rollout_log_probs(setting: bool | None, *, engine_matches_trainer: bool, rollout_is: str | None) -> bool:
    """``actor.use_rollout_log_probs`` resolved: a set value wins; null (auto) is true when the engine's log-probs
    are the trainer's (``RolloutEngine.log_probs_match_trainer``) and ``algorithm.rollout_correction.rollout_is``
    is off (its weights compare the sampler's log-probs with recomputed ones).

    >>> choose_rollout_log_probs(None, engine_matches_trainer=True, rollout_is=None)
    True
    >>> choose_rollout_log_probs(None, engine_matches_trainer=True, rollout_is="token")
    False
    >>> choose_rollout_log_probs(True, engine_matches_trainer=False, rollout_is=None)
    True
    """
    if setting is not None:
        return setting
    return engine_matches_trainer and not rollout_is


def num_on_policy_mini_batches(ppo_epochs: int) -> int:
    """Leading mini-batches of a train batch whose gradient comes before any optimizer step of that batch."""
    return 1 if ppo_epochs == 1 else 0


def takes_on_policy_shortcut(epoch: int, mini_batch_index: int, ppo_epochs: int) -> bool:
    """Whether mini-batch ``mini_batch_index`` of ``epoch`` uses the current log-probs as the old ones."""
    return epoch == 0 and mini_batch_index < num_on_policy_mini_batches(ppo_epochs)


def num_on_policy_rows(mini_batch_rows: int, ppo_epochs: int) -> int:
    """Leading rows of a (this rank's) train batch that need no old log-probs (see the module docstring)."""
    return mini_batch_rows * num_on_policy_mini_batches(ppo_epochs)


def rollout_log_probs_are_old(batch: RolloutBatch, *, on_policy_rows: int, step: int, use_rollout_log_probs: bool,
                              dist: DistContext, weigh_stale_rows: bool = False) -> bool:
    """Whether the sampler's log-probs are the old policy's for every row past ``on_policy_rows``: sampled by the
    current weights at ``step`` (``generation_step == step``) and present. Rows carried over from an earlier step
    (``keep_surplus``) or restored without them (a checkpoint from a run that recomputed) force a recompute.
    The same answer on every rank (a collective), which then runs the same passes.

    ``weigh_stale_rows`` (beside a rollout pool): the on-policy rows count too, since a stale row's behaviour
    weight needs its proximal log-probs wherever it sits (``PolicyUpdate.weight_stale_rows``)."""
    if not use_rollout_log_probs:
        return False
    later = batch.generation_step[0 if weigh_stale_rows else on_policy_rows:]
    usable = batch.rollout_log_probs is not None and bool((later == step).all())
    return not dist.all_reduce_max(int(not usable))


@dataclass(frozen=True)
class OldLogProbSource:
    """Where this rank's rows of a train batch get their old log-probs."""

    from_rollout: bool  # the sampler's stand in for every row
    recompute_from: int | None  # a forward pass recomputes rows [recompute_from, N); None: no pass


def old_log_prob_source(batch: RolloutBatch, *, mini_batch_rows: int, ppo_epochs: int, step: int,
                        use_rollout_log_probs: bool, dist: DistContext,
                        weigh_stale_rows: bool = False) -> OldLogProbSource:
    """The rule of the module docstring for this rank's rows of ``batch`` (a collective: every rank calls it and
    gets the same ``from_rollout``). ``mini_batch_rows``: this rank's rows per mini-batch."""
    on_policy_rows = num_on_policy_rows(mini_batch_rows, ppo_epochs)
    if rollout_log_probs_are_old(batch, on_policy_rows=on_policy_rows, step=step,
                                 use_rollout_log_probs=use_rollout_log_probs, dist=dist,
                                 weigh_stale_rows=weigh_stale_rows):
        return OldLogProbSource(from_rollout=True, recompute_from=None)
    first = 0 if batch.rollout_log_probs is not None else on_policy_rows  # all rows: the mismatch is measured
    return OldLogProbSource(from_rollout=False, recompute_from=first if first < batch.num_sequences else None)


def with_on_policy_rows_marked(on_policy_rows: int, recomputed: torch.Tensor) -> torch.Tensor:
    """(N, R) old log-probs: NaN on the leading on-policy rows (the update must not read them; it uses the current
    log-probs there), then the ``recomputed`` (N - on_policy_rows, R) rows."""
    skipped = torch.full((on_policy_rows, recomputed.shape[1]), float("nan"), device=recomputed.device)
    return torch.cat([skipped, recomputed])
