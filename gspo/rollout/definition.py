"""What a rollout engine declares when it registers, and what its check and its factory are given.

Nothing here imports torch: the config package reads the declarations (keys, checks) to resolve and document
``actor_rollout_ref.rollout``, and ``gspo config`` must answer without loading torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from gspo.rollout.base import RolloutEngine

ROLLOUT_KEY_PREFIX = "actor_rollout_ref.rollout"


@dataclass(frozen=True)
class EngineContext:
    """The run around an engine, as far as its check needs it, known before anything is loaded.

    ``key_prefix`` is where the rollout keys live (``""`` in ``gspo eval``, whose keys are bare) and ``name_key``
    the key that selects the engine, so messages name the keys the user typed.
    """

    device: str = "auto"  # trainer.device / gspo eval's device: auto (CUDA when available) | cpu | cuda
    max_prompt_length: int = 1024  # tokens
    max_response_length: int = 1024  # tokens
    lora_rank: int = 0  # actor_rollout_ref.model.lora_rank; 0: full fine-tuning, or no training (gspo eval)
    world_size: int = 1  # processes, one engine each
    key_prefix: str = ROLLOUT_KEY_PREFIX
    name_key: str = f"{ROLLOUT_KEY_PREFIX}.name"

    def key(self, name: str) -> str:
        """The full key of the rollout key ``name`` (``name`` itself where the keys are bare)."""
        return self.name_key if name == "name" else f"{self.key_prefix}.{name}" if self.key_prefix else name


@dataclass
class EngineSpec:
    """What an engine factory is given, by the trainer and by ``gspo eval``.

    ``policy()`` returns the policy as the trainer holds it: fp32 on ``device``, FSDP2-sharded under torchrun (its
    parameters are DTensors, every rank builds its engine at the same point, and gathering them is collective); an
    engine that keeps its own weights (vLLM) calls it only for ``load_format=dummy``, so ``gspo eval`` does not
    load the model twice. ``rollout`` is the resolved
    ``actor_rollout_ref.rollout`` section (:class:`gspo.config.RolloutConfig` with every engine's own keys).
    ``own_process``: the process belongs to a torch.distributed world the engine must not join (a rank beside a
    rollout pool, ``rollout.mode=async``): an engine that would join it (vLLM) runs in a process of its own.
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
    lora_rank: int = 0
    own_process: bool = False
    key_prefix: str = ROLLOUT_KEY_PREFIX
    name_key: str = f"{ROLLOUT_KEY_PREFIX}.name"

    @property
    def context(self) -> EngineContext:
        return EngineContext(device=self.device.type, max_prompt_length=self.max_prompt_length,
                             max_response_length=self.max_response_length, lora_rank=self.lora_rank,
                             world_size=self.world_size, key_prefix=self.key_prefix, name_key=self.name_key)

    def key(self, name: str) -> str:
        return self.context.key(name)


EngineFactory = Callable[[EngineSpec], "RolloutEngine"]
# (the resolved rollout section, the run around it) -> None; raises gspo.errors.ConfigError naming the key.
EngineCheck = Callable[[Any, EngineContext], None]


@dataclass(frozen=True)
class EngineDefinition:
    """One rollout engine, everything about it in one place.

    Attributes:
        name: the value of ``actor_rollout_ref.rollout.name`` (``engine=`` in ``gspo eval``) that selects it.
        factory: builds the engine, or ``"module:function"`` imported when first built (so a heavy dependency
            costs nothing until the engine is used).
        options: a dataclass of the engine's own keys. Its fields become keys of ``actor_rollout_ref.rollout``
            (verl's flat layout: ``actor_rollout_ref.rollout.gpu_memory_utilization``), typed and documented by
            the comment above each field (``gspo config`` prints it). Another engine's run refuses them at a
            value other than the default, rather than ignore them. Two engines may declare the same key with
            the same type and default.
        check: validates the resolved section for this engine; run by ``load_config`` (so by ``gspo train``
            and ``gspo validate``), by ``gspo eval`` and before every build. It raises
            :class:`gspo.errors.ConfigError` naming ``context.key(...)``.
        may_change_on_resume: keys of ``options`` that change no result (memory and speed knobs a user retunes
            after an out-of-memory error), so a run resumes after they changed.
        schedules_own_batches: the engine batches whatever it is handed (vLLM's scheduler): ``gspo eval`` hands it
            every prompt at once instead of ``batch_size`` prompts per call.
    """

    name: str
    factory: EngineFactory | str
    options: type | None = None
    check: EngineCheck | None = None
    may_change_on_resume: tuple[str, ...] = ()
    schedules_own_batches: bool = False

    def __post_init__(self) -> None:
        if self.options is not None and not dataclasses.is_dataclass(self.options):
            raise TypeError(f"rollout engine {self.name!r}: options must be a dataclass, got {self.options!r}")
        options = dataclasses.fields(self.options) if self.options is not None else ()
        for option in options:
            if option.default is dataclasses.MISSING and option.default_factory is dataclasses.MISSING:
                raise TypeError(f"rollout engine {self.name!r}: option {option.name!r} needs a default")
        unknown = sorted(set(self.may_change_on_resume) - {option.name for option in options})
        if unknown:
            raise TypeError(f"rollout engine {self.name!r}: may_change_on_resume names {unknown}, which are not "
                            f"among its options {[option.name for option in options]}")
