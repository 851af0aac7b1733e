"""Rollout engines by name (``actor_rollout_ref.rollout.name``): adding one is a module plus one registration.

    from gspo.rollout import register_rollout_engine

    @register_rollout_engine("my_engine")
    def build_my_engine(spec: EngineSpec) -> RolloutEngine: ...

A factory receives an :class:`EngineSpec` and returns an object with the :class:`~gspo.rollout.base.RolloutEngine`
interface. Built-in engines are imported only when built, so ``vllm`` costs nothing unless it is used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gspo.config import ConfigError
from gspo.rollout.base import RolloutEngine


@dataclass
class EngineSpec:
    """What an engine factory is given, by the trainer and by ``gspo eval``.

    ``policy()`` returns the unsharded fp32 policy (before FSDP sharding, on ``device``); an engine that keeps its
    own weights (vLLM) never calls it, so ``gspo eval`` does not load the model twice. ``rollout`` is the
    :class:`gspo.config.RolloutConfig`; ``key_prefix`` is where its keys live, for error messages.
    """

    model_path: Path
    policy: Callable[[], torch.nn.Module]
    pad_token_id: int
    eos_token_ids: list[int]
    device: torch.device
    rollout: Any
    max_prompt_length: int
    max_response_length: int
    world_size: int = 1
    key_prefix: str = "actor_rollout_ref.rollout"

    def key(self, name: str) -> str:
        return f"{self.key_prefix}.{name}" if self.key_prefix else name


EngineFactory = Callable[[EngineSpec], RolloutEngine]
# Built-ins by "module:function", imported on first use.
_ENGINES: dict[str, EngineFactory | str] = {
    "hf": "gspo.rollout.hf:build_hf_engine",
    "vllm": "gspo.rollout.vllm_engine:build_vllm_engine",
}


def register_rollout_engine(name: str, factory: EngineFactory | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator); a name cannot be registered twice."""

    def add(fn: EngineFactory) -> EngineFactory:
        if name in _ENGINES and _ENGINES[name] is not fn:
            raise ValueError(f"rollout engine {name!r} is already registered")
        _ENGINES[name] = fn
        return fn

    return add(factory) if factory is not None else add


def rollout_engine_names() -> list[str]:
    return sorted(_ENGINES)


def rollout_engine_factory(name: str, key: str = "actor_rollout_ref.rollout.name") -> EngineFactory:
    """The factory registered as ``name``; an unknown name is an :class:`ConfigError` naming ``key``."""
    if name not in _ENGINES:
        near = difflib.get_close_matches(name, list(_ENGINES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{key}: unknown rollout engine {name!r}{hint} Registered: "
                                f"{', '.join(rollout_engine_names())} (add one with "
                                f"gspo.rollout.register_rollout_engine)")
    factory = _ENGINES[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = _ENGINES[name] = getattr(importlib.import_module(module), attr)
    return factory


def build_rollout_engine(spec: EngineSpec) -> RolloutEngine:
    """The engine ``spec.rollout.name`` names, built from ``spec``."""
    return rollout_engine_factory(spec.rollout.name, spec.key("name"))(spec)
