"""The actor: response log-probs from a forward pass, and the PPO-style GSPO update over mini-batches."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from gspo.algos import agg_loss, compute_policy_loss, entropy_from_logits, kl_penalty, log_probs_from_logits
from gspo.config import ActorConfig
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.metrics import MetricAccumulator


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def forward_response(model: PreTrainedModel, batch: RolloutBatch, *, temperature: float,
                     autocast_dtype: torch.dtype | None, with_entropy: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, R) of the response tokens under ``model`` at the sampling temperature, and entropy (N, R).

    Only the R+1 last positions go through the LM head (``logits_to_keep``), so prompt positions cost no
    vocabulary-sized work.
    """
    inputs = batch.model_inputs()
    response_len = batch.response_ids.shape[1]
    with _autocast(batch.response_ids.device, autocast_dtype):
        logits = model(**inputs, use_cache=False, logits_to_keep=response_len + 1).logits[:, :-1]  # (N, R, V)
    if temperature != 1.0:
        logits = logits / temperature  # log-probs of the distribution the rollout actually sampled from
    log_probs = log_probs_from_logits(logits, batch.response_ids)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return log_probs, entropy


@torch.no_grad()
def compute_log_probs(model: PreTrainedModel, batch: RolloutBatch, *, micro_batch_size: int, temperature: float,
                      autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """(N, R) response log-probs in micro-batches, without gradients (old policy or reference)."""
    was_training = model.training
    model.eval()
    try:
        parts = [forward_response(model, micro, temperature=temperature, autocast_dtype=autocast_dtype,
                                  with_entropy=False)[0] for micro in batch.split(micro_batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


@dataclass
class UpdateSchedule:
    """How one train batch is cut: ``num_mini_batches`` optimizer steps per epoch, ``ppo_epochs`` epochs."""

    num_mini_batches: int
    ppo_epochs: int

    @property
    def is_on_policy(self) -> bool:
        """True when every gradient is taken at the sampling policy: old log-probs equal current ones."""
        return self.num_mini_batches == 1 and self.ppo_epochs == 1


def update_policy(model: PreTrainedModel, optimizer: torch.optim.Optimizer, batch: RolloutBatch,
                  cfg: ActorConfig, *, n: int, temperature: float, autocast_dtype: torch.dtype | None,
                  max_response_length: int) -> dict[str, float]:
    """PPO-style epochs over mini-batches of ``cfg.ppo_mini_batch_size`` prompts (x n sequences).

    ``batch.old_log_probs`` None means the update is exactly on-policy: the current log-probs (detached) stand
    in for them, which skips a forward pass and gives ratio 1 by construction.
    Losses are normalised by the mini-batch's token / sequence counts, so micro-batching (and later data
    parallelism) leaves the gradient unchanged.
    """
    metrics = MetricAccumulator()
    mini_batch_rows = cfg.ppo_mini_batch_size * n
    num_updates = num_skipped = 0
    model.train()
    for _ in range(cfg.ppo_epochs):
        for mini_batch in batch.split(mini_batch_rows):
            mini_metrics = _optimizer_step(model, optimizer, mini_batch, cfg, temperature, autocast_dtype,
                                           max_response_length)
            num_updates += 1
            num_skipped += int(mini_metrics.pop("actor/skipped"))
            metrics.add(mini_metrics)
    return {**metrics.reduce(), "actor/num_updates": float(num_updates), "actor/skipped_updates": float(num_skipped)}


def _optimizer_step(model: PreTrainedModel, optimizer: torch.optim.Optimizer, mini_batch: RolloutBatch,
                    cfg: ActorConfig, temperature: float, autocast_dtype: torch.dtype | None,
                    max_response_length: int) -> dict[str, float]:
    # Mini-batch-global denominators: micro-batch losses then sum to the mini-batch loss exactly.
    counts = dict(global_num_tokens=mini_batch.response_mask.sum().item(),
                  global_num_seqs=(mini_batch.response_mask.sum(-1) > 0).sum().item(),
                  max_response_len=max_response_length)
    optimizer.zero_grad(set_to_none=True)
    micro_metrics = MetricAccumulator()
    pg_loss_total = 0.0
    for micro in mini_batch.split(cfg.ppo_micro_batch_size_per_gpu):
        loss, metrics = _micro_batch_loss(model, micro, cfg, temperature, autocast_dtype, counts)
        loss.backward()
        pg_loss_total += metrics.pop("actor/pg_loss")
        micro_metrics.add(metrics, weight=micro.response_mask.sum().item())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
    skipped = not math.isfinite(grad_norm)
    if skipped:  # a NaN/inf gradient would poison AdamW's moments for good; drop this step instead
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
    result = micro_metrics.reduce()
    result.update({"actor/pg_loss": pg_loss_total, "actor/grad_norm": grad_norm, "actor/skipped": float(skipped)})
    return result


def _micro_batch_loss(model: PreTrainedModel, micro: RolloutBatch, cfg: ActorConfig, temperature: float,
                      autocast_dtype: torch.dtype | None, counts: dict
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the mini-batch loss (global denominators), and its metrics."""
    log_probs, entropy = forward_response(model, micro, temperature=temperature, autocast_dtype=autocast_dtype,
                                          with_entropy=True)
    mask = micro.response_mask
    old_log_probs = micro.old_log_probs if micro.old_log_probs is not None else log_probs.detach()
    advantages = micro.advantages[:, None].expand_as(log_probs)  # (n, R): one advantage per sequence
    pg_loss, metrics = compute_policy_loss(
        old_log_probs, log_probs, advantages, mask, loss_mode=cfg.policy_loss.loss_mode,
        clip_ratio_low=cfg.clip_ratio_low, clip_ratio_high=cfg.clip_ratio_high, clip_ratio_c=cfg.clip_ratio_c,
        loss_agg_mode=cfg.loss_agg_mode, **counts)
    loss = pg_loss
    entropy_loss = agg_loss(entropy, mask, cfg.loss_agg_mode, **counts)
    if cfg.entropy_coeff != 0.0:
        loss = loss - cfg.entropy_coeff * entropy_loss
    metrics["actor/entropy"] = _token_mean(entropy.detach(), mask)
    if cfg.use_kl_loss:
        kl = kl_penalty(log_probs, micro.ref_log_probs, cfg.kl_loss_type)
        loss = loss + cfg.kl_loss_coef * agg_loss(kl, mask, cfg.loss_agg_mode, **counts)
        metrics["actor/kl_loss"] = _token_mean(kl.detach(), mask)
    return loss, metrics


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return (values * mask).sum().item() / max(mask.sum().item(), 1.0)
