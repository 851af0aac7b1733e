"""The rollout section, ``actor_rollout_ref.rollout``: the keys every engine reads, then each registered engine's
own keys (declared with the engine, :mod:`gspo.rollout.registry`) in the same section, as verl lays them out
(``actor_rollout_ref.rollout.gpu_memory_utilization``).

:func:`rollout_config_class` composes the section from the registry when a config is made, so an engine
registered from outside the package adds its keys to ``load_config``, ``gspo config``, ``gspo eval`` and the
resume check without touching this package.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field

from gspo.errors import require, require_one_of
from gspo.rollout.definition import ROLLOUT_KEY_PREFIX, EngineContext, EngineDefinition
from gspo.rollout.registry import rollout_engine_definition, rollout_engine_definitions, rollout_engine_names

ROLLOUT_DTYPES = ("auto", "bfloat16", "float16", "float32")
# The shared keys that configure the engine itself rather than what is sampled; with every engine's own keys they
# are the engine settings `gspo eval` accepts.
ENGINE_SETTINGS = ("dtype", "micro_batch_size")


@dataclass
class ValKwargsConfig:
    # Responses per validation prompt (mean@n).
    n: int = 1
    # Validation temperature; 0 = greedy.
    temperature: float = 0.0
    # Validation nucleus sampling; 1 = off.
    top_p: float = 1.0
    # Validation top-k; -1 = off.
    top_k: int = -1
    # Sample validation responses (with temperature > 0); false = greedy.
    do_sample: bool = False


@dataclass
class RolloutConfig:
    # The rollout engine (gspo.rollout.registry): hf (transformers, in the trainer's process), vllm
    # (pip install -e '.[vllm]'; one in-process vllm.LLM per rank, colocated with the trainer) or one registered
    # with gspo.rollout.register_rollout_engine. The keys after val_kwargs are engines' own, each marked (engine).
    name: str = "hf"
    # Responses sampled per prompt (the group size).
    n: int = 1
    # Sampling temperature of training rollouts (> 0); the log-probs use it too.
    temperature: float = 1.0
    # Nucleus sampling of training rollouts; 1 = off.
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled
    # Sequences per generate() call (hf) / sequences decoded at once (vllm's max_num_seqs); <= 0: no limit (hf) or
    # vLLM's default (vllm).
    micro_batch_size: int = 512
    # verl's key: every response runs to data.max_response_length tokens; EOS neither stops generation nor ends the
    # trained response (equal token counts, e.g. for benchmarks). Off by default.
    ignore_eos: bool = False
    # Generation precision: auto = bfloat16 on CUDA, float32 on CPU; bfloat16 | float16 | float32.
    dtype: str = "auto"
    # sync: generation runs in the trainer's processes with the current weights. async: generation runs on ranks
    # of its own (the rollout pool below) one or more policy versions behind (async_training.staleness_threshold),
    # overlapping training; with no rollout pool (n_gpus_per_node=0, verl's colocated async server) it generates
    # in the trainer's processes, on-policy, exactly as sync.
    mode: str = "sync"
    # The rollout pool in mode=async (verl's separate-pool keys): nodes, and processes per node (GPUs; on CPU,
    # processes). The run's world is trainer.nnodes x trainer.n_gpus_per_node trainer ranks first, then these.
    nnodes: int = 1
    # Rollout-pool processes per node; 0 = no rollout pool (generation in the trainer's processes).
    n_gpus_per_node: int = 0
    val_kwargs: ValKwargsConfig = field(default_factory=ValKwargsConfig)


def rollout_config_class() -> type[RolloutConfig]:
    """:class:`RolloutConfig` with every registered engine's own keys appended (one class per set of engines)."""
    return _registered_composition(tuple(rollout_engine_names()))


def new_rollout_config(**values) -> RolloutConfig:
    """The rollout section with the registered engines' keys, at its defaults but for ``values``."""
    return rollout_config_class()(**values)


def engine_keys() -> dict[str, tuple[str, ...]]:
    """Every engine-owned key of the section -> the engines that read it."""
    return rollout_config_class().ENGINE_KEYS


def engine_settings() -> tuple[str, ...]:
    """The keys that configure an engine: :data:`ENGINE_SETTINGS` and every engine's own keys."""
    return ENGINE_SETTINGS + tuple(engine_keys())


def rollout_keys_that_may_change() -> tuple[str, ...]:
    """Full keys (``actor_rollout_ref.rollout.<key>``) that engines declare may change when a run resumes."""
    return tuple(f"{ROLLOUT_KEY_PREFIX}.{key}" for engine in rollout_engine_definitions()
                 for key in engine.may_change_on_resume)


def validate_rollout(rollout: RolloutConfig, context: EngineContext) -> None:
    """The engine's name and keys, for ``load_config`` and ``gspo eval`` alike: the shared engine settings, other
    engines' keys left at their defaults (never accepted and ignored), then the engine's own check."""
    engine = rollout_engine_definition(rollout.name, context.name_key)
    require_one_of(rollout.dtype, ROLLOUT_DTYPES, context.key("dtype"))
    defaults = new_rollout_config()
    for key, owners in engine_keys().items():
        require(rollout.name in owners or getattr(rollout, key) == getattr(defaults, key), context.key(key),
                f"is read by the {' and '.join(owners)} engine{'s' if len(owners) > 1 else ''} only "
                f"({context.name_key}={rollout.name!r}); drop it or set {context.name_key}={owners[0]}")
    if engine.check is not None:
        engine.check(rollout, context)


@functools.cache
def _registered_composition(names: tuple[str, ...]) -> type[RolloutConfig]:
    return compose_rollout_config(rollout_engine_definitions())  # registration only adds: names identify the set


def compose_rollout_config(engines: list[EngineDefinition]) -> type[RolloutConfig]:
    """A subclass of :class:`RolloutConfig` with the ``options`` fields of ``engines`` appended, in order.

    Its ``ENGINE_KEYS`` maps each engine key to the engines that read it, ``DOC_SOURCES`` lists the classes whose
    comments document its fields. An option may not shadow a shared key, and two engines declaring one key must
    agree on its type and default (TypeError naming the engine otherwise).
    """
    shared = {f.name for f in dataclasses.fields(RolloutConfig)}
    declared: dict[str, tuple[typing.Any, dataclasses.Field]] = {}
    owners: dict[str, list[str]] = {}
    sources: list[type] = [RolloutConfig]
    for engine in engines:
        if engine.options is None:
            continue
        sources.append(engine.options)
        hints = typing.get_type_hints(engine.options)
        for option in dataclasses.fields(engine.options):
            if option.name in shared:
                raise TypeError(f"rollout engine {engine.name!r}: its option {option.name!r} is a key every engine "
                                f"shares ({ROLLOUT_KEY_PREFIX}.{option.name}); rename it")
            if option.name in declared and not _same_declaration(declared[option.name], hints[option.name], option):
                raise TypeError(f"rollout engine {engine.name!r}: its option {option.name!r} is declared by "
                                f"{owners[option.name][0]!r} with another type or default; rename it")
            declared.setdefault(option.name, (hints[option.name], option))
            owners.setdefault(option.name, []).append(engine.name)
    specs = [(name, kind, field(default=option.default, default_factory=option.default_factory))
             for name, (kind, option) in declared.items()]
    namespace = {"ENGINE_KEYS": {key: tuple(engines) for key, engines in owners.items()},
                 "DOC_SOURCES": tuple(sources), "__module__": __name__}
    return dataclasses.make_dataclass("RolloutConfig", specs, bases=(RolloutConfig,), namespace=namespace)


def _same_declaration(first: tuple[typing.Any, dataclasses.Field], kind: typing.Any, option: dataclasses.Field) -> bool:
    other_kind, other = first
    return (other_kind == kind and other.default == option.default
            and other.default_factory == option.default_factory)
