"""Producing train batches: generate -> score -> filter, behind one small interface.

The trainer asks a :class:`BatchProducer` for each step's batch and tells it when the policy's weights change; it
never knows how the batch was made. :class:`SyncBatchProducer` makes it in the trainer's own processes, between
updates (DAPO dynamic sampling, :mod:`gspo.trainer.dynamic_sampling`). A producer running on other ranks, a
policy version behind, implements the same protocol; every row carries the step whose policy sampled it
(``RolloutBatch.generation_step``), which is what the old-policy rule reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import torch

from gspo.config import GSPOConfig
from gspo.data import PromptDataset, PromptSampler
from gspo.rollout import SamplingParams
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.dynamic_sampling import GenerationStats, collect_train_batch
from gspo.trainer.generation import GroupGenerator
from gspo.trainer.sampling_state import DynamicSamplingState


class BatchProducer(Protocol):
    """What the trainer needs from whatever produces its train batches."""

    def produce(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The train batch of training step ``step``: ``data.train_batch_size`` whole prompt groups of n scored
        rows each, on the CPU, the same on every rank; and the step's generation metrics (``train/*``,
        ``reward/*``, ``response_length/*``, ``timing/gen``, ``timing/reward``)."""
        ...

    def before_update(self) -> None:
        """The trainer is about to run its own forward passes (old log-probs, reference, the optimizer steps):
        free what generation holds in this process. Generation takes it back when next asked for a batch."""
        ...

    def weights_changed(self) -> None:
        """The policy's weights changed (an update, or a resume): generation from now on uses the new ones."""
        ...

    def update_metrics(self) -> dict[str, float]:
        """Metrics of handing the updated weights over (``timing/weight_sync``), for the step's row."""
        ...

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """What a checkpoint keeps to resume production exactly: a JSON-able dict and named tensors."""
        ...

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class SyncBatchProducer:
    """Generates each train batch when asked, in the trainer's processes, with the current weights.

    Owns the prompt sampler, the dynamic-sampling state (surplus, keep ratio, prefilter streaks) and the counter
    of training group ids, which never repeat within a run; all three are checkpointed (``trainer_state.json``
    keys ``sampler``, ``dynamic_sampling``, ``next_group_id``; the surplus groups as tensors).
    """

    def __init__(self, generator: GroupGenerator, train_data: PromptDataset, config: GSPOConfig):
        self.generator = generator
        self.train_data = train_data
        self.config = config
        self.sampler = PromptSampler(len(train_data), seed=config.trainer.seed, shuffle=config.data.shuffle)
        self.sampling_state = DynamicSamplingState(
            config.algorithm.filter_groups,
            default_gen_batch_size=config.data.gen_batch_size or config.data.train_batch_size,
            num_prompts=len(train_data), seed=config.trainer.seed)
        self._next_group_id = 0

    def produce(self, step: int, policy_version: int | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        """DAPO dynamic sampling: generation batches until ``data.train_batch_size`` informative groups are kept.

        ``policy_version``: the optimizer steps behind the weights that generate (recorded as every row's
        ``generation_step``); None = ``step``, the current weights of a synchronous run. A rollout pool
        (:mod:`gspo.trainer.async_rollout`) generates step t's batch with version max(0, t - k)."""
        version = step if policy_version is None else policy_version
        cfg = self.config
        params, timings = self._sampling_params(), {}

        def generate_and_score(prompt_indices: list[int], num_responses: int | None = None):
            group_ids = torch.arange(self._next_group_id, self._next_group_id + len(prompt_indices))
            self._next_group_id += len(prompt_indices)
            return self.generator.generate_and_score(
                [self.train_data[i] for i in prompt_indices],
                params if num_responses is None else replace(params, n=num_responses), group_ids,
                step=version, timings=timings)

        stats = GenerationStats(eos_token_ids=self.generator.eos_token_ids,
                                max_response_length=cfg.data.max_response_length)
        batch, metrics = collect_train_batch(
            cfg.data.train_batch_size, cfg.algorithm.filter_groups, self.sampling_state, step=step,
            draw_prompts=self.sampler.take, stats=stats, generate_and_score=generate_and_score,
            pad_token_id=self.generator.tokenizer.pad_token_id)
        return batch, {**metrics, **timings}

    def before_update(self) -> None:
        self.generator.release_memory()

    def weights_changed(self) -> None:
        self.generator.weights_changed()

    def update_metrics(self) -> dict[str, float]:
        return {}  # the engine reads the policy's weights when it next generates (timed in timing/gen)

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        sampling, surplus = self.sampling_state.state_dict()
        return ({"sampler": self.sampler.state_dict(), "dynamic_sampling": sampling,
                 "next_group_id": self._next_group_id}, surplus)

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.sampling_state.load_state_dict(state["dynamic_sampling"], tensors)
        self._next_group_id = state["next_group_id"]

    def _sampling_params(self) -> SamplingParams:
        rollout = self.config.actor_rollout_ref.rollout
        return SamplingParams(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p,
                              top_k=rollout.top_k, do_sample=True,
                              max_new_tokens=self.config.data.max_response_length)
