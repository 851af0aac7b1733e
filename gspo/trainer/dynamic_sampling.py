"""DAPO dynamic sampling, in one place: generate -> score -> filter -> accumulate until the train batch is full.

:func:`collect_train_batch` is the loop, over two callables (draw prompt indices, generate and score them), so it
runs without a model; :class:`DynamicSamplingState` is what carries over from one training step to the next;
the per-group keep rule itself is :func:`gspo.algos.informative_rows_mask` (DAPO, arXiv:2503.14476, Sec. 3.2).

Filter metrics (``algorithm.filter_groups.metric``):

- ``seq_reward``: the reward function's score, before overlong shaping;
- ``seq_final_reward``: the reward the advantages use, after overlong shaping;
- ``acc``: the reward's ``acc`` (its score when it returns a plain number). Filter on ``acc`` when the score is
  shaped, so a group whose answers are all right but of different lengths still counts as solved.

Dynamic sampling that wastes little. Three switches under ``algorithm.filter_groups``, each off by default
(verl's behaviour):

- ``keep_surplus``: kept groups beyond ``train_batch_size`` wait for the next step instead of being dropped; they
  are used first, at most ``max_surplus_age`` steps after they were generated, and never twice.
- ``adaptive_gen_batch_size``: each generation batch is sized from the running keep ratio so that one batch
  usually fills what the train batch still needs.
- ``prefilter``: a prompt whose last ``min_constant_visits`` groups were all-equal (always solved, or always
  failed) is skipped before generation; each skip is re-admitted with probability ``readmit_prob`` so no prompt
  is lost for good (``readmit_decay``: with ``readmit_prob ** (streak - min_constant_visits + 1)``, GRESO's
  exponential back-off, arXiv 2506.02177); ``failed_readmit_prob`` gives prompts whose last group all failed their
  own constant rate, as GRESO keeps separate rates for easy and hard prompts. Skipped prompts are replaced by
  further draws, so a generation batch still holds the number of prompts its sizing asked for. With
  ``probe_responses`` = k > 0 a prompt the prefilter would skip is probed instead: k responses, and the other
  n - k only when one of the k scores unlike the prompt's last all-equal group (then it is a full group, kept or
  dropped as any other); a probe that agrees is dropped and the streak grows. The check costs k / n of a group,
  and a failed prompt the policy has started to solve is caught on its next visit with probability about its pass
  rate (k = 1), where a re-admission catches it only as often as it is drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import torch

from gspo.algos import group_keep_mask, informative_rows_mask
from gspo.config import FilterGroupsConfig
from gspo.rollout.truncation import truncated_responses
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.checkpoint import python_rng_from_json, python_rng_to_json
from gspo.trainer.metrics import MetricAccumulator
from gspo.trainer.parallel import merge_rank_reward_metrics

_KEEP_RATIO_MOMENTUM = 0.7  # weight of the past in the running keep ratio
_MIN_KEEP_RATIO = 0.05  # never size a batch for less than a 5% keep ratio (bounds one batch at 20x the need)
_HEADROOM = 1.1  # generate 10% more than the expected need so one batch usually suffices
_SAME_VALUE_TOLERANCE = 1e-6  # a probe scores "like" the last all-equal group within this (group_keep_mask's)

DrawPrompts = Callable[[int], list[int]]  # how many -> that many prompt indices (the sampler's next ones)


class GenerateAndScore(Protocol):
    def __call__(self, prompt_indices: list[int], num_responses: int | None = None
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        """Scored groups of ``num_responses`` (default: rollout.n) responses for the prompts, in their order,
        with the reward function's metrics; group ids never repeat within a run."""
        ...


class DynamicSamplingError(RuntimeError):
    """The generation-batch cap was reached before the train batch filled."""


def keep_informative_groups(batch: RolloutBatch, metric: str) -> RolloutBatch:
    """Rows of the groups whose ``metric`` (a RolloutBatch field name) is not constant across the group."""
    values = getattr(batch, metric)
    return batch.select(informative_rows_mask(values, batch.group_ids))


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
    _num_probed: int = 0
    _num_probes_completed: int = 0
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

    def add_probed(self, num_probed: int, num_completed: int) -> None:
        self._num_probed += num_probed
        self._num_probes_completed += num_completed

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
        self._num_clipped += int(truncated_responses(generated.response_ids, generated.response_mask,
                                                     self.eos_token_ids, self.max_response_length).sum().item())

    def cap_error(self, needed: int, cap: int, metric: str) -> DynamicSamplingError:
        return DynamicSamplingError(
            f"dynamic sampling kept {self.num_kept_groups} of {self.num_groups} prompt groups in {cap} generation "
            f"batches, fewer than data.train_batch_size={needed}. Remedies: raise "
            f"algorithm.filter_groups.max_num_gen_batches (0 = unlimited), raise data.gen_batch_size, use data "
            f"the policy neither always solves nor always fails, or filter on a different "
            f"algorithm.filter_groups.metric (now {metric!r}).{self._reward_error_note()}")

    def _reward_error_note(self) -> str:
        if not self._num_reward_errors:
            return ""
        return (f" {self._num_reward_errors} of {self._num_sequences} responses had reward errors (raised or past "
                f"reward_model.timeout_s) and were scored 0 under reward_model.on_error=zero: fix the reward "
                f"function first, or set reward_model.on_error=raise to see the first failure.")

    def metrics(self) -> dict[str, float]:
        n = max(self._num_sequences, 1)
        reward_metrics = {**self._reward_metrics.reduce(), "reward/errors": float(self._num_reward_errors)}
        counts = {"train/num_gen_batches": float(self.num_gen_batches),
                  "train/generated_prompts": float(self.num_groups),
                  "train/kept_prompts": float(self.num_kept_groups),
                  "train/prefiltered_prompts": float(self._num_prefiltered),
                  "train/probed_prompts": float(self._num_probed),
                  "train/probes_completed": float(self._num_probes_completed),
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


class DynamicSamplingState:
    """Surplus groups, the running keep ratio and per-prompt all-equal streaks; checkpointed with the run."""

    def __init__(self, cfg: FilterGroupsConfig, *, default_gen_batch_size: int, num_prompts: int, seed: int = 0):
        self.cfg = cfg
        # Its own RNG, not the global one: every rank must make the same draws whatever else (a custom reward
        # function, say) consumes random numbers on that rank.
        self._rng = random.Random(seed)
        self.default_gen_batch_size = default_gen_batch_size
        self.num_prompts = num_prompts
        self.surplus: RolloutBatch | None = None
        self.keep_ratio: float | None = None
        self.constant_streak: dict[int, int] = {}
        self.last_failed: set[int] = set()  # prompts whose last all-equal group had accuracy 0
        self.constant_value: dict[int, float] = {}  # the filter metric of each prompt's last all-equal group

    # ------------------------------------------------------------------------------------------ surplus
    def take_surplus(self, step: int) -> RolloutBatch | None:
        """Surplus groups still fresh enough for ``step`` (at most ``max_surplus_age`` steps old); clears the store."""
        surplus, self.surplus = self.surplus, None
        if surplus is None:
            return None
        fresh = surplus.select(step - surplus.generation_step <= self.cfg.max_surplus_age)
        return fresh if fresh.num_sequences else None

    def store_surplus(self, leftover: RolloutBatch | None) -> None:
        if self.cfg.keep_surplus and leftover is not None and leftover.num_sequences:
            self.surplus = leftover

    # ------------------------------------------------------------------------------------ batch sizing
    def gen_batch_size(self, groups_needed: int) -> int:
        """Prompts to draw for the next generation batch."""
        if not self.cfg.adaptive_gen_batch_size or self.keep_ratio is None:
            return self.default_gen_batch_size
        wanted = math.ceil(groups_needed / max(self.keep_ratio, _MIN_KEEP_RATIO) * _HEADROOM)
        return max(1, min(wanted, self.num_prompts))

    def observe(self, batch: RolloutBatch, metric: str, *, update_keep_ratio: bool = True) -> None:
        """Update the keep ratio (unless ``update_keep_ratio`` is false: completed probes were not drawn by the
        sizing) and the all-equal streaks from scored full groups."""
        values = getattr(batch, metric)
        group_ids, keep = group_keep_mask(values, batch.group_ids)
        if update_keep_ratio:
            ratio = keep.float().mean().item()
            self.keep_ratio = ratio if self.keep_ratio is None else (
                _KEEP_RATIO_MOMENTUM * self.keep_ratio + (1 - _KEEP_RATIO_MOMENTUM) * ratio)
        prompt_of_group = dict(zip(batch.group_ids.tolist(), batch.prompt_index.tolist()))
        value_of_group = dict(zip(batch.group_ids.tolist(), values.tolist()))
        accuracy = batch.acc if batch.acc is not None else values
        solved_any = {g for g, acc in zip(batch.group_ids.tolist(), accuracy.tolist()) if acc > 0}
        for group, informative in zip(group_ids.tolist(), keep.tolist()):
            prompt = prompt_of_group[group]
            self.constant_streak[prompt] = 0 if informative else self.constant_streak.get(prompt, 0) + 1
            if informative:
                self.constant_value.pop(prompt, None)
            else:
                self.constant_value[prompt] = value_of_group[group]
            if not informative and group not in solved_any:
                self.last_failed.add(prompt)
            else:
                self.last_failed.discard(prompt)

    def observe_agreeing_probes(self, prompt_indices: list[int]) -> None:
        """Probes that scored like their prompt's last all-equal group extend its streak."""
        for prompt in prompt_indices:
            self.constant_streak[prompt] = self.constant_streak.get(prompt, 0) + 1

    def surprising_rows(self, probes: RolloutBatch, metric: str) -> torch.Tensor:
        """(N,) bool: rows of the probe groups in which some response scores unlike the prompt's last all-equal
        group (every row of a prompt with no recorded value: a checkpoint from before probes)."""
        last = torch.tensor([self.constant_value.get(p, math.nan) for p in probes.prompt_index.tolist()])
        differs = ~((getattr(probes, metric).float() - last).abs() <= _SAME_VALUE_TOLERANCE)  # NaN: differs
        _, inverse = torch.unique(probes.group_ids, return_inverse=True)
        group_differs = torch.zeros(int(inverse.max()) + 1).index_add_(0, inverse, differs.float()) > 0
        return group_differs[inverse]

    # --------------------------------------------------------------------------------------- prefilter
    def admit(self, prompt_indices: list[int]) -> tuple[list[int], list[int]]:
        """(the prompts to generate for, those the prefilter skips), both in draw order."""
        prefilter = self.cfg.prefilter
        if not prefilter.enable:
            return prompt_indices, []
        admitted, skipped = [], []
        for i in prompt_indices:
            streak = self.constant_streak.get(i, 0)
            generate = (streak < prefilter.min_constant_visits
                        or self._rng.random() < self.readmit_probability(streak, i in self.last_failed))
            (admitted if generate else skipped).append(i)
        return admitted, skipped

    def readmit_probability(self, streak: int, failed: bool = False) -> float:
        """Chance that a prompt with ``streak`` (>= min_constant_visits) all-equal visits in a row is generated;
        ``failed``: its last group had accuracy 0 everywhere."""
        prefilter = self.cfg.prefilter
        if failed and prefilter.failed_readmit_prob is not None:
            return prefilter.failed_readmit_prob
        if not prefilter.readmit_decay:
            return prefilter.readmit_prob
        return prefilter.readmit_prob ** (streak - prefilter.min_constant_visits + 1)

    # -------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able state, tensors of the surplus batch)."""
        tensors = (
            {}
            if self.surplus is None
            else {
                f.name: getattr(self.surplus, f.name)
                for f in fields(RolloutBatch)
                if getattr(self.surplus, f.name) is not None
            }
        )
        return {
            "keep_ratio": self.keep_ratio,
            "constant_streak": {str(k): v for k, v in self.constant_streak.items()},
            "last_failed": sorted(self.last_failed),
            "constant_value": {str(k): v for k, v in self.constant_value.items()},
            "rng": python_rng_to_json(self._rng.getstate()),
        }, tensors

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.keep_ratio = state["keep_ratio"]
        self.constant_streak = {int(k): v for k, v in state["constant_streak"].items()}
        self.last_failed = set(state.get("last_failed", ()))  # absent in checkpoints from before the key
        self.constant_value = {int(k): v for k, v in state.get("constant_value", {}).items()}  # likewise
        self.surplus = RolloutBatch(**tensors) if tensors else None
        if "rng" in state:
            self._rng.setstate(python_rng_from_json(state["rng"]))


def collect_train_batch(num_groups: int, cfg: FilterGroupsConfig, state: DynamicSamplingState, *, step: int,
                        draw_prompts: DrawPrompts, generate_and_score: GenerateAndScore, stats: GenerationStats,
                        pad_token_id: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Generation batches until ``num_groups`` informative prompt groups are kept (DAPO dynamic sampling).

    Surplus groups carried from earlier steps go first (none grows stale); each generation batch draws
    ``state.gen_batch_size`` prompts, drops those the prefilter skips, generates and scores the rest, and keeps
    the groups whose ``cfg.metric`` varies (all of them when ``cfg.enable`` is false). Whole groups beyond
    ``num_groups`` are stored as surplus (``keep_surplus``) or dropped. Raises :class:`DynamicSamplingError` after
    ``cfg.max_num_gen_batches`` batches (0: unlimited). Returns the train batch (groups in generation order) and
    the step's generation metrics (``stats.metrics()``).
    """
    kept: list[RolloutBatch] = []
    surplus = state.take_surplus(step)
    if surplus is not None:
        stats.add_surplus(surplus, step)
        kept.append(surplus)
    while stats.num_kept_groups < num_groups:
        if cfg.enable and 0 < cfg.max_num_gen_batches <= stats.num_gen_batches:
            raise stats.cap_error(num_groups, cfg.max_num_gen_batches, cfg.metric)
        prompts, skipped = _admitted_prompts(num_groups - stats.num_kept_groups, state, draw_prompts, stats)
        batch, reward_metrics = generate_and_score(prompts)
        if cfg.enable:
            state.observe(batch, cfg.metric)
        kept_now = keep_informative_groups(batch, cfg.metric) if cfg.enable else batch
        if skipped and cfg.prefilter.probe_responses:
            responses_per_prompt = batch.num_sequences // len(prompts)  # prompts is never empty
            probed, completed, probe_metrics = _probe(skipped, responses_per_prompt, cfg, state, stats,
                                                      generate_and_score, pad_token_id)
            reward_metrics = merge_rank_reward_metrics([(reward_metrics, batch.num_sequences),
                                                        (probe_metrics, probed.num_sequences)])
            batch = RolloutBatch.concat([batch, probed], pad_token_id)
            kept_now = RolloutBatch.concat([kept_now, keep_informative_groups(completed, cfg.metric)], pad_token_id)
        stats.add(batch, kept_now, reward_metrics)
        kept.append(kept_now)
    train_batch, leftover = split_groups(RolloutBatch.concat(kept, pad_token_id), num_groups)
    state.store_surplus(leftover)
    assert count_groups(train_batch) == num_groups
    return train_batch, stats.metrics()


def _admitted_prompts(groups_needed: int, state: DynamicSamplingState, draw_prompts: DrawPrompts,
                      stats: GenerationStats) -> tuple[list[int], list[int]]:
    """The next generation batch's prompt indices, sized and prefiltered by the dynamic-sampling state, and the
    prompts the prefilter skipped (in draw order).

    Prompts the prefilter skips are replaced by further draws until the batch has its size, for at most one pass
    over the data's worth of draws (then whatever was admitted goes; with nothing admitted, drawing goes on).
    """
    wanted = state.gen_batch_size(groups_needed)
    admitted: list[int] = []
    skipped: list[int] = []
    drawn = 0
    while len(admitted) < wanted and (drawn < state.num_prompts or not admitted):
        prompts = draw_prompts(wanted - len(admitted))
        drawn += len(prompts)
        new, not_now = state.admit(prompts)
        stats.add_prefiltered(len(not_now))
        admitted.extend(new)
        skipped.extend(not_now)
    return admitted, skipped


def _probe(skipped: list[int], responses_per_prompt: int, cfg: FilterGroupsConfig, state: DynamicSamplingState,
           stats: GenerationStats, generate_and_score: GenerateAndScore, pad_token_id: int
           ) -> tuple[RolloutBatch, RolloutBatch, dict[str, float]]:
    """Probe the prompts the prefilter skipped: ``prefilter.probe_responses`` responses each; a probe that scores
    unlike its prompt's last all-equal group is completed to a full group (same group id, the other responses
    sampled now), one that agrees extends the prompt's streak and is dropped.

    Returns (every row generated: agreeing probes and completed groups, the completed groups alone, the reward
    metrics over every row generated).
    """
    probes, metrics = generate_and_score(skipped, cfg.prefilter.probe_responses)
    surprising = state.surprising_rows(probes, cfg.metric)
    agreeing, to_complete = probes.select(~surprising), probes.select(surprising)
    state.observe_agreeing_probes(torch.unique(agreeing.prompt_index).tolist())
    stats.add_probed(len(skipped), count_groups(to_complete))
    if not to_complete.num_sequences:
        return probes, to_complete, metrics
    _, probe_groups = _unique_in_order(to_complete.group_ids)
    prompt_of_group = dict(zip(to_complete.group_ids.tolist(), to_complete.prompt_index.tolist()))
    rest, rest_metrics = generate_and_score([prompt_of_group[g] for g in probe_groups.tolist()],
                                            responses_per_prompt - cfg.prefilter.probe_responses)
    completed = _contiguous_groups(RolloutBatch.concat([to_complete, _relabel_groups(rest, probe_groups)],
                                                       pad_token_id))
    state.observe(completed, cfg.metric, update_keep_ratio=False)
    return (RolloutBatch.concat([agreeing, completed], pad_token_id), completed,
            merge_rank_reward_metrics([(metrics, probes.num_sequences), (rest_metrics, rest.num_sequences)]))


def _relabel_groups(batch: RolloutBatch, new_ids: torch.Tensor) -> RolloutBatch:
    """``batch`` with its groups, in order of first appearance, renamed to ``new_ids`` (G,)."""
    _, old_ids = _unique_in_order(batch.group_ids)
    rename = dict(zip(old_ids.tolist(), new_ids.tolist()))
    return replace(batch, group_ids=torch.tensor([rename[g] for g in batch.group_ids.tolist()]))


def _contiguous_groups(batch: RolloutBatch) -> RolloutBatch:
    """Rows reordered so each group's rows are contiguous, groups in order of first appearance, rows of a group
    in their order."""
    unique, first_seen = _unique_in_order(batch.group_ids)
    rank = torch.empty_like(unique)
    rank[torch.searchsorted(unique, first_seen)] = torch.arange(unique.numel())
    row_rank = rank[torch.searchsorted(unique, batch.group_ids)]
    return batch.select(torch.sort(row_rank, stable=True).indices)

