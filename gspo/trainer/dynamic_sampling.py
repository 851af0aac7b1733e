"""DAPO dynamic sampling: keep prompt groups whose metric varies, accumulate them until the train batch is full.

Filter metrics (``algorithm.filter_groups.metric``):

- ``seq_reward``: the reward function's score, before overlong shaping;
- ``seq_final_reward``: the reward the advantages use, after overlong shaping;
- ``acc``: the reward's ``acc`` (its score when it returns a plain number). Filter on ``acc`` when the score is
  shaped, so a group whose answers are all right but of different lengths still counts as solved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gspo.algos import filter_groups
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.metrics import MetricAccumulator


class DynamicSamplingError(RuntimeError):
    """The generation-batch cap was reached before the train batch filled."""


def keep_informative_groups(batch: RolloutBatch, metric: str) -> RolloutBatch:
    """Rows of the groups whose ``metric`` (a RolloutBatch field name) is not constant across the group."""
    values = getattr(batch, metric)
    return batch.select(filter_groups(values, batch.group_ids))


def split_groups(batch: RolloutBatch, num_groups: int) -> tuple[RolloutBatch, RolloutBatch]:
    """(rows of the first ``num_groups`` prompt groups in order, rows of the rest): whole groups only."""
    _, first_seen = _unique_in_order(batch.group_ids)
    chosen = torch.isin(batch.group_ids, first_seen[:num_groups])
    return batch.select(chosen), batch.select(~chosen)


def count_groups(batch: RolloutBatch) -> int:
    return int(torch.unique(batch.group_ids).numel())


def _unique_in_order(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(ids, return_inverse=True)
    first_pos = torch.full((unique.numel(),), ids.numel(), dtype=torch.long)
    first_pos.scatter_reduce_(0, inverse, torch.arange(ids.numel()), reduce="amin")
    return unique, unique[first_pos.argsort()]


@dataclass
class GenerationStats:
    """What every generation batch of one training step produced, so no metric is lost across batches."""

    eos_token_ids: list[int]
    max_response_length: int
    num_gen_batches: int = 0
    num_groups: int = 0
    num_kept_groups: int = 0
    _sums: dict[str, float] = field(default_factory=dict)
    _num_sequences: int = 0
    _max_length: int = 0
    _num_clipped: int = 0
    _num_reward_errors: int = 0
    _num_prefiltered: int = 0
    _surplus_groups: int = 0
    _surplus_age_sum: float = 0.0
    _reward_metrics: MetricAccumulator = field(default_factory=MetricAccumulator)

    def add_surplus(self, surplus: RolloutBatch, step: int) -> None:
        """Groups carried over from earlier steps count as kept, not as generated."""
        self.num_kept_groups += count_groups(surplus)
        self._surplus_groups += count_groups(surplus)
        self._surplus_age_sum += (step - surplus.generation_step).float().mean().item() * count_groups(surplus)

    def add_prefiltered(self, num_skipped: int) -> None:
        self._num_prefiltered += num_skipped

    def add(self, generated: RolloutBatch, kept: RolloutBatch, reward_metrics: dict[str, float]) -> None:
        """Record one generation batch, the groups kept from it, and its reward-function metrics."""
        self.num_gen_batches += 1
        self._reward_metrics.add(reward_metrics, weight=generated.num_sequences)
        self._num_reward_errors += int(reward_metrics.get("reward/errors", 0))
        self.num_groups += count_groups(generated)
        self.num_kept_groups += count_groups(kept)
        self._num_sequences += generated.num_sequences
        for name in ("seq_reward", "seq_final_reward", "acc"):
            self._sums[name] = self._sums.get(name, 0.0) + getattr(generated, name).sum().item()
        lengths = generated.response_lengths
        self._sums["length"] = self._sums.get("length", 0.0) + lengths.sum().item()
        self._max_length = max(self._max_length, int(lengths.max().item()))
        self._num_clipped += int(self._truncated(generated).sum().item())

    def _truncated(self, batch: RolloutBatch) -> torch.Tensor:
        """(N,) bool: responses that hit max_response_length without emitting EOS."""
        eos = torch.tensor(self.eos_token_ids, device=batch.response_ids.device)
        has_eos = (torch.isin(batch.response_ids, eos) & (batch.response_mask > 0)).any(-1)
        return ~has_eos & (batch.response_lengths >= self.max_response_length)

    def cap_error(self, needed: int, cap: int, metric: str) -> DynamicSamplingError:
        return DynamicSamplingError(
            f"dynamic sampling kept {self.num_kept_groups} of {self.num_groups} prompt groups in {cap} generation "
            f"batches, fewer than data.train_batch_size={needed}. Remedies: raise "
            f"algorithm.filter_groups.max_num_gen_batches (0 = unlimited), raise data.gen_batch_size, use data "
            f"the policy neither always solves nor always fails, or filter on a different "
            f"algorithm.filter_groups.metric (now {metric!r}).")

    def metrics(self) -> dict[str, float]:
        n = max(self._num_sequences, 1)
        reward_metrics = {**self._reward_metrics.reduce(), "reward/errors": float(self._num_reward_errors)}
        counts = {"train/num_gen_batches": float(self.num_gen_batches),
                  "train/generated_prompts": float(self.num_groups),
                  "train/kept_prompts": float(self.num_kept_groups),
                  "train/prefiltered_prompts": float(self._num_prefiltered),
                  "train/surplus_groups_used": float(self._surplus_groups),
                  "train/surplus_age_mean": self._surplus_age_sum / max(self._surplus_groups, 1),
                  "train/generated_tokens": self._sums.get("length", 0.0)}
        if self.num_groups == 0:
            # Filled from surplus alone: nothing was generated, so there is no filtered ratio, reward of the
            # generated responses or response length (logging 0 or 1 would skew the curves and their means).
            return {**reward_metrics, **counts}
        return {**reward_metrics, **counts,
                "train/filtered_prompts_ratio": 1.0 - (self.num_kept_groups - self._surplus_groups) / self.num_groups,
                "reward/all/score_mean": self._sums.get("seq_reward", 0.0) / n,
                "reward/all/final_reward_mean": self._sums.get("seq_final_reward", 0.0) / n,
                "reward/all/acc_mean": self._sums.get("acc", 0.0) / n,
                "response_length/mean": self._sums.get("length", 0.0) / n,
                "response_length/max": float(self._max_length),
                "response_length/clip_ratio": self._num_clipped / n}


def trained_batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Reward means of the groups that are actually trained on (after filtering and trimming)."""
    return {"reward/kept/score_mean": batch.seq_reward.mean().item(),
            "reward/kept/final_reward_mean": batch.seq_final_reward.mean().item(),
            "reward/kept/acc_mean": batch.acc.mean().item(),
            "reward/kept/advantage_abs_mean": batch.advantages.abs().mean().item()}
