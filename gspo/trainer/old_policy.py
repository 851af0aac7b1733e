"""The old-policy rule: which rows' old log-probs are the current ones, the sampler's, or a recomputed forward.

PPO-style ratios compare the policy being updated with the policy at the start of the update ("old"). In one
train batch of ``num_mini_batches`` mini-batches and ``ppo_epochs`` epochs:

- with one epoch, the first mini-batch's gradient is taken before any optimizer step, so its old log-probs ARE
  the current ones: the update uses the detached current log-probs (ratio 1 by construction, no extra forward);
- every later row needs the start-of-update policy's log-probs: the sampler's (``rollout_log_probs``) when the
  current weights sampled it at this step in the update's precision, otherwise a recomputing forward pass.

This module is the only place that decides; the actor and the trainer ask it.
"""

from __future__ import annotations

import torch

from gspo.distributed import DistContext
from gspo.trainer.batch import RolloutBatch


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
                              dist: DistContext) -> bool:
    """Whether the sampler's log-probs are the old policy's for every row past ``on_policy_rows``: sampled by the
    current weights at ``step`` (``generation_step == step``) and present. Rows carried over from an earlier step
    (``keep_surplus``) or restored without them (a checkpoint from a run that recomputed) force a recompute.
    The same answer on every rank (a collective), which then runs the same passes."""
    if not use_rollout_log_probs:
        return False
    later = batch.generation_step[on_policy_rows:]
    usable = batch.rollout_log_probs is not None and bool((later == step).all())
    return not dist.all_reduce_max(int(not usable))


def rows_to_recompute(batch: RolloutBatch, on_policy_rows: int) -> RolloutBatch | None:
    """The rows whose old log-probs need a forward pass (None when every row is on-policy)."""
    if on_policy_rows >= batch.num_sequences:
        return None
    return batch.select(torch.arange(on_policy_rows, batch.num_sequences))


def with_on_policy_rows_marked(on_policy_rows: int, recomputed: torch.Tensor) -> torch.Tensor:
    """(N, R) old log-probs: NaN on the leading on-policy rows (the update must not read them; it uses the current
    log-probs there), then the ``recomputed`` (N - on_policy_rows, R) rows."""
    skipped = torch.full((on_policy_rows, recomputed.shape[1]), float("nan"), device=recomputed.device)
    return torch.cat([skipped, recomputed])
