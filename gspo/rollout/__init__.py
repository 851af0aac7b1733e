"""Rollout engines: sample n responses per prompt from the current policy; built by name from the registry.

The registry and the engines' declarations (keys, checks) load without torch, so the config package can read them
and ``gspo config`` answers at once; the engines and tensor helpers below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gspo.rollout.definition import EngineContext, EngineDefinition, EngineSpec
from gspo.rollout.registry import (
    build_rollout_engine,
    register_rollout_engine,
    rollout_engine_definition,
    rollout_engine_definitions,
    rollout_engine_factory,
    rollout_engine_names,
)

if TYPE_CHECKING:
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
    from gspo.rollout.seeded import group_keys, response_keys

_IMPORTED_ON_FIRST_USE = {
    **dict.fromkeys(("Generation", "RolloutEngine", "SamplingParams", "Weights", "left_pad", "pad_cat",
                     "response_mask_from_ids"), "gspo.rollout.base"),
    "HFRolloutEngine": "gspo.rollout.hf",
    **dict.fromkeys(("group_keys", "response_keys"), "gspo.rollout.seeded"),
}


def __getattr__(name: str) -> Any:
    if name not in _IMPORTED_ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_IMPORTED_ON_FIRST_USE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "EngineContext",
    "EngineDefinition",
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
    "rollout_engine_definition",
    "rollout_engine_definitions",
    "rollout_engine_factory",
    "rollout_engine_names",
]
