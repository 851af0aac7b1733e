"""Dynamic sampling that wastes little: what carries over from one training step to the next.

Three switches under ``algorithm.filter_groups``, each off by default (verl's behaviour):

- ``keep_surplus``: kept groups beyond ``train_batch_size`` wait for the next step instead of being dropped; they
  are used first, at most ``max_surplus_age`` steps after they were generated, and never twice.
- ``adaptive_gen_batch_size``: each generation batch is sized from the running keep ratio so that one batch
  usually fills what the train batch still needs.
- ``prefilter``: a prompt whose last ``min_constant_visits`` groups were all-equal (always solved, or always
  failed) is skipped before generation; each skip is re-admitted with probability ``readmit_prob`` so no prompt
  is lost for good.
"""

from __future__ import annotations

import math
import random
from dataclasses import fields

import torch

from gspo.algos import group_keep_mask
from gspo.config import FilterGroupsConfig
from gspo.trainer.batch import RolloutBatch

_KEEP_RATIO_MOMENTUM = 0.7  # weight of the past in the running keep ratio
_MIN_KEEP_RATIO = 0.05  # never size a batch for less than a 5% keep ratio (bounds one batch at 20x the need)
_HEADROOM = 1.1  # generate 10% more than the expected need so one batch usually suffices


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

    def observe(self, batch: RolloutBatch, metric: str) -> None:
        """Update the keep ratio and the all-equal streaks from one scored generation batch."""
        group_ids, keep = group_keep_mask(getattr(batch, metric), batch.group_ids)
        ratio = keep.float().mean().item()
        self.keep_ratio = ratio if self.keep_ratio is None else (
            _KEEP_RATIO_MOMENTUM * self.keep_ratio + (1 - _KEEP_RATIO_MOMENTUM) * ratio)
        prompt_of_group = dict(zip(batch.group_ids.tolist(), batch.prompt_index.tolist()))
        for group, informative in zip(group_ids.tolist(), keep.tolist()):
            prompt = prompt_of_group[group]
            self.constant_streak[prompt] = 0 if informative else self.constant_streak.get(prompt, 0) + 1

    # --------------------------------------------------------------------------------------- prefilter
    def admit(self, prompt_indices: list[int]) -> tuple[list[int], int]:
        """The prompts to generate for, and how many were skipped by the prefilter."""
        prefilter = self.cfg.prefilter
        if not prefilter.enable:
            return prompt_indices, 0
        admitted = [i for i in prompt_indices
                    if self.constant_streak.get(i, 0) < prefilter.min_constant_visits
                    or self._rng.random() < prefilter.readmit_prob]
        return admitted, len(prompt_indices) - len(admitted)

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
        version, internal, gauss = self._rng.getstate()
        return {
            "keep_ratio": self.keep_ratio,
            "constant_streak": {str(k): v for k, v in self.constant_streak.items()},
            "rng": [version, list(internal), gauss],
        }, tensors

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.keep_ratio = state["keep_ratio"]
        self.constant_streak = {int(k): v for k, v in state["constant_streak"].items()}
        self.surplus = RolloutBatch(**tensors) if tensors else None
        if "rng" in state:
            version, internal, gauss = state["rng"]
            self._rng.setstate((version, tuple(internal), gauss))
