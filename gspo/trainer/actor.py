"""The actor: response log-probs from a forward pass, and the PPO-style GSPO update over mini-batches."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import torch
from transformers import PreTrainedModel

from gspo.algos import (
    agg_loss,
    compute_policy_loss,
    entropy_from_logits,
    kl_penalty,
    log_probs_from_logits,
)
from gspo.distributed import SINGLE_PROCESS, DistContext
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.metrics import MetricAccumulator
from gspo.trainer.old_policy import takes_on_policy_shortcut
from gspo.trainer.packing import pack_micro_batches
from gspo.trainer.parallel import full_grad_norm
from gspo.trainer.shared_prefix import can_share_prompts, full_sequence_logits, shared_prompt_logits
from gspo.trainer.update_context import UpdateContext

# Policy-loss metrics that are means over the micro-batch's non-empty sequences (all others are token means); they
# are re-weighted by sequence counts so the mini-batch value does not depend on how it was cut into micro-batches.
_SEQUENCE_MEAN_METRICS = frozenset({"actor/seq_importance_ratio"})
# Extremes over micro-batches, mini-batches and ranks; every other actor metric is a weighted mean.
_MAX_METRICS = frozenset({"actor/seq_importance_ratio_max", "actor/token_importance_ratio_max"})
_MIN_METRICS = frozenset({"actor/seq_importance_ratio_min", "actor/token_importance_ratio_min"})


def _actor_metrics() -> MetricAccumulator:
    return MetricAccumulator(max_names=_MAX_METRICS, min_names=_MIN_METRICS)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def forward_response(model: PreTrainedModel, batch: RolloutBatch, *, temperature: float,
                     autocast_dtype: torch.dtype | None, with_entropy: bool, logits_chunk_size: int = 0,
                     entropy_grad: bool = False, entropy_checkpointing: bool = False, share_prompts: bool = False,
                     uniform_passes: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, R) of the response tokens under ``model`` at the sampling temperature, and entropy (N, R).

    Only the R+1 last positions go through the LM head (``logits_to_keep``), so prompt positions cost no
    vocabulary-sized work. No log_softmax copy of the logits is made (label logit minus logsumexp);
    ``logits_chunk_size`` > 0 also bounds the float32 upcast / softmax to that many positions at a time.
    Without autograd the temperature is applied in place, so the logits exist once. ``share_prompts``: each
    group's prompt is encoded once for all its rows (:mod:`gspo.trainer.shared_prefix`); same result.
    ``uniform_passes`` (FSDP): the choice and the number of forward passes must not depend on the rank's data.
    """
    with _autocast(batch.response_ids.device, autocast_dtype):
        if share_prompts and can_share_prompts(model, batch, uniform=uniform_passes):
            pieces = shared_prompt_logits(model, batch, always_two_passes=uniform_passes)  # [(N, r, V)], sum r = R
        else:
            pieces = full_sequence_logits(model, batch)  # [(N, R, V)]
    chunk_size = logits_chunk_size if logits_chunk_size > 0 else None
    log_probs, entropy, start = [], [], 0
    for logits in pieces:
        if temperature != 1.0:  # log-probs of the distribution the rollout actually sampled from
            logits = logits / temperature if torch.is_grad_enabled() else logits.div_(temperature)
        labels = batch.response_ids[:, start:start + logits.shape[1]]
        start += logits.shape[1]
        log_probs.append(log_probs_from_logits(logits, labels, chunk_size=chunk_size))
        if with_entropy:  # kept out of the autograd graph unless the entropy bonus needs its gradient
            with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
                entropy.append(entropy_from_logits(logits, chunk_size=chunk_size, checkpointing=entropy_checkpointing))
    log_probs = torch.cat(log_probs, dim=1)  # (N, R): the small per-token tensors, not the logits
    entropy = torch.cat(entropy, dim=1) if with_entropy else None
    return log_probs, entropy


def even_out(micro_batches: list[RolloutBatch], dist: DistContext) -> list[tuple[RolloutBatch, bool]]:
    """``(micro_batch, is_real)`` pairs, as many on every rank.

    FSDP runs collectives inside every forward and backward, so all ranks must run the same number of
    micro-batches; a rank with fewer (length packing differs per rank) repeats a one-row micro-batch whose
    result is discarded and whose loss is multiplied by zero.
    """
    pairs = [(micro, True) for micro in micro_batches]
    target = dist.all_reduce_max(len(pairs)) if dist.is_distributed else len(pairs)
    if target > len(pairs):
        filler = micro_batches[-1].select(torch.tensor([0]))
        pairs += [(filler, False)] * (target - len(pairs))
    return pairs


@torch.no_grad()
def compute_log_probs(model: PreTrainedModel, batch: RolloutBatch, *, micro_batch_size: int, temperature: float,
                      autocast_dtype: torch.dtype | None, max_token_len: int | None = None,
                      logits_chunk_size: int = 0, dist: DistContext = SINGLE_PROCESS, share_prompts: bool = False
                      ) -> torch.Tensor:
    """(N, R) response log-probs in micro-batches, without gradients (old policy or reference); 0 at padding.

    ``max_token_len`` (``use_dynamic_bsz``): micro-batches are packed by length to at most that many tokens each
    (rows x the longest prompt + response length, see ``packing.pack_by_tokens``) and trimmed of all-padding
    columns, instead of ``micro_batch_size`` consecutive rows; the rows are scattered back to the batch's order and
    width, so the result is the same tensor.
    """
    was_training = model.training
    model.eval()
    forward = dict(temperature=temperature, autocast_dtype=autocast_dtype, with_entropy=False,
                   logits_chunk_size=logits_chunk_size, share_prompts=share_prompts,
                   uniform_passes=dist.is_distributed)
    try:
        if max_token_len:
            packs = pack_micro_batches(batch, max_token_len)
        else:
            packs = [(torch.arange(start, start + micro.num_sequences), micro)
                     for start, micro in zip(range(0, batch.num_sequences, micro_batch_size),
                                             batch.split(micro_batch_size))]
        log_probs = None
        indices = [index for index, _ in packs]
        for number, (micro, is_real) in enumerate(even_out([micro for _, micro in packs], dist)):
            part = forward_response(model, micro, **forward)[0]
            if log_probs is None:
                log_probs = part.new_zeros(batch.response_ids.shape)
            if is_real:
                log_probs[indices[number], :part.shape[1]] = part
        if log_probs is None:  # no rows
            log_probs = torch.zeros(batch.response_ids.shape, device=batch.response_ids.device)
    finally:
        model.train(was_training)
    return torch.where(batch.response_mask.bool(), log_probs, torch.zeros_like(log_probs))


def update_policy(batch: RolloutBatch, ctx: UpdateContext) -> dict[str, float]:
    """PPO-style epochs over mini-batches of ``ctx.actor.ppo_mini_batch_size`` prompts (x n sequences).

    Data parallel: ``batch`` holds this rank's rows (``parallel.local_rows``), mini-batches are
    ``ctx.local_mini_batch_rows``; counts and metrics are reduced over ranks.

    ``batch.old_log_probs`` None means the update is exactly on-policy: the current log-probs (detached) stand
    in for them, which skips a forward pass and gives ratio 1 by construction. The first mini-batch of a single
    epoch is always on-policy, so it takes that shortcut whatever ``old_log_probs`` holds for its rows
    (the old-policy rule, :mod:`gspo.trainer.old_policy`).
    Losses are normalised by the mini-batch's token / sequence counts, so micro-batching (and later data
    parallelism) leaves the gradient unchanged. Micro-batches are ``ppo_micro_batch_size_per_gpu`` consecutive
    rows, or with ``use_dynamic_bsz`` rows packed by length to at most ``ppo_max_token_len_per_gpu`` tokens
    (rows x longest real length) and trimmed of all-padding columns.
    """
    cfg = ctx.actor
    metrics = _actor_metrics()
    num_updates = num_skipped = 0
    ctx.model.train()
    for epoch in range(cfg.ppo_epochs):
        for index, mini_batch in enumerate(batch.split(ctx.local_mini_batch_rows)):
            if takes_on_policy_shortcut(epoch, index, cfg.ppo_epochs):  # no optimizer step yet: exactly on-policy
                mini_batch = replace(mini_batch, old_log_probs=None)
            mini_metrics = _optimizer_step(mini_batch, ctx)
            num_updates += 1
            num_skipped += int(mini_metrics.pop("actor/skipped"))
            metrics.add(mini_metrics)
    return {**metrics.reduce(), "actor/num_updates": float(num_updates), "actor/skipped_updates": float(num_skipped)}


def _optimizer_step(mini_batch: RolloutBatch, ctx: UpdateContext) -> dict[str, float]:
    cfg, dist = ctx.actor, ctx.dist
    # Mini-batch-global denominators (summed over ranks): micro-batch losses then sum to the mini-batch loss.
    local_counts = torch.tensor([mini_batch.response_mask.sum().item(),
                                 (mini_batch.response_mask.sum(-1) > 0).sum().item()], dtype=torch.float64)
    num_tokens_total, num_seqs_total = dist.all_reduce_sum(local_counts).tolist()
    counts = dict(global_num_tokens=num_tokens_total, global_num_seqs=num_seqs_total,
                  max_response_len=ctx.max_response_length)
    ctx.optimizer.zero_grad(set_to_none=True)
    micro_metrics = _actor_metrics()
    pg_loss_total = 0.0
    if cfg.use_dynamic_bsz:
        micro_batches = [micro for _, micro in pack_micro_batches(mini_batch, cfg.ppo_max_token_len_per_gpu)]
    else:
        micro_batches = mini_batch.split(cfg.ppo_micro_batch_size_per_gpu)
    for micro, is_real in even_out(micro_batches, dist):
        loss, metrics = _micro_batch_loss(micro, ctx, counts)
        if not is_real:
            (loss * 0.0).backward()  # takes part in FSDP's gradient reduction, adds nothing
            continue
        # FSDP averages gradients over ranks; the ranks' losses already sum to the mini-batch loss.
        (loss * dist.world_size if dist.is_distributed else loss).backward()
        pg_loss_total += metrics.pop("actor/pg_loss")
        response_lengths = micro.response_mask.sum(-1)
        num_tokens, num_seqs = response_lengths.sum().item(), (response_lengths > 0).sum().item()
        for name, value in metrics.items():
            micro_metrics.add({name: value}, weight=num_seqs if name in _SEQUENCE_MEAN_METRICS else num_tokens)
    if dist.is_distributed:
        gathered = dist.all_gather_objects((micro_metrics, pg_loss_total))
        micro_metrics = _actor_metrics().merge(metrics for metrics, _ in gathered)
        pg_loss_total = sum(loss for _, loss in gathered)
    grad_norm = full_grad_norm(torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), cfg.grad_clip))
    skipped = not math.isfinite(grad_norm)
    if skipped:  # a NaN/inf gradient would poison AdamW's moments for good; drop this step instead
        ctx.optimizer.zero_grad(set_to_none=True)
    else:
        ctx.optimizer.step()
    result = micro_metrics.reduce()
    result.update({"actor/pg_loss": pg_loss_total, "actor/grad_norm": grad_norm, "actor/skipped": float(skipped)})
    return result


def _micro_batch_loss(micro: RolloutBatch, ctx: UpdateContext, counts: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the mini-batch loss (global denominators), and its metrics."""
    cfg = ctx.actor
    log_probs, entropy = forward_response(ctx.model, micro, temperature=ctx.temperature,
                                          autocast_dtype=ctx.autocast_dtype, with_entropy=True,
                                          entropy_grad=cfg.entropy_coeff != 0.0,
                                          entropy_checkpointing=cfg.entropy_checkpointing,
                                          logits_chunk_size=cfg.logits_chunk_size,
                                          share_prompts=cfg.share_prompt_forward,
                                          uniform_passes=ctx.dist.is_distributed)
    mask = micro.response_mask
    old_log_probs = micro.old_log_probs if micro.old_log_probs is not None else log_probs.detach()
    advantages = micro.advantages[:, None].expand_as(log_probs)  # (n, R): one advantage per sequence
    pg_loss, metrics = compute_policy_loss(
        old_log_probs, log_probs, advantages, mask, loss_mode=ctx.loss,
        clip_ratio_low=cfg.clip_ratio_low, clip_ratio_high=cfg.clip_ratio_high, clip_ratio_c=cfg.clip_ratio_c,
        loss_agg_mode=cfg.loss_agg_mode, token_weights=micro.rollout_is_weights, **counts)
    loss = pg_loss
    if cfg.entropy_coeff != 0.0:
        loss = loss - cfg.entropy_coeff * agg_loss(entropy, mask, cfg.loss_agg_mode, **counts)
    metrics["actor/entropy"] = _token_mean(entropy.detach(), mask)
    if cfg.use_kl_loss:
        kl = kl_penalty(log_probs, micro.ref_log_probs, cfg.kl_loss_type)
        loss = loss + cfg.kl_loss_coef * agg_loss(kl, mask, cfg.loss_agg_mode, **counts)
        metrics["actor/kl_loss"] = _token_mean(kl.detach(), mask)
    return loss, metrics


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return (values * mask).sum().item() / max(mask.sum().item(), 1.0)
