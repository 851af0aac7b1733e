"""Start-up under FSDP2 without a full copy of the model on every rank.

Every rank builds the model on the meta device (no memory for weights), prepares it (dropout, activation
checkpointing), shards it with FSDP2 and allocates its shards only. Rank 0 alone reads the checkpoint, into host
memory; its tensors reach every rank through ``set_model_state_dict(..., broadcast_from_rank0=True)``, one
transformer block at a time, each rank keeping its shard of each tensor, and rank 0 drops each block once it is
sent. Host memory beyond the shards: on rank 0 one block when the folder's safetensors hold the weights in the
training dtype (read from the files block by block), else the converted model, shrinking as it is sent; on the
other ranks one tensor in flight. On the accelerator: shards only.

Non-persistent buffers (rotary ``inv_freq``) are in no state dict: the meta-built model has no values for them,
so rank 0 sends its own (small) ones after the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from transformers import PreTrainedModel

from gspo.distributed import DistContext
from gspo.model.folder import weight_files
from gspo.model.loading import ModelLoadError, adapter_base_path, check_model_path, empty_causal_lm, load_causal_lm
from gspo.trainer.parallel import decoder_layers, gather_from_ranks

_BROADCAST = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


Block = Callable[[], dict[str, torch.Tensor]]  # reads one block's tensors when called (once)


@dataclass
class RankZeroCheckpoint:
    """What rank 0 sends: the state dict as blocks read one at a time (:func:`block_names`) and the
    non-persistent buffers. Nothing else holds the weights, so a sent block's memory is freed."""

    blocks: list[Block]
    buffers: dict[str, torch.Tensor]


def load_sharded_causal_lm(path: str, dist: DistContext, *, device: torch.device,
                           shard: Callable[[PreTrainedModel], object], dtype: torch.dtype = torch.float32,
                           prepare: Callable[[PreTrainedModel], object] | None = None,
                           shard_device: torch.device | None = None) -> PreTrainedModel:
    """The causal LM of ``path`` (``actor_rollout_ref.model.path``), FSDP2-sharded over ``dist``'s ranks.

    Every rank must call it. ``prepare(model)`` runs on the meta-device model before ``shard(model)`` (e.g.
    :func:`gspo.trainer.parallel.shard_model`); parameters are ``dtype``. Shards live on ``shard_device`` (the
    CPU under FSDP's CPU offload; default ``device``), buffers on ``device``. The result's full state dict and
    buffers equal what :func:`gspo.model.loading.load_causal_lm` reads, bit for bit, on every rank.
    """
    model = empty_causal_lm(path, dtype)
    if prepare is not None:
        prepare(model)
    shard(model)
    model.to_empty(device=shard_device or device)
    broadcast_from_rank0(model, read_on_rank0(path, dtype, dist, expected_names=set(model.state_dict())), dist)
    if shard_device is not None and shard_device != device:
        _move_buffers(model, device)
    return model


def read_on_rank0(path: str, dtype: torch.dtype, dist: DistContext, *, expected_names: set[str]
                  ) -> RankZeroCheckpoint | None:
    """Rank 0's view of the checkpoint at ``path`` in ``dtype`` (None elsewhere), whose state-dict names must be
    ``expected_names`` (the meta-built model's). A failure on rank 0 is raised on every rank, so none is left
    waiting for a broadcast.

    ``from_pretrained`` supplies the names, tied weights and non-persistent buffers. The weights come from the
    safetensors files, block by block, when they are stored under those names in ``dtype`` (what
    ``from_pretrained`` then returns is exactly those bytes, mapped from the file as one mapping that every
    block would keep resident until the last is sent); otherwise (another dtype, an adapter merged in, .bin
    files) from the loaded model, whose tensors are its own and are freed block by block.
    """
    read: list[RankZeroCheckpoint] = []

    def read_checkpoint() -> None:
        if dist.is_main:
            model = load_causal_lm(path, torch.device("cpu"), dtype)
            if set(model.state_dict()) != expected_names:
                raise ModelLoadError(
                    f"actor_rollout_ref.model.path: {path!r} loads with other state-dict names than its config's "
                    f"model has ({sorted(set(model.state_dict()) ^ expected_names)[:4]}); re-save it with "
                    f"save_pretrained")
            names = block_names(model)
            blocks = file_blocks(check_model_path(path), names, model, dtype) or _memory_blocks(model, names)
            read.append(RankZeroCheckpoint(blocks=blocks, buffers=non_persistent_buffers(model)))

    gather_from_ranks(dist, read_checkpoint)
    return read[0] if read else None


def broadcast_from_rank0(model: torch.nn.Module, checkpoint: RankZeroCheckpoint | None, dist: DistContext) -> None:
    """Copy rank 0's ``checkpoint`` (None on the others) into every rank's shards and buffers of ``model``.

    Collective. One ``set_model_state_dict`` call per block, which rank 0 reads just before and drops after,
    so its host memory holds one block at a time beyond the shards. ``model``'s state-dict names must be the
    checkpoint's (``strict=False`` only because each call carries one block).
    """
    blocks = checkpoint.blocks if checkpoint is not None else []
    for index in range(dist.broadcast_object(len(blocks))):
        # The others pass {}: rank 0's names and tensors come with the broadcast.
        block = blocks[index]() if dist.is_main else {}
        set_model_state_dict(model, block, options=_BROADCAST)
    _set_non_persistent_buffers(model, dist.broadcast_object(checkpoint.buffers if checkpoint is not None else None))


def block_names(model: PreTrainedModel) -> list[list[str]]:
    """``model``'s state-dict names, one list per transformer block, then one of everything else (embeddings,
    final norm, LM head, with their tied names)."""
    names = list(model.state_dict())
    layers = set(decoder_layers(model))
    prefixes = [f"{name}." for name, module in model.named_modules() if module in layers]
    blocks = [[name for name in names if name.startswith(prefix)] for prefix in prefixes]
    in_blocks = {name for block in blocks for name in block}
    return [*blocks, [name for name in names if name not in in_blocks]]


def _memory_blocks(model: PreTrainedModel, names: list[list[str]]) -> list[Block]:
    """Blocks of ``model``'s own tensors; each call hands its tensors over (popped from the only other holder)."""
    state = model.state_dict()
    return [lambda block=block: {name: state.pop(name) for name in block} for block in names]


def file_blocks(folder: Path, names: list[list[str]], model: PreTrainedModel, dtype: torch.dtype
                 ) -> list[Block] | None:
    """Blocks read from ``folder``'s safetensors files (each file mapped only while its block is in use), or
    None unless every state-dict name of ``model`` is stored there (under itself or a name it is tied to) with
    its shape in ``dtype``, and nothing else is."""
    if adapter_base_path(folder) is not None:
        return None
    stored = _stored_tensors(folder)
    if stored is None:
        return None
    state = model.state_dict()
    ties = _tied_names(model)
    source = {name: next((alias for alias in ties.get(name, [name]) if alias in stored), None) for name in state}
    if set(source.values()) != set(stored) or any(
            stored[file_name][1] != (dtype, tuple(state[name].shape)) for name, file_name in source.items()):
        return None

    def read(block: list[str]) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for file in {stored[source[name]][0] for name in block}:
            with safe_open(file, framework="pt", device="cpu") as handle:
                tensors.update({name: handle.get_tensor(source[name]) for name in block
                                if stored[source[name]][0] == file})
        return tensors

    return [lambda block=block: read(block) for block in names]


def _stored_tensors(folder: Path) -> dict[str, tuple[Path, tuple[torch.dtype, tuple[int, ...]]]] | None:
    """name -> (file, (dtype, shape)) of every tensor in the folder's safetensors files; None without any."""
    files = weight_files(folder)
    if not files or any(file.suffix != ".safetensors" for file in files):
        return None
    stored = {}
    for file in files:
        with safe_open(file, framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                info = handle.get_slice(name)
                stored[name] = (file, (_SAFETENSORS_DTYPES.get(info.get_dtype()), tuple(info.get_shape())))
    return stored


def _tied_names(model: torch.nn.Module) -> dict[str, list[str]]:
    """Each parameter name of a tied parameter -> every name of that parameter (itself first)."""
    by_param: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_param.setdefault(id(param), []).append(name)
    return {name: [name, *(alias for alias in group if alias != name)]
            for group in by_param.values() if len(group) > 1 for name in group}


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
