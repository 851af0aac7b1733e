"""A rollout pool: generation on ranks of their own, a bounded number of policy versions behind the trainer.

With ``actor_rollout_ref.rollout.mode=async`` and ``actor_rollout_ref.rollout.n_gpus_per_node = R >= 1`` the
torchrun world is T trainer ranks (0..T-1; ``trainer.nnodes x trainer.n_gpus_per_node``) then R rollout ranks.
The trainer pool trains on a process group of its own (FSDP and every collective of the update stay inside it);
the rollout pool generates on another.

The schedule is fixed, whatever the timing: the train batch of step t is produced, with its whole
dynamic-sampling loop (generate, score, filter, regenerate, surplus, prefilter, probes), by exactly the policy of
version v = max(0, t - k), the weights after v optimizer steps (k = ``async_training.staleness_threshold``).
Sampling is seeded per response, so nothing depends on which side waits for which; nothing is discarded for
staleness, and every row records v (``RolloutBatch.generation_step``).

- The rollout ranks (:class:`RolloutWorker`) run a :class:`~gspo.trainer.producer.SyncBatchProducer` on their
  own copy of the policy. Before step t's batch they load every published version up to v (between batches,
  never during a generation call); the first rollout rank sends the finished batch (tensors) with its metrics
  and the producer's state after it to every trainer rank.
- The trainer ranks (:class:`AsyncBatchProducer`) receive step t's batch when they need it, and after the
  optimizer step of step t publish version t + 1 by bucketed broadcast when a later batch will use it
  (t + 1 + k < total steps).
- A checkpoint after step t (``global_step`` G = t + 1) holds the batches of steps G..G+k-1 (received ahead if
  need be: they only need versions the trainer already published), and the rollout side's state (prompt
  sampler, dynamic-sampling state, group-id counter) right after the last of them. A resume sends that state and
  version G to the rollout ranks, which go on from step G + k: the resumed run equals the uninterrupted one.

k = 0 is on-policy: the rollout waits for each update, the trainer for each batch, and the results equal
``mode=sync``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from gspo.config import ConfigError, GSPOConfig
from gspo.config.validation import rollout_pool_size
from gspo.distributed import DistContext, subgroup_context
from gspo.errors import InputError
from gspo.trainer.async_channel import MessageChannel, WeightSync, batch_from_tensors, batch_tensors
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.dynamic_sampling import DynamicSamplingError
from gspo.trainer.generation import GroupGenerator
from gspo.trainer.run_folder import crash_point

log = logging.getLogger(__name__)

# Test hook: "rollout=SECONDS" or "trainer=SECONDS" sleeps that long on that side before each batch, to show that
# results do not depend on which side waits.
DELAY_ENV = "GSPO_ASYNC_TEST_DELAY"
_QUEUE = "async_queue/"  # checkpoint tensors of the queued batches: async_queue/<step>/<field>
_BATCH = "batch/"
_STATE = "state/"


def _delay(side: str) -> None:
    value = os.environ.get(DELAY_ENV, "")
    if value.startswith(side + "="):
        time.sleep(float(value.split("=", 1)[1]))


@dataclass(frozen=True)
class AsyncPools:
    """This process's place in a run with a rollout pool."""

    role: str  # "trainer" or "rollout"
    dist: DistContext  # this process's pool: its collectives never involve the other pool
    trainer_ranks: list[int]
    rollout_ranks: list[int]
    weights: Any  # the process group of trainer rank 0 and the rollout ranks (weight broadcasts)
    local_rank: int

    @property
    def leader(self) -> int:
        """The rollout rank that sends the train batches."""
        return self.rollout_ranks[0]


def is_rollout_rank(cfg: GSPOConfig) -> bool:
    """Whether this process (by torchrun's RANK) belongs to the rollout pool."""
    trainer_ranks = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    return rollout_pool_size(cfg) > 0 and int(os.environ.get("RANK", "0")) >= trainer_ranks


def init_async_pools(cfg: GSPOConfig, world: DistContext) -> AsyncPools | None:
    """The two pools' process groups (collective over the whole world); None without a rollout pool."""
    num_rollout = rollout_pool_size(cfg)
    if num_rollout == 0:
        return None
    num_trainer = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if world.world_size != num_trainer + num_rollout:
        raise ConfigError(
            f"this run has {world.world_size} processes, but trainer.nnodes x trainer.n_gpus_per_node = {num_trainer} "
            f"trainer ranks and actor_rollout_ref.rollout.nnodes x actor_rollout_ref.rollout.n_gpus_per_node = "
            f"{num_rollout} rollout ranks make {num_trainer + num_rollout}; launch with gspo train (it starts "
            f"torchrun with --nproc_per_node={num_trainer + num_rollout}) or fix the keys")
    trainer_ranks, rollout_ranks = list(range(num_trainer)), list(range(num_trainer, num_trainer + num_rollout))
    trainer_dist, _ = subgroup_context(trainer_ranks, world.local_rank)
    rollout_dist, _ = subgroup_context(rollout_ranks, world.local_rank)
    _, weights = subgroup_context([0, *rollout_ranks], world.local_rank)
    role = "trainer" if world.rank < num_trainer else "rollout"
    return AsyncPools(role=role, dist=trainer_dist if role == "trainer" else rollout_dist,
                      trainer_ranks=trainer_ranks, rollout_ranks=rollout_ranks, weights=weights,
                      local_rank=world.local_rank)


class PoolStopped(RuntimeError):
    """The other pool's connection closed without a message: a rank there died (killed, out of memory, a crash in
    native code). ``gspo train`` ends with this one line (exit 1); that rank's own output says why."""


def _other_pool_died(what: str, exc: RuntimeError) -> PoolStopped:
    first = (str(exc).splitlines() or [""])[0]
    return PoolStopped(f"{what} stopped without a message (its connection closed: it died; its own output and "
                       f"the launcher's say why): {first}")


def _error_record(exc: BaseException, rank: int) -> dict[str, Any]:
    kind = "no_progress" if isinstance(exc, DynamicSamplingError) else "input" if isinstance(exc, InputError) \
        else "internal"
    first = (str(exc).splitlines() or [""])[0]
    return {"error": f"rollout rank {rank} failed: {type(exc).__name__}: {first}" if kind == "internal"
            else f"rollout rank {rank}: {exc}", "kind": kind}


def _raise_remote(record: dict[str, Any]) -> None:
    kind, message = record["kind"], record["error"]
    if kind == "no_progress":
        raise DynamicSamplingError(message)
    if kind == "input":
        raise InputError(message)
    raise RuntimeError(message)


class AsyncBatchProducer:
    """The trainer pool's :class:`~gspo.trainer.producer.BatchProducer` in a run with a rollout pool."""

    def __init__(self, pools: AsyncPools, config: GSPOConfig, *, total_steps: int, model: torch.nn.Module,
                 generator: GroupGenerator, device: torch.device):
        self.pools, self.config, self.total_steps = pools, config, total_steps
        self.k = config.async_training.staleness_threshold
        self.model, self.generator = model, generator  # the trainer's own generator validates
        self.is_sender = pools.dist.rank == 0
        self.channel = MessageChannel(pools.rollout_ranks if self.is_sender else [])
        self.weights = WeightSync(pools.weights, src=pools.trainer_ranks[0], device=device,
                                  trainable_only=config.actor_rollout_ref.model.lora_rank > 0)
        self.queue: dict[int, tuple[RolloutBatch, dict[str, float]]] = {}  # received, not yet trained
        self.rollout_state: tuple[dict, dict[str, torch.Tensor]] | None = None  # after the last batch received
        self.version = 0  # optimizer steps behind the trainer's weights
        self.started = False
        self.next_step = 0  # the step whose batch is trained next
        self._resume_next_batch: int | None = None
        self._update_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------- protocol
    def produce(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Step ``step``'s batch from the rollout pool (received now, or ahead by a checkpoint)."""
        self._start(step)
        _delay("trainer")
        start = time.perf_counter()
        while step not in self.queue:
            self._receive()
        waited = time.perf_counter() - start
        batch, metrics = self.queue.pop(step)
        self.next_step = step + 1
        staleness = (step - batch.generation_step).float()
        return batch, {**metrics, "async/trainer_wait_s": waited, "async/staleness_mean": staleness.mean().item(),
                       "async/staleness_max": staleness.max().item()}

    def before_update(self) -> None:
        self.generator.release_memory()

    def weights_changed(self) -> None:
        """After an optimizer step: publish the new version if a later batch uses it (before the first batch, i.e.
        on a resume, the version is published when the rollout pool starts)."""
        self.generator.weights_changed()
        if not self.started:
            return
        self.version += 1
        if self.version + self.k < self.total_steps:
            self._publish()

    def update_metrics(self) -> dict[str, float]:
        metrics, self._update_metrics = self._update_metrics, {}
        return metrics

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """The batches of steps G..G+k-1 (received now if need be) and the rollout side's state after them."""
        self._start(self.next_step)
        last = min(self.next_step + self.k, self.total_steps) - 1
        while last >= self.next_step and last not in self.queue:
            self._receive()
        state, tensors = self.rollout_state if self.rollout_state is not None else ({}, {})
        tensors = {_STATE + name: t for name, t in tensors.items()}
        queued = []
        for step, (batch, metrics) in sorted(self.queue.items()):
            queued.append({"step": step, "metrics": metrics})
            tensors.update(batch_tensors(batch, f"{_QUEUE}{step}/"))
        return {**state, "async_queue": queued}, tensors

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        queued = state.pop("async_queue", [])
        for entry in queued:
            step = entry["step"]
            self.queue[step] = (batch_from_tensors(tensors, f"{_QUEUE}{step}/"), entry["metrics"])
        self.rollout_state = (state, {name[len(_STATE):]: t for name, t in tensors.items() if name.startswith(_STATE)})
        self._resume_next_batch = max(self.queue, default=-1) + 1 or None

    # ------------------------------------------------------------------------------------------ internals
    def _start(self, step: int) -> None:
        """Once: tell the rollout pool where to begin (and its state, on a resume), then publish this version."""
        if self.started:
            return
        self.started, self.version, self.next_step = True, step, step
        next_batch = max(step, self._resume_next_batch or 0)
        if self.is_sender:
            state, tensors = self.rollout_state if self.rollout_state is not None and step > 0 else (None, {})
            try:
                self.channel.send(step, {"next_batch": next_batch, "version": step, "total_steps": self.total_steps,
                                         "state": state}, tensors)
            except RuntimeError as exc:
                raise _other_pool_died(f"rollout rank {self.pools.leader}", exc) from exc
        if step > 0 and next_batch < self.total_steps:
            self._publish()

    def _publish(self) -> None:
        start = time.perf_counter()
        try:
            self.weights.publish(self.version, self.model, sender=self.is_sender)
        except RuntimeError as exc:
            raise _other_pool_died(f"the rollout pool (ranks {self.pools.rollout_ranks})", exc) from exc
        self._update_metrics["timing/weight_sync"] = time.perf_counter() - start

    def _receive(self) -> None:
        try:
            message = MessageChannel.receive(self.pools.leader)
        except RuntimeError as exc:
            raise _other_pool_died(f"rollout rank {self.pools.leader}", exc) from exc
        if "error" in message.record:
            _raise_remote(message.record)
        tensors = message.tensors
        self.queue[message.step] = (batch_from_tensors(tensors, _BATCH), message.record["metrics"])
        self.rollout_state = (message.record["state"],
                              {name[len(_STATE):]: t for name, t in tensors.items() if name.startswith(_STATE)})


class RolloutWorker:
    """The loop of a rollout rank: load versions, produce batches, send them; until the last step's batch."""

    def __init__(self, pools: AsyncPools, config: GSPOConfig, *, producer, generator: GroupGenerator,
                 model: torch.nn.Module, device: torch.device):
        self.pools, self.config = pools, config
        self.k = config.async_training.staleness_threshold
        self.producer, self.generator, self.model = producer, generator, model
        self.is_leader = pools.dist.rank == 0
        self.rank = pools.rollout_ranks[pools.dist.rank]
        self.channel = MessageChannel(pools.trainer_ranks if self.is_leader else [])
        self.weights = WeightSync(pools.weights, src=pools.trainer_ranks[0], device=device,
                                  trainable_only=config.actor_rollout_ref.model.lora_rank > 0)

    def run(self) -> None:
        """Produce every batch the trainer pool asks for. Stop signals are left to the trainer pool (torchrun sends
        them to every rank): it finishes its step and checkpoints, which takes the batches in flight from this rank;
        this rank ends when the trainer's connection closes."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        try:
            self._run()
        except PoolStopped:
            raise  # the trainer pool is gone: nobody to tell
        except Exception as exc:
            if self.is_leader:  # the trainer pool stops with this rank's error in one line (unless it is gone)
                with contextlib.suppress(RuntimeError):
                    self.channel.send(-1, _error_record(exc, self.rank))
            self._wait_for_the_trainer_to_stop()
            raise

    def _wait_for_the_trainer_to_stop(self) -> None:
        """Outlive the trainer pool, so that its exit code and one line are the run's (torchrun stops the other
        ranks as soon as one exits with an error): wait until trainer rank 0's connection closes, or until
        torchrun's stop signal, which ends this process now."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(RuntimeError):
            dist.recv(torch.empty(1), src=self.pools.trainer_ranks[0])  # nothing is ever sent to it

    def _talk(self, call, *args, **kwargs):
        """A call that waits on the trainer pool; its connection closing means a trainer rank died."""
        try:
            return call(*args, **kwargs)
        except RuntimeError as exc:
            raise _other_pool_died(f"trainer rank {self.pools.trainer_ranks[0]}", exc) from exc

    def _run(self) -> None:
        start = self._talk(MessageChannel.receive, self.pools.trainer_ranks[0])
        plan = start.record
        held = plan["version"]
        if plan["version"] > 0 and plan["next_batch"] < plan["total_steps"]:
            held = self._load_next_version()
        if plan["state"] is not None:
            self.producer.load_state_dict(plan["state"], start.tensors)
        for step in range(plan["next_batch"], plan["total_steps"]):
            waited = time.perf_counter()
            while held < max(0, step - self.k):
                held = self._load_next_version()
            waited = time.perf_counter() - waited
            _delay("rollout")
            crash_point("rollout_batch", step)
            batch, metrics = self.producer.produce(step, policy_version=held)
            metrics["async/rollout_wait_s"] = waited
            if self.is_leader:
                state, state_tensors = self.producer.state_dict()
                tensors = {**batch_tensors(batch, _BATCH), **{_STATE + n: t for n, t in state_tensors.items()}}
                # Sends of older steps complete once the trainer has taken them; bounded memory, never a deadlock
                # (the trainer takes step s having published only versions the rollout side already loaded).
                self._talk(self.channel.wait_sent, before_step=step - self.k - 1)
                self._talk(self.channel.send, step, {"metrics": metrics, "state": state}, tensors)
        self._talk(self.channel.wait_sent)

    def _load_next_version(self) -> int:
        version = self._talk(self.weights.receive, self.model)
        self.generator.weights_changed()
        return version
