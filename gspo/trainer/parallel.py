"""Data parallelism: FSDP2 sharding of the policy, the unsharded rollout copy, and rank shares of a batch.

Every rank holds the whole train batch (token ids, masks, rewards: megabytes), so the dynamic-sampling decision
and the advantages are computed identically everywhere; each rank then trains on its contiguous share of every
mini-batch. Losses use mini-batch-global token / sequence counts (all-reduced), so the ranks' losses add up to
the single-process loss; FSDP averages gradients over ranks, so each rank back-propagates world_size x its loss
(a divide factor of 1 would need PREMUL_SUM, which gloo lacks) and the gradient equals the single-process one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from gspo.config import ConfigError, GSPOConfig
from gspo.distributed import DistContext, shard_bounds
from gspo.trainer.batch import RolloutBatch

T = TypeVar("T")


def decoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The transformer blocks: modules whose class HF marks as not to be split (``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__}: cannot find its transformer blocks to shard "
                         f"(_no_split_modules={sorted(names)})")
    return layers


def shard_model(model: PreTrainedModel, *, world_size: int, bf16: bool, cpu_offload: bool) -> PreTrainedModel:
    """``fully_shard`` each transformer block, then the root (embeddings, final norm, LM head), in place.

    ``bf16``: parameters are all-gathered and used in bf16, gradients reduced in fp32, the fp32 master copy is
    what the optimizer updates. ``cpu_offload``: sharded parameters, gradients and optimizer state live on the
    CPU and the optimizer step runs there (FSDP2 offloads the three together); it trades step time (host-device
    copies every forward and backward, CPU AdamW) for GPU memory.
    """
    mixed = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    # The mesh lives on the model's device type (FSDP would pick the accelerator even for a CPU run on a GPU host).
    mesh = init_device_mesh(next(model.parameters()).device.type, (world_size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mixed, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=mixed, offload_policy=offload)
    return model


def build_rollout_copy(model: PreTrainedModel, dtype: torch.dtype | None) -> PreTrainedModel:
    """An unsharded, gradient-free copy of ``model`` (before sharding) for generation.

    Generation runs a different number of forward passes on each rank (sequences stop early), which sharded
    parameters cannot do without all-gathers on every decoding step. The copy costs one full set of weights per
    rank (bf16 on CUDA: 2 bytes x parameters); its weights are refreshed after each update.

    Parameters are cast one at a time while copying, so no second full-precision model exists on the device even
    briefly; buffers (e.g. rotary frequencies) keep their dtype, as under FSDP's mixed precision in training.
    """
    memo = {id(param): torch.nn.Parameter(param.detach().to(dtype or param.dtype, copy=True), requires_grad=False)
            for param in model.parameters()}  # tied weights share one id, so they stay tied in the copy
    replica = copy.deepcopy(model, memo)
    return replica.eval()


@torch.no_grad()
def sync_rollout_weights(sharded: torch.nn.Module, replica: torch.nn.Module) -> None:
    """Copy the current (sharded) trainable parameters into the rollout copy; an all-gather per parameter on every
    rank."""
    targets = dict(replica.named_parameters())
    for name, param in sharded.named_parameters():
        if not param.requires_grad:  # frozen (a LoRA base): never changes
            continue
        target = targets[name]
        # CPU-offloaded shards move to the rollout device first, so the all-gather runs there (NCCL), not on gloo.
        full = param.to(target.device).full_tensor() if isinstance(param, DTensor) else param
        target.copy_(full)


def local_rows(batch: RolloutBatch, mini_batch_rows: int, dist: DistContext) -> RolloutBatch:
    """This rank's contiguous share of each mini-batch of ``mini_batch_rows`` rows, mini-batches in order.

    The result splits into local mini-batches of ``mini_batch_rows // world_size`` rows that line up with the
    global ones (the caller checks divisibility).
    """
    if not dist.is_distributed:
        return batch
    index = []
    for start in range(0, batch.num_sequences, mini_batch_rows):
        size = min(mini_batch_rows, batch.num_sequences - start)
        lo, hi = shard_bounds(size, dist.rank, dist.world_size)
        index.extend(range(start + lo, start + hi))
    return batch.select(torch.tensor(index, dtype=torch.long))


def full_grad_norm(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s total norm as a float (a DTensor under FSDP)."""
    return float((norm.full_tensor() if isinstance(norm, DTensor) else norm).item())


def merge_rank_reward_metrics(parts: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Per-rank reward metrics -> one dict: error counts add up, everything else is a mean over the sequences of
    the ranks that report it."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for metrics, n in parts:
        for name, value in metrics.items():
            weight = 1.0 if name == "reward/errors" else float(n)
            sums[name] = sums.get(name, 0.0) + value * weight
            weights[name] = weights.get(name, 0.0) + weight
    return {name: total if name == "reward/errors" else total / max(weights[name], 1.0)
            for name, total in sums.items()}


def check_data_parallel(cfg: GSPOConfig, world_size: int) -> None:
    """Every rank trains an equal share of each mini-batch."""
    rows = cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n
    if rows % world_size:
        raise ConfigError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size x actor_rollout_ref.rollout.n = {rows} sequences per "
            f"mini-batch do not split evenly over {world_size} ranks; choose values whose product is a multiple "
            f"of the number of processes")


def gather_from_ranks(dist: DistContext, compute: Callable[[], T]) -> list[T]:
    """Every rank's ``compute()`` result, in rank order. An exception on any rank is raised on every rank (the
    original where it happened), instead of leaving the others waiting in the gather forever."""
    if not dist.is_distributed:
        return [compute()]
    result, error = None, None
    try:
        result = compute()
    except Exception as exc:
        error = exc
    gathered = dist.all_gather_objects((result, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    for rank, (_, message) in enumerate(gathered):
        if message is not None:
            raise RuntimeError(f"rank {rank} failed: {message}")
    return [value for value, _ in gathered]
