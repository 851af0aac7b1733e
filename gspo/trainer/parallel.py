"""Data parallelism: FSDP2 sharding of the policy, its full weights for the rollout engine, rank shares of a batch.

Every rank holds the whole train batch (token ids, masks, rewards: megabytes, exchanged as tensors by
:func:`gather_batches_from_ranks`), so the dynamic-sampling decision and the advantages are computed identically
everywhere; each rank then trains on its contiguous share of every mini-batch. Losses use mini-batch-global
token / sequence counts (all-reduced), so the ranks' losses add up to the single-process loss; FSDP averages
gradients over ranks, so each rank back-propagates world_size x its loss (a divide factor of 1 would need
PREMUL_SUM, which gloo lacks) and the gradient equals the single-process one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import TypeVar

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from gspo.config import ConfigError, GSPOConfig
from gspo.distributed import DistContext, full_tensor_of
from gspo.errors import InputError
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


def shard_model(model: PreTrainedModel, *, world_size: int, bf16: bool, cpu_offload: bool,
                device_type: str | None = None, group=None) -> PreTrainedModel:
    """``fully_shard`` each transformer block, then the root (embeddings, final norm, LM head), in place.

    ``device_type``: where the shards will live (cpu / cuda); by default the parameters' device, which a model
    built on the meta device must not use.

    ``bf16``: parameters are all-gathered and used in bf16, gradients reduced in fp32, the fp32 master copy is
    what the optimizer updates. ``cpu_offload``: sharded parameters, gradients and optimizer state live on the
    CPU and the optimizer step runs there (FSDP2 offloads the three together); it trades step time (host-device
    copies every forward and backward, CPU AdamW) for GPU memory.
    """
    mixed = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    # The mesh lives on the model's device type (FSDP would pick the accelerator even for a CPU run on a GPU host).
    device_type = device_type or next(model.parameters()).device.type
    # ``group``: shard over a sub-group of the world (the trainer pool beside a rollout pool); None: every rank.
    mesh = init_device_mesh(device_type, (world_size,)) if group is None else DeviceMesh.from_group(group, device_type)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mixed, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=mixed, offload_policy=offload)
    return model


def iter_full_parameters(model: torch.nn.Module,
                         trainable_only: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every parameter name, one at a time, for a rollout engine's weight update.

    Under FSDP each is an all-gather every rank takes part in (consume the whole iterator on every rank); only one
    gathered parameter lives at a time, never a second full copy of the model. Tied parameters come under each of
    their names (an engine may keep, e.g., a separate output layer), gathered once. ``trainable_only``: only the
    parameters that can change (a LoRA policy's frozen base never does).
    """
    names: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if trainable_only and not param.requires_grad:
            continue
        names.setdefault(id(param), []).append(name)
        params[id(param)] = param
    for key, param in params.items():
        full = full_tensor_of(param)
        for name in names[key]:
            yield name, full


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
        lo, hi = dist.share_bounds(size)
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
    original where it happened), instead of leaving the others waiting in the gather forever. Elsewhere an
    :class:`~gspo.errors.InputError` stays one (exit 2 naming the input), anything else is a RuntimeError."""
    if not dist.is_distributed:
        return [compute()]
    result, error = None, None
    try:
        result = compute()
    except Exception as exc:
        error = exc
    failure = None if error is None else (f"{type(error).__name__}: {error}", isinstance(error, InputError))
    gathered = dist.all_gather_objects((result, failure))
    if error is not None:
        raise error
    for rank, (_, failed) in enumerate(gathered):
        if failed is not None:
            message, is_input = failed
            raise (InputError if is_input else RuntimeError)(f"rank {rank} failed: {message}")
    return [value for value, _ in gathered]


def gather_batches_from_ranks(dist: DistContext, compute: Callable[[], tuple[RolloutBatch, T] | None]
                              ) -> list[tuple[RolloutBatch, T]]:
    """Every rank's ``compute()`` result (a batch and a small record, e.g. its reward metrics; None: nothing),
    in rank order, ranks with nothing left out; errors travel as in :func:`gather_from_ranks`.

    Only the record and each batch's field layout (which fields are set, their dtypes) are pickled; every field
    of the batches moves as one padded tensor all-gather (:meth:`DistContext.all_gather_tensors`) in the
    narrowest dtype that carries every rank's values exactly (:func:`transport_dtype`), so the bytes grow with
    the rows and their lengths, never with the pickling of Python objects.
    """
    local: tuple[RolloutBatch, T] | None = None

    def describe() -> tuple[T, dict[str, tuple[torch.dtype, torch.dtype]]] | None:
        nonlocal local
        local = compute()
        if local is None:
            return None
        batch, record = local
        return record, {f.name: (getattr(batch, f.name).dtype, transport_dtype(f.name, getattr(batch, f.name)))
                        for f in fields(batch) if getattr(batch, f.name) is not None}

    headers = gather_from_ranks(dist, describe)
    if not dist.is_distributed:
        return [] if local is None else [local]
    present = [(rank, header) for rank, header in enumerate(headers) if header is not None]
    if not present:
        return []
    layouts = [layout for _, (_, layout) in present]
    gathered: dict[str, list[torch.Tensor]] = {}
    for f in fields(RolloutBatch):
        if f.name not in layouts[0]:
            continue
        dtype = layouts[0][f.name][0]
        wire = {layout[f.name][1] for layout in layouts}
        wire = wire.pop() if len(wire) == 1 else dtype  # narrow only where every rank's values fit
        # A rank with nothing sends an empty tensor of the field's rank and dtype: all ranks must take part.
        mine = torch.empty((0, 0) if f.metadata.get("pad") else (0,)) if local is None else getattr(local[0], f.name)
        gathered[f.name] = [part.to(dtype) for part in dist.all_gather_tensors(mine.to(wire))]
    return [(RolloutBatch(**{name: parts[rank] for name, parts in gathered.items()}), record)
            for rank, (record, _) in present]


def transport_dtype(name: str, values: torch.Tensor) -> torch.dtype:
    """The narrowest dtype that carries ``values`` exactly: bool for a mask (field ``*_mask``) of 0s and 1s,
    int32 for int64 values within its range (token ids, group ids), otherwise their own dtype.

    >>> transport_dtype("response_mask", torch.tensor([1.0, 0.0])), transport_dtype("group_ids", torch.tensor([7]))
    (torch.bool, torch.int32)
    """
    if name.endswith("_mask") and bool(((values == 0) | (values == 1)).all()):
        return torch.bool
    if values.dtype == torch.int64 and (values.numel() == 0 or (
            int(values.min()) >= torch.iinfo(torch.int32).min and int(values.max()) <= torch.iinfo(torch.int32).max)):
        return torch.int32
    return values.dtype


def export_template(model: PreTrainedModel) -> PreTrainedModel:
    """An empty (meta-device) model of the policy's class, config and generation config: what checkpoints and
    ``final_model`` are written with from a gathered state dict, so export needs neither the rollout engine nor an
    unsharded copy of the policy."""
    with torch.device("meta"):
        template = type(model)(copy.deepcopy(model.config))
    template.generation_config = copy.deepcopy(model.generation_config)
    return template
