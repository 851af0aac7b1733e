"""gspo's configuration: one typed schema (:mod:`gspo.config.schema`, the only home of defaults), loading
(:mod:`gspo.config.loading`) and semantic checks (:mod:`gspo.config.validation`).

Layers, last wins: the defaults below (verl's, but for :mod:`gspo.config.verl_defaults`) -> an embedded task's
preset (:mod:`gspo.config.presets`) -> an optional YAML file -> dotted ``key=value`` overrides.
Key paths follow verl's layout for the keys verl users already type, so
``actor_rollout_ref.actor.policy_loss.loss_mode=gspo algorithm.filter_groups.enable=true`` works verbatim.

The rollout section holds the keys every engine reads and, beside them, each registered engine's own keys
(:mod:`gspo.config.rollout`). Every error is a :class:`ConfigError` (:mod:`gspo.errors`) that names the key (with
a "did you mean" for unknown keys), and the file and line when the value came from a YAML file.

Units: batch sizes named ``*_batch_size`` count prompts unless they end in ``_per_gpu`` (sequences);
lengths count tokens.
"""

from gspo.config.loading import load_config, load_rollout_config, resolve_config, to_yaml
from gspo.config.rollout import (
    ENGINE_SETTINGS,
    ROLLOUT_DTYPES,
    RolloutConfig,
    ValKwargsConfig,
    engine_keys,
    engine_settings,
    new_rollout_config,
    rollout_config_class,
    rollout_keys_that_may_change,
    validate_rollout,
)
from gspo.config.schema import (
    CHAT_TEMPLATE_MODES,
    DEVICES,
    FILTER_METRICS,
    LOGGERS,
    RESUME_MODES,
    REWARD_ON_ERROR_MODES,
    ActorConfig,
    ActorRolloutRefConfig,
    AlgorithmConfig,
    AsyncTrainingConfig,
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
    RolloutCorrectionConfig,
    TrainerConfig,
    field_type,
)
from gspo.config.validation import engine_context, validate_config
from gspo.errors import ConfigError

__all__ = [
    "ActorConfig",
    "ActorRolloutRefConfig",
    "AlgorithmConfig",
    "AsyncTrainingConfig",
    "CHAT_TEMPLATE_MODES",
    "ConfigError",
    "CustomRewardFunctionConfig",
    "DataConfig",
    "DEVICES",
    "ENGINE_SETTINGS",
    "engine_context",
    "engine_keys",
    "engine_settings",
    "field_type",
    "FILTER_METRICS",
    "FilterGroupsConfig",
    "FSDPConfig",
    "GSPOConfig",
    "load_config",
    "load_rollout_config",
    "LOGGERS",
    "ModelConfig",
    "new_rollout_config",
    "OptimConfig",
    "OverlongBufferConfig",
    "PolicyLossConfig",
    "PrefilterConfig",
    "RESUME_MODES",
    "REWARD_ON_ERROR_MODES",
    "RewardModelConfig",
    "resolve_config",
    "ROLLOUT_DTYPES",
    "rollout_config_class",
    "rollout_keys_that_may_change",
    "RolloutConfig",
    "RolloutCorrectionConfig",
    "to_yaml",
    "TrainerConfig",
    "validate_config",
    "validate_rollout",
    "ValKwargsConfig",
]
