"""The update on a train batch: old and reference log-probs, the rollout mismatch, then the optimizer steps.

It reads one :class:`~gspo.trainer.update_context.UpdateContext` and this rank's rows of the batch; it never
knows which producer made the batch (every row says which step's policy sampled it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from gspo.algos import (
    MISMATCH_SUMS,
    behaviour_weight_metrics_from_sums,
    behaviour_weight_sums,
    behaviour_weights,
    importance_weight_metrics_from_sums,
    importance_weight_sums,
    mismatch_metrics_from_sums,
    rollout_importance_weights,
    rollout_mismatch_sums,
)
from gspo.trainer.actor import compute_log_probs, update_policy
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.old_policy import old_log_prob_source, with_on_policy_rows_marked
from gspo.trainer.timing import timer
from gspo.trainer.update_context import UpdateContext


class PolicyUpdate:
    """One train batch's update of the policy, in two phases: :meth:`prepare` (the no-grad passes) and
    :meth:`optimize` (the PPO-style optimizer steps, :func:`gspo.trainer.actor.update_policy`)."""

    def __init__(self, context: UpdateContext):
        self.context = context

    def prepare(self, batch: RolloutBatch, *, step: int, timings: dict[str, float]) -> dict[str, float]:
        """Set ``batch.old_log_probs`` and, with the KL loss, ``batch.ref_log_probs`` (this rank's rows, in place);
        return the rollout mismatch metrics. ``step``: the training step about to update."""
        metrics = self.compute_old_log_probs(batch, step=step, timings=timings)
        metrics.update(self.weight_stale_rows(batch, step=step))
        self.compute_reference_log_probs(batch, timings)
        return metrics

    def optimize(self, batch: RolloutBatch) -> dict[str, float]:
        """The optimizer steps over ``batch``'s mini-batches (``actor/*`` metrics)."""
        return update_policy(batch, self.context)

    def compute_old_log_probs(self, batch: RolloutBatch, *, step: int, timings: dict[str, float]) -> dict[str, float]:
        """Set ``batch.old_log_probs`` (this rank's rows) by the old-policy rule (:mod:`gspo.trainer.old_policy`):
        the sampler's, or a forward pass over the rows it names; left None when every row is on-policy. Returns
        the rollout/trainer mismatch metrics when the pass recomputed rows the sampler also scored."""
        ctx = self.context
        source = old_log_prob_source(batch, mini_batch_rows=ctx.local_mini_batch_rows, ppo_epochs=ctx.actor.ppo_epochs,
                                     step=step, use_rollout_log_probs=ctx.use_rollout_log_probs, dist=ctx.dist,
                                     weigh_stale_rows=ctx.behaviour_weight_cap is not None)
        if source.from_rollout:
            batch.old_log_probs = batch.rollout_log_probs
            return {}
        if source.recompute_from is not None:
            later = batch.select(torch.arange(source.recompute_from, batch.num_sequences))
            with timer(timings, "timing/old_log_prob"):
                batch.old_log_probs = with_on_policy_rows_marked(source.recompute_from,
                                                                 self._log_probs(ctx.model, later))
        return self._rollout_mismatch(batch)

    def _rollout_mismatch(self, batch: RolloutBatch) -> dict[str, float]:
        """verl's mismatch metrics over every rank's rows; with rollout correction on, this rank's importance
        weights (``batch.rollout_is_weights``) and their metrics over every rank's rows. Ranks exchange only
        all-reduced sums and one maximum (a few dozen bytes, whatever the batch). Nothing when the sampler's
        log-probs are missing (e.g. surplus groups restored from a checkpoint that had none)."""
        if batch.rollout_log_probs is None or batch.old_log_probs is None:
            return {}
        dist, correction = self.context.dist, self.context.rollout_correction
        local = (batch.old_log_probs, batch.rollout_log_probs, batch.response_mask)
        sums, maximum = rollout_mismatch_sums(*(t.cpu() for t in local))
        if correction.rollout_is:
            threshold = correction.rollout_is_threshold
            batch.rollout_is_weights = rollout_importance_weights(*local, level=correction.rollout_is,
                                                                  threshold=threshold)
            sums = torch.cat([sums, importance_weight_sums(batch.rollout_is_weights.cpu(), local[2].cpu(), threshold)])
        sums, maximum = dist.all_reduce_sum(sums), dist.all_reduce_max_values(maximum)
        metrics = mismatch_metrics_from_sums(sums[:len(MISMATCH_SUMS)], maximum)
        if correction.rollout_is:
            metrics.update(importance_weight_metrics_from_sums(sums[len(MISMATCH_SUMS):]))
        return metrics

    def weight_stale_rows(self, batch: RolloutBatch, *, step: int) -> dict[str, float]:
        """The decoupled objective for rows an older policy sampled (``generation_step < step``, beside a rollout
        pool): their old log-probs are the proximal policy's (recomputed at the start of this step: the old-policy
        rule never lets the sampler's stand in for them), and their loss is weighted by
        min(pi_proximal / pi_sampler, cap) (:func:`gspo.algos.behaviour_weights`), combined with any rollout
        correction weight. A batch without stale rows on any rank is left exactly as it is (a collective)."""
        ctx = self.context
        if ctx.behaviour_weight_cap is None:
            return {}
        stale = batch.generation_step < step
        if not ctx.dist.all_reduce_max(int(bool(stale.any()) and batch.rollout_log_probs is not None)):
            return {}
        cap = ctx.behaviour_weight_cap
        weights = behaviour_weights(batch.old_log_probs, batch.rollout_log_probs, batch.response_mask, stale,
                                    level=ctx.behaviour_weight_level, cap=cap)
        batch.rollout_is_weights = weights if batch.rollout_is_weights is None else batch.rollout_is_weights * weights
        sums = behaviour_weight_sums(weights.cpu(), batch.response_mask.cpu(), stale.cpu(), cap)
        return behaviour_weight_metrics_from_sums(ctx.dist.all_reduce_sum(sums))

    def compute_reference_log_probs(self, batch: RolloutBatch, timings: dict[str, float]) -> None:
        """Set ``batch.ref_log_probs`` (this rank's rows) when the KL loss needs the reference policy."""
        if self.context.actor.use_kl_loss:
            with timer(timings, "timing/ref"), self.reference() as reference:
                batch.ref_log_probs = self._log_probs(reference, batch)

    @contextmanager
    def reference(self) -> Iterator[PreTrainedModel]:
        """The KL reference policy: its own frozen copy, or with LoRA the base (the policy, adapters off)."""
        ctx = self.context
        if ctx.lora is None:
            yield ctx.reference_model
            return
        with ctx.lora.adapters_disabled():
            yield ctx.model

    def _log_probs(self, model: PreTrainedModel, batch: RolloutBatch) -> torch.Tensor:
        """(N, R) response log-probs under ``model`` without gradients, micro-batched as the update is."""
        ctx, actor = self.context, self.context.actor
        return compute_log_probs(model, batch, micro_batch_size=actor.ppo_micro_batch_size_per_gpu,
                                 temperature=ctx.temperature, autocast_dtype=ctx.autocast_dtype,
                                 logits_chunk_size=actor.logits_chunk_size,
                                 max_token_len=(actor.log_prob_max_token_len_per_gpu or actor.ppo_max_token_len_per_gpu)
                                 if actor.use_dynamic_bsz else None,
                                 dist=ctx.dist, share_prompts=actor.share_prompt_forward)
