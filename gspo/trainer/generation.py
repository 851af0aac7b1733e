"""Sampling and scoring prompt groups with the rollout engine, each rank its share, every rank the whole result."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from gspo.data import PromptItem
from gspo.distributed import DistContext
from gspo.rewards import RewardManager
from gspo.rollout import RolloutEngine, SamplingParams, group_keys
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.parallel import gather_batches_from_ranks, iter_full_parameters, merge_rank_reward_metrics
from gspo.trainer.timing import timer


class GroupGenerator:
    """Generates and scores groups of responses to prompts with the current policy's weights.

    Under ``torchrun`` every rank generates and scores its contiguous share of the prompts and the scored groups
    are gathered back, so every rank holds the same batch (the dynamic-sampling decision is then made identically
    everywhere). Only the policy's weights cross into the engine, and only after they changed.
    """

    def __init__(self, *, engine: RolloutEngine, policy: PreTrainedModel, tokenizer, rewards: RewardManager,
                 device: torch.device, dist: DistContext, seed: int, push_trainable_only: bool = False):
        """``seed``: ``trainer.seed``, which with a group's id seeds its sampling. ``push_trainable_only``: only
        the trainable parameters ever change (LoRA adapters), so only they are pushed to the engine."""
        self.engine = engine
        self.policy = policy
        self.tokenizer = tokenizer
        self.rewards = rewards
        self.device = device
        self.dist = dist
        self.seed = seed
        self.push_trainable_only = push_trainable_only
        self._weights_stale = False  # the engine starts from the policy's weights

    @property
    def eos_token_ids(self) -> list[int]:
        return self.engine.eos_token_ids

    def weights_changed(self) -> None:
        """The policy's weights changed (an update or a resume): the engine loads them before it generates again."""
        self._weights_stale = True

    def release_memory(self) -> None:
        """Before the trainer's forward passes: the engine frees what generation holds, if it can;
        :meth:`generate_and_score` resumes it (after loading changed weights)."""
        self.engine.release_memory()

    def generate_and_score(self, prompts: list[PromptItem], params: SamplingParams, group_ids: torch.Tensor, *,
                           step: int, timings: dict[str, float] | None = None) -> tuple[RolloutBatch, dict[str, float]]:
        """Generate and score ``prompts`` (each rank its contiguous share); every rank gets the whole batch.

        ``group_ids`` (one per prompt) seed the sampling; ``step`` is recorded as every row's ``generation_step``.
        Returns the scored batch in prompt order and the reward function's metrics over all of it; ``timings``
        gets ``timing/gen`` and ``timing/reward`` (this rank's seconds).
        """
        timings = {} if timings is None else timings
        if self._weights_stale:  # collective under FSDP: every rank, before any exit
            self.engine.update_weights(iter_full_parameters(self.policy, trainable_only=self.push_trainable_only))
            self._weights_stale = False
        self.engine.resume_memory()
        start, stop = self.dist.share_bounds(len(prompts))

        def local_share() -> tuple[RolloutBatch, dict[str, float]] | None:
            if start == stop:
                return None
            with timer(timings, "timing/gen"):
                batch = self.generate(prompts[start:stop], group_ids[start:stop], params, step=step)
            with timer(timings, "timing/reward"):
                return batch, self.score(batch, prompts[start:stop])

        parts = gather_batches_from_ranks(self.dist, local_share)
        batch = RolloutBatch.concat([b for b, _ in parts], self.tokenizer.pad_token_id)
        return batch, merge_rank_reward_metrics([(m, b.num_sequences) for b, m in parts])

    def generate(self, prompts: list[PromptItem], group_ids: torch.Tensor, params: SamplingParams, *,
                 step: int) -> RolloutBatch:
        """Sample ``params.n`` responses per prompt; rows of a group are contiguous.

        Sampling is seeded from (trainer.seed, group id): with an engine that seeds each response (hf) a response
        does not depend on its batch, its rank or a resume. The sampler's log-probs come back with every sampled
        batch (old log-probs, or the rollout/trainer mismatch metrics).
        """
        keys = group_keys(self.seed, group_ids) if params.do_sample else None
        with_log_probs = params.do_sample
        generation = self.engine.generate([p.prompt_ids for p in prompts], params, keys, with_log_probs)
        prompt_index = torch.tensor([p.index for p in prompts]).repeat_interleave(params.n)
        return RolloutBatch.from_generation(generation, group_ids=group_ids.repeat_interleave(params.n),
                                            prompt_index=prompt_index, generation_step=step).to("cpu")

    def score(self, batch: RolloutBatch, prompts: list[PromptItem]) -> dict[str, float]:
        """Fill ``seq_reward`` / ``seq_final_reward`` / ``acc`` in place; return the reward function's metrics
        (errors, overlong shaping, extras). The reward means are the dynamic-sampling statistics' to compute."""
        texts = self.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
        rewards = self.rewards.score_groups(texts, batch.response_lengths, prompts,
                                            batch.num_sequences // len(prompts))
        batch.seq_reward, batch.seq_final_reward, batch.acc = rewards.seq_reward, rewards.seq_final_reward, rewards.acc
        return rewards.metrics
