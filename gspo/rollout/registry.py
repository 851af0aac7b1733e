"""Rollout engines by name (``actor_rollout_ref.rollout.name``): adding one is a module plus one registration.

    from gspo.rollout import register_rollout_engine

    @dataclass
    class MyOptions:
        # What this key does (gspo config prints this comment).
        my_cache_gb: float = 4.0

    @register_rollout_engine("my_engine", options=MyOptions, check=check_my_options,
                             may_change_on_resume=("my_cache_gb",))
    def build_my_engine(spec: EngineSpec) -> RolloutEngine: ...

Everything about an engine is its :class:`~gspo.rollout.definition.EngineDefinition`: ``gspo train``, ``gspo
validate`` and ``gspo eval`` resolve, check and build engines from it alone (:func:`build_rollout_engine`). Built-in
factories are imported only when built, so ``vllm`` costs nothing unless it is used. No torch import here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import TYPE_CHECKING, Any

from gspo.errors import ConfigError
from gspo.rollout.definition import EngineCheck, EngineDefinition, EngineFactory, EngineSpec
from gspo.rollout.vllm_options import VLLM_ENGINE

if TYPE_CHECKING:
    from gspo.rollout.base import RolloutEngine

HF_ENGINE = EngineDefinition(name="hf", factory="gspo.rollout.hf:build_hf_engine")
_ENGINES: dict[str, EngineDefinition] = {engine.name: engine for engine in (HF_ENGINE, VLLM_ENGINE)}


def register_rollout_engine(name: str, factory: EngineFactory | None = None, *, options: type | None = None,
                            check: EngineCheck | None = None, may_change_on_resume: tuple[str, ...] = (),
                            schedules_own_batches: bool = False):
    """Register the engine ``name`` (usable as a decorator on its factory); the arguments are those of
    :class:`~gspo.rollout.definition.EngineDefinition`. A name cannot be registered twice (registering the same
    definition again is a no-op, so a module may be imported twice)."""

    def add(fn: EngineFactory) -> EngineFactory:
        definition = EngineDefinition(name=name, factory=fn, options=options, check=check,
                                      may_change_on_resume=tuple(may_change_on_resume),
                                      schedules_own_batches=schedules_own_batches)
        if name in _ENGINES and _ENGINES[name] != definition:
            raise ValueError(f"rollout engine {name!r} is already registered")
        _ENGINES[name] = definition
        return fn

    return add(factory) if factory is not None else add


def rollout_engine_names() -> list[str]:
    return sorted(_ENGINES)


def rollout_engine_definitions() -> list[EngineDefinition]:
    """Every registered engine, by name."""
    return [_ENGINES[name] for name in rollout_engine_names()]


def rollout_engine_definition(name: str, key: str = "actor_rollout_ref.rollout.name") -> EngineDefinition:
    """The engine registered as ``name``; an unknown name is a :class:`ConfigError` naming ``key``."""
    if name not in _ENGINES:
        near = difflib.get_close_matches(name, list(_ENGINES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{key}: unknown rollout engine {name!r}{hint} Registered: "
                          f"{', '.join(rollout_engine_names())} (add one with "
                          f"gspo.rollout.register_rollout_engine)")
    return _ENGINES[name]


def rollout_engine_factory(name: str, key: str = "actor_rollout_ref.rollout.name") -> EngineFactory:
    """The factory of the engine ``name``, imported on first use."""
    definition = rollout_engine_definition(name, key)
    if isinstance(definition.factory, str):
        module, _, attr = definition.factory.partition(":")
        factory: Any = getattr(importlib.import_module(module), attr)
        definition = _ENGINES[name] = dataclasses.replace(definition, factory=factory)
    return definition.factory


def build_rollout_engine(spec: EngineSpec) -> RolloutEngine:
    """The engine ``spec.rollout.name`` names, checked as ``gspo validate`` checks it, then built from ``spec``.

    The one construction path of ``gspo train`` and ``gspo eval``."""
    definition = rollout_engine_definition(spec.rollout.name, spec.name_key)
    if definition.check is not None:
        definition.check(spec.rollout, spec.context)
    return rollout_engine_factory(spec.rollout.name, spec.name_key)(spec)
