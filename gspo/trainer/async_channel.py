"""What crosses between the trainer pool and the rollout pool of a run with ``actor_rollout_ref.rollout.mode=async``:
train batches one way, policy weights the other, both over torch.distributed (gloo on CPU).

- :class:`MessageChannel`: a message is a small header (the step, a record of metrics and producer state, and the
  name, dtype and shape of each tensor; pickled, a few kilobytes whatever the batch) and then every tensor by
  point-to-point send. Sends are non-blocking (``isend``), so a sender never waits for its receiver to arrive;
  the receiver blocks (``recv``). Batches therefore move as tensors, never pickled.
- :class:`WeightSync`: after an optimizer step trainer rank 0 broadcasts the full parameters on a process group
  of itself and the rollout ranks, flattened into buckets of at most :data:`BUCKET_BYTES` (one broadcast per
  bucket, one small header first with the version). Every parameter is sent once (tied ones under their first
  name); the receiving model copies each into its own parameter of that name.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist

from gspo.distributed import full_tensor_of
from gspo.trainer.batch import RolloutBatch

BUCKET_BYTES = 32 << 20  # per broadcast: large enough to amortise its latency, small next to the model


@dataclass
class Message:
    step: int
    record: dict[str, Any]  # small: metrics, producer state (JSON-able), an error
    tensors: dict[str, torch.Tensor]  # on the CPU


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


class MessageChannel:
    """Point-to-point messages from this process to ``peers`` (global ranks), and from any rank to this one."""

    def __init__(self, peers: list[int]):
        self.peers = peers
        self._pending: list[tuple[int, list, list[torch.Tensor]]] = []  # (step, works, buffers kept alive)

    def send(self, step: int, record: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Queue the message to every peer and return at once (the buffers are kept until the sends complete)."""
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in (tensors or {}).items()}
        layout = [(name, str(t.dtype), tuple(t.shape)) for name, t in tensors.items()]
        header = pickle.dumps({"step": step, "record": record, "layout": layout})
        payload = torch.frombuffer(bytearray(header), dtype=torch.uint8)
        items = [torch.tensor([payload.numel()], dtype=torch.long), payload,
                 *(t for t in tensors.values() if t.numel())]  # an empty tensor needs no bytes: rebuilt from shape
        works = [dist.isend(item, dst) for dst in self.peers for item in items]
        self._pending.append((step, works, items))

    def wait_sent(self, before_step: int | None = None) -> None:
        """Block until the messages of steps < ``before_step`` (all: None) have been received, and free them."""
        keep = []
        for step, works, items in self._pending:
            if before_step is None or step < before_step:
                for work in works:
                    work.wait()
            else:
                keep.append((step, works, items))
        self._pending = keep

    @staticmethod
    def receive(src: int) -> Message:
        """The next message from global rank ``src`` (blocking)."""
        size = torch.empty(1, dtype=torch.long)
        dist.recv(size, src)
        payload = torch.empty(int(size[0]), dtype=torch.uint8)
        dist.recv(payload, src)
        header = pickle.loads(payload.numpy().tobytes())
        tensors = {}
        for name, dtype, shape in header["layout"]:
            tensor = torch.empty(shape, dtype=_dtype(dtype))
            if tensor.numel():
                dist.recv(tensor, src)
            tensors[name] = tensor
        return Message(step=header["step"], record=header["record"], tensors=tensors)


def unique_parameters(model: torch.nn.Module, trainable_only: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """(first name, parameter) of every distinct parameter, in ``named_parameters`` order (tied ones once);
    ``trainable_only``: only those that require a gradient (a LoRA policy's adapters)."""
    seen: set[int] = set()
    unique = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if trainable_only and not param.requires_grad:
            continue
        if id(param) not in seen:
            seen.add(id(param))
            unique.append((name, param))
    return unique


def _buckets(sizes: list[tuple[torch.dtype, int]]) -> list[list[int]]:
    """Indices of consecutive parameters grouped into buckets of one dtype and at most BUCKET_BYTES (a larger
    parameter is a bucket of its own). ``sizes``: (dtype, numel) per parameter."""
    buckets: list[list[int]] = []
    current: list[int] = []
    current_bytes, current_dtype = 0, None
    for index, (dtype, numel) in enumerate(sizes):
        nbytes = numel * dtype.itemsize
        if current and (dtype != current_dtype or current_bytes + nbytes > BUCKET_BYTES):
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes, current_dtype = current_bytes + nbytes, dtype
    if current:
        buckets.append(current)
    return buckets


class WeightSync:
    """Publishes policy versions from trainer rank 0 (global rank ``src``) to the rollout ranks on ``group``.

    ``trainable_only``: only the parameters that train cross (a LoRA policy's adapters: both pools load the same
    frozen base, and the adapters start equal to it, B = 0)."""

    def __init__(self, group: Any, src: int, device: torch.device, trainable_only: bool = False):
        self.group, self.src, self.device = group, src, device
        self.trainable_only = trainable_only

    def _header(self, version: int, params: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        return torch.tensor([version, len(params), sum(p.numel() for _, p in params)], dtype=torch.long,
                            device=self.device)

    def publish(self, version: int, model: torch.nn.Module, *, sender: bool) -> None:
        """Broadcast ``model``'s full parameters as ``version``. Every trainer rank calls it (under FSDP each
        parameter is all-gathered over the trainer pool); only ``sender`` (trainer rank 0) broadcasts."""
        params = unique_parameters(model, self.trainable_only)
        if sender:
            dist.broadcast(self._header(version, params), self.src, group=self.group)
        sizes = [(p.dtype, p.numel()) for _, p in params]
        for bucket in _buckets(sizes):
            full = [full_tensor_of(params[i][1]).to(self.device) for i in bucket]  # all-gathers under FSDP
            if sender:
                flat = torch.cat([t.reshape(-1) for t in full])
                dist.broadcast(flat, self.src, group=self.group)

    @torch.no_grad()
    def receive(self, model: torch.nn.Module) -> int:
        """Load the next published version into ``model``'s parameters (in place); returns the version."""
        params = unique_parameters(model, self.trainable_only)
        header = self._header(-1, params)
        expected = header[1:].clone()
        dist.broadcast(header, self.src, group=self.group)
        if not torch.equal(header[1:], expected):
            raise RuntimeError(f"the trainer published {int(header[1])} parameters ({int(header[2])} values), this "
                               f"rollout rank's model has {int(expected[0])} ({int(expected[1])}): both pools must "
                               f"load actor_rollout_ref.model.path")
        sizes = [(p.dtype, p.numel()) for _, p in params]
        for bucket in _buckets(sizes):
            flat = torch.empty(sum(sizes[i][1] for i in bucket), dtype=sizes[bucket[0]][0], device=self.device)
            dist.broadcast(flat, self.src, group=self.group)
            offset = 0
            for i in bucket:
                param = params[i][1]
                param.copy_(flat[offset:offset + param.numel()].view_as(param))
                offset += param.numel()
        return int(header[0])


def batch_tensors(batch: RolloutBatch, prefix: str) -> dict[str, torch.Tensor]:
    """A :class:`~gspo.trainer.batch.RolloutBatch`'s set fields as named tensors (``prefix`` + field name)."""
    return {prefix + f.name: getattr(batch, f.name) for f in fields(batch) if getattr(batch, f.name) is not None}


def batch_from_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> RolloutBatch:
    """The :class:`~gspo.trainer.batch.RolloutBatch` that :func:`batch_tensors` named with ``prefix``."""
    return RolloutBatch(**{name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})

