"""Rollout engines: sample n responses per prompt from the current policy; built by name from the registry."""

from gspo.rollout.base import (
    Generation,
    RolloutEngine,
    SamplingParams,
    Weights,
    left_pad,
    pad_cat,
    response_mask_from_ids,
)
from gspo.rollout.hf import HFRolloutEngine
from gspo.rollout.registry import (
    EngineSpec,
    build_rollout_engine,
    register_rollout_engine,
    rollout_engine_factory,
    rollout_engine_names,
)
from gspo.rollout.seeded import group_keys, response_keys

__all__ = [
    "EngineSpec",
    "Generation",
    "HFRolloutEngine",
    "RolloutEngine",
    "SamplingParams",
    "Weights",
    "build_rollout_engine",
    "group_keys",
    "left_pad",
    "pad_cat",
    "register_rollout_engine",
    "response_keys",
    "response_mask_from_ids",
    "rollout_engine_factory",
    "rollout_engine_names",
]
