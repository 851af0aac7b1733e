"""What dynamic sampling carries from one training step to the next, checkpointed with the run.

- surplus: kept groups beyond the train batch, waiting for the next step (``keep_surplus``);
- the running keep ratio that sizes generation batches (``adaptive_gen_batch_size``);
- per prompt, its streak of all-equal visits, the metric value of its last all-equal group and whether that group
  failed: what the prefilter decides from and what its probes are compared with (``prefilter``).

The rules themselves (informative, failed, changed) are :mod:`gspo.algos.filtering`'s.
"""

from __future__ import annotations

import math
import random
from dataclasses import fields

import torch

from gspo.algos import changed_row_mask, failed_group_mask, informative_group_mask
from gspo.config import FilterGroupsConfig
from gspo.rng_state import python_rng_from_json, python_rng_to_json
from gspo.trainer.batch import RolloutBatch

_KEEP_RATIO_MOMENTUM = 0.7  # weight of the past in the running keep ratio
_MIN_KEEP_RATIO = 0.05  # never size a batch for less than a 5% keep ratio (bounds one batch at 20x the need)
_HEADROOM = 1.1  # generate 10% more than the expected need so one batch usually suffices


class DynamicSamplingState:
    """Surplus groups, the running keep ratio and per-prompt all-equal streaks; checkpointed with the run.

    Attributes:
        constant_streak: prompt index -> all-equal visits in a row (0 after an informative group).
        constant_value: prompt index -> the filter metric of its last all-equal group, while its streak is > 0.
        last_failed: prompts whose last group was all-equal and failed (no response solved it).
        responses_per_prompt: rollout.n as seen in the full groups observed (None before the first); what a probe
            is completed to.
    """

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
        self.constant_value: dict[int, float] = {}
        self.last_failed: set[int] = set()
        self.responses_per_prompt: int | None = None

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

    # ------------------------------------------------------------------------------------ observations
    def observe(self, batch: RolloutBatch, metric: str, *, update_keep_ratio: bool = True) -> None:
        """Update the keep ratio (unless ``update_keep_ratio`` is false: completed probes come on top of the
        generation batch's sizing) and the all-equal streaks from scored full groups."""
        values = getattr(batch, metric)
        group_ids, informative = informative_group_mask(values, batch.group_ids)
        _, failed = failed_group_mask(batch.acc if batch.acc is not None else values, batch.group_ids)
        if group_ids.numel():
            self.responses_per_prompt = batch.num_sequences // group_ids.numel()
        if update_keep_ratio:
            ratio = informative.float().mean().item()
            self.keep_ratio = ratio if self.keep_ratio is None else (
                _KEEP_RATIO_MOMENTUM * self.keep_ratio + (1 - _KEEP_RATIO_MOMENTUM) * ratio)
        prompt_of_group = dict(zip(batch.group_ids.tolist(), batch.prompt_index.tolist()))
        value_of_group = dict(zip(batch.group_ids.tolist(), values.tolist()))
        for group, is_informative, is_failed in zip(group_ids.tolist(), informative.tolist(), failed.tolist()):
            prompt = prompt_of_group[group]
            if is_informative:
                self.constant_streak[prompt] = 0
                self.constant_value.pop(prompt, None)
                self.last_failed.discard(prompt)
                continue
            self.constant_streak[prompt] = self.constant_streak.get(prompt, 0) + 1
            self.constant_value[prompt] = value_of_group[group]
            if is_failed:
                self.last_failed.add(prompt)
            else:
                self.last_failed.discard(prompt)

    def observe_agreeing_probes(self, prompt_indices: list[int]) -> None:
        """Probes that scored like their prompt's last all-equal group extend its streak."""
        for prompt in prompt_indices:
            self.constant_streak[prompt] = self.constant_streak.get(prompt, 0) + 1

    def changed_probe_rows(self, probes: RolloutBatch, metric: str) -> torch.Tensor:
        """(N,) bool: rows of the probe groups in which some response scores unlike the prompt's last all-equal
        group."""
        last = torch.tensor([self.constant_value[p] for p in probes.prompt_index.tolist()])
        return changed_row_mask(getattr(probes, metric), last, probes.group_ids)

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
        ``failed``: its last group was all-equal and failed."""
        prefilter = self.cfg.prefilter
        if failed and prefilter.failed_readmit_prob is not None:
            return prefilter.failed_readmit_prob
        if not prefilter.readmit_decay:
            return prefilter.readmit_prob
        return prefilter.readmit_prob ** (streak - prefilter.min_constant_visits + 1)

    def may_admit_any(self) -> bool:
        """Whether :meth:`admit` can still let some prompt of the data set through: one below the streak threshold
        or one with a positive re-admission chance. False: every draw would be skipped for ever."""
        min_visits = self.cfg.prefilter.min_constant_visits
        return not self.cfg.prefilter.enable or any(
            self.constant_streak.get(i, 0) < min_visits
            or self.readmit_probability(self.constant_streak[i], i in self.last_failed) > 0
            for i in range(self.num_prompts))

    # -------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able state, tensors of the surplus batch)."""
        surplus = self.surplus
        tensors = {} if surplus is None else {
            f.name: getattr(surplus, f.name) for f in fields(RolloutBatch) if getattr(surplus, f.name) is not None}
        return {
            "keep_ratio": self.keep_ratio,
            "constant_streak": {str(k): v for k, v in self.constant_streak.items()},
            "constant_value": {str(k): v for k, v in self.constant_value.items()},
            "last_failed": sorted(self.last_failed),
            "responses_per_prompt": self.responses_per_prompt,
            "rng": python_rng_to_json(self._rng.getstate()),
        }, tensors

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.keep_ratio = state["keep_ratio"]
        self.constant_streak = {int(k): v for k, v in state["constant_streak"].items()}
        self.constant_value = {int(k): v for k, v in state["constant_value"].items()}
        self.last_failed = set(state["last_failed"])
        self.responses_per_prompt = state["responses_per_prompt"]
        self._rng.setstate(python_rng_from_json(state["rng"]))
        self.surplus = RolloutBatch(**tensors) if tensors else None
