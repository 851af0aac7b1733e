"""gspo's configuration: one typed schema (:mod:`gspo.config.schema`, the only home of defaults), loading
(:mod:`gspo.config.loading`) and semantic checks (:mod:`gspo.config.validation`).

Layers, last wins: the defaults below -> an optional YAML file -> dotted ``key=value`` overrides.
Key paths follow verl's layout for the keys verl users already type, so
``actor_rollout_ref.actor.policy_loss.loss_mode=gspo algorithm.filter_groups.enable=true`` works verbatim.

Every error is a :class:`ConfigError` that names the key (with a "did you mean" for unknown keys), and the
file and line when the value came from a YAML file.

Units: batch sizes named ``*_batch_size`` count prompts unless they end in ``_per_gpu`` (sequences);
lengths count tokens.
"""

from gspo.config.errors import ConfigError
from gspo.config.loading import load_config, to_yaml
from gspo.config.schema import (
    DEVICES,
    FILTER_METRICS,
    LOAD_FORMATS,
    LOGGERS,
    RESUME_MODES,
    ROLLOUT_DTYPES,
    VLLM_ONLY_KEYS,
    ActorConfig,
    ActorRolloutRefConfig,
    AlgorithmConfig,
    CustomRewardFunctionConfig,
    DataConfig,
    FilterGroupsConfig,
    FSDPConfig,
    GSPOConfig,
    ModelConfig,
    OptimConfig,
    OverlongBufferConfig,
    PolicyLossConfig,
    PrefilterConfig,
    RewardModelConfig,
    RolloutConfig,
    RolloutCorrectionConfig,
    TrainerConfig,
    ValKwargsConfig,
    field_type,
)
from gspo.config.validation import validate_config, validate_engine

__all__ = [
    "ActorConfig",
    "ActorRolloutRefConfig",
    "AlgorithmConfig",
    "ConfigError",
    "CustomRewardFunctionConfig",
    "DataConfig",
    "DEVICES",
    "field_type",
    "FILTER_METRICS",
    "FilterGroupsConfig",
    "FSDPConfig",
    "GSPOConfig",
    "load_config",
    "LOAD_FORMATS",
    "LOGGERS",
    "ModelConfig",
    "OptimConfig",
    "OverlongBufferConfig",
    "PolicyLossConfig",
    "PrefilterConfig",
    "RESUME_MODES",
    "RewardModelConfig",
    "ROLLOUT_DTYPES",
    "RolloutConfig",
    "RolloutCorrectionConfig",
    "to_yaml",
    "TrainerConfig",
    "validate_config",
    "validate_engine",
    "ValKwargsConfig",
    "VLLM_ONLY_KEYS",
]
