"""Rollout engines: sample n responses per prompt from the current policy."""

from gspo.rollout.base import Generation, RolloutEngine, SamplingParams, left_pad, pad_cat, response_mask_from_ids
from gspo.rollout.hf import HFRolloutEngine
from gspo.rollout.seeded import sample_keys

__all__ = [
    "Generation",
    "RolloutEngine",
    "SamplingParams",
    "HFRolloutEngine",
    "left_pad",
    "pad_cat",
    "response_mask_from_ids",
    "sample_keys",
]
