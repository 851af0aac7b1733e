"""Start-up under FSDP2 without a full copy of the model on every rank.

Every rank builds the model on the meta device (no memory for weights), prepares it (dropout, activation
checkpointing), shards it with FSDP2 and allocates its shards only. Rank 0 alone reads the checkpoint, into host
memory; its tensors reach every rank through ``set_model_state_dict(..., broadcast_from_rank0=True)``, one
transformer block at a time, each rank keeping its shard of each tensor, and rank 0 drops each block once it is
sent. Host memory at its peak: rank 0 one full copy of the weights in the checkpoint's reading dtype (as a single
process holds), every other rank its shards plus one tensor in flight; on the accelerator, shards only.

Non-persistent buffers (rotary ``inv_freq``) are in no state dict: the meta-built model has no values for them,
so rank 0 sends its own (small) ones after the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from transformers import PreTrainedModel

from gspo.distributed import DistContext
from gspo.models import ModelLoadError, empty_causal_lm, load_causal_lm
from gspo.trainer.parallel import decoder_layers, gather_from_ranks

_BROADCAST = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)


@dataclass
class RankZeroCheckpoint:
    """What rank 0 read, ready to send: the state dict in blocks (see :func:`state_dict_blocks`) and the
    non-persistent buffers. Holds the only references to the tensors, so sent blocks can be freed."""

    blocks: list[dict[str, torch.Tensor]]
    buffers: dict[str, torch.Tensor]


def load_sharded_causal_lm(path: str, dist: DistContext, *, device: torch.device,
                           shard: Callable[[PreTrainedModel], object], dtype: torch.dtype = torch.float32,
                           prepare: Callable[[PreTrainedModel], object] | None = None,
                           shard_device: torch.device | None = None) -> PreTrainedModel:
    """The causal LM of ``path`` (``actor_rollout_ref.model.path``), FSDP2-sharded over ``dist``'s ranks.

    Every rank must call it. ``prepare(model)`` runs on the meta-device model before ``shard(model)`` (e.g.
    :func:`gspo.trainer.parallel.shard_model`); parameters are ``dtype``. Shards live on ``shard_device`` (the
    CPU under FSDP's CPU offload; default ``device``), buffers on ``device``. The result's full state dict and
    buffers equal what :func:`gspo.models.load_causal_lm` reads, bit for bit, on every rank.
    """
    model = empty_causal_lm(path, dtype)
    if prepare is not None:
        prepare(model)
    shard(model)
    model.to_empty(device=shard_device or device)
    checkpoint = read_on_rank0(path, dtype, model, dist)
    broadcast_from_rank0(model, checkpoint, dist)
    if shard_device is not None and shard_device != device:
        _move_buffers(model, device)
    return model


def read_on_rank0(path: str, dtype: torch.dtype, target: torch.nn.Module, dist: DistContext
                  ) -> RankZeroCheckpoint | None:
    """Rank 0 reads ``path`` into host memory (None elsewhere) and checks its names against ``target``'s. A
    failure on rank 0 is raised on every rank, so none is left waiting for a broadcast."""
    read: list[RankZeroCheckpoint] = []

    def read_and_check() -> None:
        if not dist.is_main:
            return
        model = load_causal_lm(path, torch.device("cpu"), dtype)
        expected, found = set(target.state_dict()), set(model.state_dict())
        if expected != found:
            raise ModelLoadError(f"actor_rollout_ref.model.path: {path!r} loads with state-dict names its config's "
                                 f"model does not have, or without some it has: {sorted(found ^ expected)[:5]}; "
                                 f"re-save the folder with save_pretrained")
        read.append(RankZeroCheckpoint(blocks=state_dict_blocks(model), buffers=non_persistent_buffers(model)))

    gather_from_ranks(dist, read_and_check)
    return read[0] if read else None


def broadcast_from_rank0(model: torch.nn.Module, checkpoint: RankZeroCheckpoint | None, dist: DistContext) -> None:
    """Copy rank 0's ``checkpoint`` (None on the others) into every rank's shards and buffers of ``model``.

    Collective. One ``set_model_state_dict`` call per block: rank 0 empties each block once it is sent, so its
    full copy shrinks as the shards fill.
    """
    blocks = checkpoint.blocks if checkpoint is not None else []
    for index in range(dist.broadcast_object(len(blocks))):
        block = blocks[index] if dist.is_main else {}  # the others receive rank 0's names with the tensors
        if dist.is_main:
            blocks[index] = {}
        set_model_state_dict(model, block, options=_BROADCAST)
    _set_non_persistent_buffers(model, dist.broadcast_object(checkpoint.buffers if checkpoint is not None else None))


def state_dict_blocks(model: PreTrainedModel) -> list[dict[str, torch.Tensor]]:
    """``model``'s state dict as one dict per transformer block, then one of everything else (embeddings, final
    norm, LM head, with their tied names)."""
    state = model.state_dict()
    layers = set(decoder_layers(model))
    prefixes = [f"{name}." for name, module in model.named_modules() if module in layers]
    blocks = [{name: state.pop(name) for name in list(state) if name.startswith(prefix)} for prefix in prefixes]
    return [*blocks, state]


def non_persistent_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Buffers a state dict leaves out (e.g. rotary ``inv_freq``), by qualified name."""
    return {f"{prefix}{'.' if prefix else ''}{name}": buffer
            for prefix, module in model.named_modules()
            for name, buffer in module.named_buffers(recurse=False)
            if name in module._non_persistent_buffers_set}


@torch.no_grad()
def _set_non_persistent_buffers(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    targets = non_persistent_buffers(model)
    if values.keys() != targets.keys():
        raise ModelLoadError(f"actor_rollout_ref.model.path: the checkpoint's model has the non-persistent buffers "
                             f"{sorted(values)}, its config's model {sorted(targets)}; re-save the folder with "
                             f"save_pretrained")
    for name, value in values.items():
        targets[name].copy_(value)


def _move_buffers(model: torch.nn.Module, device: torch.device) -> None:
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            module._buffers[name] = buffer.to(device)
