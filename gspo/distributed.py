"""The process group of a run launched by ``torchrun`` (or a single process), and the few collectives we use.

``torchrun --nproc_per_node N -m gspo.train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we join the default
process group (NCCL on CUDA, gloo on CPU). Without those variables the run is one process and every collective
below is the identity, so single-process code pays nothing.

What crosses between ranks is sized by what it must carry: batches move as tensors
(:meth:`DistContext.all_gather_tensors`), metrics as all-reduced sums and maxima; pickled objects
(:meth:`DistContext.all_gather_objects`) are kept for small records whose size does not grow with the batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the run: ``rank`` of ``world_size``, ``local_rank`` on its node.

    ``group``: the process group the collectives below run on; None = the whole torchrun world. A pool of a
    run with a separate rollout pool (``actor_rollout_ref.rollout.mode=async``) is a sub-group: ``rank`` and
    ``world_size`` are then within it (:func:`subgroup_context`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, prints and writes files other than checkpoint shards."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def share_bounds(self, num_items: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of ``num_items`` items: shares differ by at most one, the
        first ``num_items % world_size`` ranks take the larger ones.

        >>> [DistContext(rank, 2).share_bounds(5) for rank in range(2)]
        [(0, 3), (3, 5)]
        >>> [DistContext(rank, 3).share_bounds(1) for rank in range(3)]
        [(0, 1), (1, 1), (1, 1)]
        """
        base, extra = divmod(num_items, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable, on CPU), in rank order. For small records only (errors, metric dicts,
        shapes): the whole object is pickled and sent to every rank; tensors go through :meth:`all_gather_tensors`."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.group)
        return gathered

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over ranks (a new tensor on the input's device; the input is not modified)."""
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def all_reduce_max(self, value: int) -> int:
        if not self.is_distributed:
            return value
        return int(self.all_reduce_max_values(torch.tensor([value], dtype=torch.long))[0])

    def all_reduce_max_values(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``values`` over ranks (a new tensor on the input's device)."""
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: torch.Tensor, op) -> torch.Tensor:
        if not self.is_distributed:
            return values
        reduced = values.to(_collective_device(), copy=True)
        dist.all_reduce(reduced, op=op, group=self.group)
        return reduced.to(values.device)

    def all_gather_tensors(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor``, in rank order, as tensors (no pickling): shapes may differ between ranks in
        every dimension, the number of dimensions and the dtype may not.

        The ranks first exchange their shapes (``ndim`` int64s each), then all-gather their tensors zero-padded
        at the end of every dimension to the largest shape, and trim each back to its own shape, so a rank
        receives world_size x the largest rank's payload.
        """
        if not self.is_distributed:
            return [tensor]
        shape = torch.tensor(tensor.shape, dtype=torch.long, device=_collective_device())
        shapes = [torch.empty_like(shape) for _ in range(self.world_size)]
        dist.all_gather(shapes, shape, group=self.group)
        largest = torch.stack(shapes).amax(0).tolist() if tensor.dim() else []
        padded = tensor.new_zeros(largest, device=_collective_device())
        padded[tuple(slice(0, size) for size in tensor.shape)] = tensor
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded, group=self.group)
        return [part[tuple(slice(0, size) for size in rank_shape.tolist())].to(tensor.device)
                for part, rank_shape in zip(gathered, shapes, strict=True)]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        if self.group is None:
            dist.broadcast_object_list(box, src=0)
        else:
            dist.broadcast_object_list(box, group=self.group, group_src=0)
        return box[0]

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier(group=self.group)


def _collective_device() -> torch.device:
    """Small host-side values (counts, flags) go through gloo: CPU for every backend we initialise."""
    return torch.device("cpu")


def init_distributed(device: str) -> DistContext:
    """Join the process group torchrun describes in the environment (idempotent); a single process otherwise.

    ``device`` is ``trainer.device`` (auto / cpu / cuda): NCCL when the run uses CUDA, gloo on CPU. Each rank
    uses GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # CUDA tensors go through NCCL, CPU tensors (counts, CPU-offloaded shards) through gloo. The timeout covers
        # rank 0's HF export and fsync between checkpoint barriers.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if use_cuda else "gloo", timeout=_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def subgroup_context(ranks: list[int], local_rank: int) -> tuple[DistContext, Any]:
    """This process's context within the sub-group of global ``ranks`` (sorted), and the group itself.

    Collective over the whole world: every process calls it with the same ``ranks``, members or not (torch's
    ``new_group``). A non-member gets ``(None, group)``; a sub-group of one process gets a single-process context
    (its collectives are the identity, as for a run of one process)."""
    group = dist.new_group(ranks=ranks)
    me = dist.get_rank()
    if me not in ranks:
        return None, group
    if len(ranks) == 1:
        return DistContext(local_rank=local_rank), group
    return DistContext(rank=ranks.index(me), world_size=len(ranks), local_rank=local_rank, group=group), group


# The context of a process that is not part of a torchrun group (the default of every dist= argument).
SINGLE_PROCESS = DistContext()


def full_tensor_of(param: torch.Tensor) -> torch.Tensor:
    """The full tensor of an FSDP2-sharded parameter (an all-gather every rank of its mesh takes part in, on the
    mesh's device even for CPU-offloaded shards: NCCL, not gloo); any other tensor as it is. Detached."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return param.detach()
    return param.detach().to(param.device_mesh.device_type).full_tensor()
