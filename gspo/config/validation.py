"""Semantic validation: types are already checked by OmegaConf; these are values that type-check but cannot
run. Each failure names the key."""

from __future__ import annotations

import math
from typing import Any

from gspo.config.rollout import validate_rollout
from gspo.config.schema import (
    CHAT_TEMPLATE_MODES,
    DEVICES,
    FILTER_METRICS,
    LOGGERS,
    RESUME_MODES,
    REWARD_ON_ERROR_MODES,
    GSPOConfig,
    ModelConfig,
)
from gspo.errors import require as _require
from gspo.errors import require_one_of as _one_of
from gspo.rollout.definition import EngineContext


def _validate_lora(model: ModelConfig) -> None:
    key = "actor_rollout_ref.model"
    _require(model.lora_rank >= 0, f"{key}.lora_rank", "must be >= 0 (0 = full fine-tuning)")
    _require(model.lora_alpha > 0, f"{key}.lora_alpha", "must be > 0")
    _require(0.0 <= model.lora_dropout < 1.0, f"{key}.lora_dropout", "must lie in [0, 1)")
    targets = model.target_modules
    _require(targets == "all-linear" or (isinstance(targets, list) and bool(targets)
                                         and all(isinstance(t, str) and t for t in targets)),
             f"{key}.target_modules", f"{targets!r} must be 'all-linear' or a non-empty list of module names")


def _check_finite(node: Any, prefix: str = "") -> None:
    """No float anywhere in the config may be inf or nan (``optim.lr=inf`` would only show as non-finite weights)."""
    if hasattr(node, "__dataclass_fields__"):
        for name in node.__dataclass_fields__:
            _check_finite(getattr(node, name), f"{prefix}.{name}" if prefix else name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_finite(item, f"{prefix}[{i}]")
    elif isinstance(node, float):
        _require(math.isfinite(node), prefix, f"{node} is not a finite number")


def _check_prefilter_readmits(cfg: GSPOConfig) -> None:
    """A prefilter that skips without probing must give every skipped prompt a chance to come back: else, once
    every prompt has been all-equal, it skips every draw and no group is ever generated again."""
    prefilter, key = cfg.algorithm.filter_groups.prefilter, "algorithm.filter_groups.prefilter"
    if not prefilter.enable or prefilter.probe_responses:
        return
    for name in ("readmit_prob", "failed_readmit_prob"):
        value = getattr(prefilter, name)
        _require(value is None or value > 0, f"{key}.{name}",
                 f"{value} never lets a skipped prompt come back, so the prefilter can end up skipping every prompt; "
                 f"set it above 0 (e.g. 0.1), or probe skipped prompts instead with {key}.probe_responses >= 1")


ROLLOUT_MODES = ("sync", "async")


def rollout_pool_size(cfg: GSPOConfig) -> int:
    """Ranks of the rollout pool: ``actor_rollout_ref.rollout.nnodes x n_gpus_per_node`` in mode=async, else 0."""
    rollout = cfg.actor_rollout_ref.rollout
    return rollout.nnodes * rollout.n_gpus_per_node if rollout.mode == "async" else 0


def _validate_async(cfg: GSPOConfig) -> None:
    """The rollout mode, the staleness bound and the two pools' layout (trainer ranks first, then rollout ranks)."""
    rollout, trainer, asynch = cfg.actor_rollout_ref.rollout, cfg.trainer, cfg.async_training
    key = "actor_rollout_ref.rollout"
    _one_of(rollout.mode, ROLLOUT_MODES, f"{key}.mode")
    _require(rollout.nnodes >= 1, f"{key}.nnodes", "must be >= 1")
    _require(rollout.n_gpus_per_node >= 0, f"{key}.n_gpus_per_node", "must be >= 0 (0 = no rollout pool)")
    _require(asynch.staleness_threshold >= 0, "async_training.staleness_threshold",
             f"{asynch.staleness_threshold} must be >= 0 (policy versions a batch may lag behind; 0 = on-policy)")
    _require(asynch.behav_imp_weight_cap > 0, "async_training.behav_imp_weight_cap", "must be > 0")
    pool = rollout.nnodes * rollout.n_gpus_per_node
    if rollout.mode == "sync":
        _require(pool == 0, f"{key}.n_gpus_per_node",
                 f"{rollout.n_gpus_per_node} asks for a rollout pool, which only {key}.mode=async uses; set "
                 f"{key}.mode=async or {key}.n_gpus_per_node=0")
    if pool == 0:  # generation in the trainer's processes: nothing lags behind
        defaults = type(asynch)()
        for name in ("staleness_threshold", "behav_imp_weight_cap"):
            _require(getattr(asynch, name) == getattr(defaults, name), f"async_training.{name}",
                     f"is read only with a rollout pool; set {key}.mode=async and {key}.n_gpus_per_node >= 1, or "
                     f"drop the key")
        return
    _require(trainer.nnodes * trainer.n_gpus_per_node >= 1, "trainer.n_gpus_per_node",
             f"the rollout pool ({key}.nnodes x {key}.n_gpus_per_node = {pool}) needs trainer ranks beside it: "
             f"set trainer.nnodes and trainer.n_gpus_per_node >= 1")
    # One node: both pools on it (torchrun --nproc_per_node = the two counts added). More: each pool on nodes of its
    # own, trainer nodes first, and torchrun starts the same number of processes on every node.
    _require((rollout.nnodes == 1 and trainer.nnodes == 1) or rollout.n_gpus_per_node == trainer.n_gpus_per_node,
             f"{key}.n_gpus_per_node",
             f"{rollout.n_gpus_per_node} differs from trainer.n_gpus_per_node={trainer.n_gpus_per_node}: with "
             f"{key}.nnodes={rollout.nnodes} and trainer.nnodes={trainer.nnodes} each pool has nodes of its own and "
             f"torchrun starts the same number of processes on every node; make them equal, or set both nnodes=1 "
             f"to share one node")
    groups, k = cfg.algorithm.filter_groups, asynch.staleness_threshold
    _require(not groups.keep_surplus or groups.max_surplus_age > k, "algorithm.filter_groups.max_surplus_age",
             f"{groups.max_surplus_age} drops every surplus group beside a rollout pool: a group is at least "
             f"async_training.staleness_threshold + 1 = {k + 1} policy versions old when the next step uses it; "
             f"set it to {k + 1} or more, or algorithm.filter_groups.keep_surplus=false")


def _check_generation_can_fill_a_step(cfg: GSPOConfig) -> None:
    """With dynamic sampling capped at max_num_gen_batches fixed-size batches, the prompts drawn in a step must at
    least number data.train_batch_size: else every step generates the whole cap and stops the run, even when no
    group is dropped."""
    data, groups = cfg.data, cfg.algorithm.filter_groups
    if not groups.enable or groups.max_num_gen_batches <= 0 or groups.adaptive_gen_batch_size:
        return
    gen = data.gen_batch_size or data.train_batch_size  # null (= train_batch_size) always fills a step
    drawn = gen * groups.max_num_gen_batches
    _require(drawn >= data.train_batch_size, "algorithm.filter_groups.max_num_gen_batches",
             f"data.gen_batch_size={gen} x "
             f"algorithm.filter_groups.max_num_gen_batches={groups.max_num_gen_batches} = {drawn} prompts per step "
             f"can never fill data.train_batch_size={data.train_batch_size} prompt groups; raise "
             f"data.gen_batch_size or max_num_gen_batches (0 = unlimited), or lower data.train_batch_size")


def validate_config(cfg: GSPOConfig) -> None:
    """Raise :class:`ConfigError` naming the key for any value that type-checks but cannot run."""
    # torch loads with the algorithms: only when validating (gspo --help and gspo config stay fast)
    from gspo.algos import ADV_ESTIMATORS, KL_TYPES, LOSS_AGG_MODES, POLICY_LOSSES, ROLLOUT_IS_LEVELS

    data, actor, rollout = cfg.data, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    _check_finite(cfg)
    _require(bool(data.train_files), "data.train_files", "must name at least one file")
    _require(data.max_prompt_length >= 1, "data.max_prompt_length", "must be >= 1")
    _require(data.max_response_length >= 1, "data.max_response_length", "must be >= 1")
    _require(data.train_batch_size >= 1, "data.train_batch_size", "must be >= 1")
    _require(data.gen_batch_size is None or data.gen_batch_size >= 1, "data.gen_batch_size", "must be >= 1")
    _one_of(data.apply_chat_template, CHAT_TEMPLATE_MODES, "data.apply_chat_template")
    _validate_lora(cfg.actor_rollout_ref.model)

    if actor.policy_loss.path:
        _require(actor.policy_loss.loss_mode not in POLICY_LOSSES, "actor_rollout_ref.actor.policy_loss.loss_mode",
                 f"{actor.policy_loss.loss_mode!r} is a built-in loss; with policy_loss.path set, name the file's "
                 f"loss (e.g. loss_mode=custom)")
    else:
        _one_of(actor.policy_loss.loss_mode, tuple(POLICY_LOSSES), "actor_rollout_ref.actor.policy_loss.loss_mode")
    _one_of(actor.loss_agg_mode, LOSS_AGG_MODES, "actor_rollout_ref.actor.loss_agg_mode")
    for name in ("clip_ratio_low", "clip_ratio_high"):
        value = getattr(actor, name)
        _require(0.0 < value < 1.0, f"actor_rollout_ref.actor.{name}", f"{value} must lie in (0, 1)")
    _require(actor.clip_ratio_c > 1.0, "actor_rollout_ref.actor.clip_ratio_c", "must be > 1")
    _require(actor.ppo_mini_batch_size >= 1, "actor_rollout_ref.actor.ppo_mini_batch_size", "must be >= 1")
    _require(
        data.train_batch_size % actor.ppo_mini_batch_size == 0,
        "actor_rollout_ref.actor.ppo_mini_batch_size",
        f"{actor.ppo_mini_batch_size} must divide data.train_batch_size={data.train_batch_size}",
    )
    _require(actor.ppo_micro_batch_size_per_gpu >= 1, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
             "must be >= 1")
    _require(actor.ppo_epochs >= 1, "actor_rollout_ref.actor.ppo_epochs", "must be >= 1")
    _require(actor.ppo_max_token_len_per_gpu >= data.max_prompt_length + data.max_response_length,
             "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
             f"{actor.ppo_max_token_len_per_gpu} must hold one sequence "
             f"(max_prompt_length + max_response_length = {data.max_prompt_length + data.max_response_length})")
    _require(actor.log_prob_max_token_len_per_gpu is None
             or actor.log_prob_max_token_len_per_gpu >= data.max_prompt_length + data.max_response_length,
             "actor_rollout_ref.actor.log_prob_max_token_len_per_gpu",
             f"{actor.log_prob_max_token_len_per_gpu} must hold one sequence "
             f"(max_prompt_length + max_response_length = {data.max_prompt_length + data.max_response_length})")
    _require(actor.optim.lr_warmup_steps >= -1, "actor_rollout_ref.actor.optim.lr_warmup_steps",
             "must be >= 0, or -1 to use lr_warmup_steps_ratio")
    _require(actor.logits_chunk_size >= 0, "actor_rollout_ref.actor.logits_chunk_size", "must be >= 0")
    _require(actor.grad_clip > 0, "actor_rollout_ref.actor.grad_clip", "must be > 0")
    _one_of(actor.kl_loss_type, KL_TYPES, "actor_rollout_ref.actor.kl_loss_type")
    _require(actor.optim.lr > 0, "actor_rollout_ref.actor.optim.lr", "must be > 0")
    _require(0.0 <= actor.optim.lr_warmup_steps_ratio < 1.0, "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio",
             "must lie in [0, 1)")
    _require(actor.optim.weight_decay >= 0, "actor_rollout_ref.actor.optim.weight_decay", "must be >= 0")

    _require(rollout.n >= 1, "actor_rollout_ref.rollout.n", f"{rollout.n} must be >= 1")
    _require(rollout.val_kwargs.n >= 1, "actor_rollout_ref.rollout.val_kwargs.n", "must be >= 1")
    for prefix, params in (("rollout", rollout), ("rollout.val_kwargs", rollout.val_kwargs)):
        _require(params.temperature >= 0, f"actor_rollout_ref.{prefix}.temperature", "must be >= 0")
        _require(0.0 < params.top_p <= 1.0, f"actor_rollout_ref.{prefix}.top_p", "must lie in (0, 1]")
        _require(params.top_k == -1 or params.top_k >= 1, f"actor_rollout_ref.{prefix}.top_k", "must be -1 or >= 1")
    _require(rollout.temperature > 0, "actor_rollout_ref.rollout.temperature", "training samples need > 0")
    validate_rollout(rollout, engine_context(cfg))
    correction = cfg.algorithm.rollout_correction
    _one_of(correction.rollout_is, (None, *ROLLOUT_IS_LEVELS), "algorithm.rollout_correction.rollout_is")
    _require(correction.rollout_is_threshold > 0, "algorithm.rollout_correction.rollout_is_threshold", "must be > 0")
    _require(correction.rollout_is is None or actor.use_rollout_log_probs is not True,
             "algorithm.rollout_correction.rollout_is", "weights pi_old / pi_rollout need recomputed old log-probs; "
             "set actor_rollout_ref.actor.use_rollout_log_probs=null (or false)")

    _one_of(cfg.algorithm.adv_estimator, tuple(ADV_ESTIMATORS), "algorithm.adv_estimator")
    groups = cfg.algorithm.filter_groups
    _one_of(groups.metric, FILTER_METRICS, "algorithm.filter_groups.metric")
    _require(groups.enable or not groups.prefilter.enable, "algorithm.filter_groups.prefilter.enable",
             "needs algorithm.filter_groups.enable=true (the prefilter learns from the group filter's verdicts)")
    _require(not groups.enable or rollout.n >= 2, "algorithm.filter_groups.enable",
             f"true needs actor_rollout_ref.rollout.n >= 2 (now {rollout.n}): a group of one response never varies, "
             f"so dynamic sampling would do nothing; raise actor_rollout_ref.rollout.n or set "
             f"algorithm.filter_groups.enable=false")
    _require(groups.max_surplus_age >= 1, "algorithm.filter_groups.max_surplus_age", "must be >= 1")
    _require(groups.prefilter.min_constant_visits >= 1, "algorithm.filter_groups.prefilter.min_constant_visits",
             "must be >= 1")
    _require(0.0 <= groups.prefilter.readmit_prob <= 1.0, "algorithm.filter_groups.prefilter.readmit_prob",
             "must lie in [0, 1]")
    _require(groups.prefilter.failed_readmit_prob is None or 0.0 <= groups.prefilter.failed_readmit_prob <= 1.0,
             "algorithm.filter_groups.prefilter.failed_readmit_prob", "must lie in [0, 1] (or null)")
    _require(0 <= groups.prefilter.probe_responses < rollout.n, "algorithm.filter_groups.prefilter.probe_responses",
             f"must lie in [0, actor_rollout_ref.rollout.n={rollout.n}) (0 = skip without probing)")
    _require(groups.prefilter.enable or not groups.prefilter.probe_responses,
             "algorithm.filter_groups.prefilter.probe_responses",
             "probes the prompts the prefilter would skip: set algorithm.filter_groups.prefilter.enable=true too")
    _check_prefilter_readmits(cfg)
    _check_generation_can_fill_a_step(cfg)

    buffer = cfg.reward_model.overlong_buffer
    if buffer.enable:
        _require(0 < buffer.len <= data.max_response_length, "reward_model.overlong_buffer.len",
                 f"{buffer.len} must lie in [1, data.max_response_length={data.max_response_length}]")
        _require(buffer.penalty_factor >= 0, "reward_model.overlong_buffer.penalty_factor", "must be >= 0")
    _one_of(cfg.reward_model.on_error, REWARD_ON_ERROR_MODES, "reward_model.on_error")
    _require(cfg.reward_model.math_workers >= 0, "reward_model.math_workers",
             f"{cfg.reward_model.math_workers} must be >= 0 (0 = one per core, at most 8)")
    _require(cfg.reward_model.math_timeout_s > 0, "reward_model.math_timeout_s",
             f"{cfg.reward_model.math_timeout_s} must be > 0 (CPU seconds per answer)")

    _validate_async(cfg)
    trainer = cfg.trainer
    _require(trainer.total_training_steps is None or trainer.total_training_steps >= 1,
             "trainer.total_training_steps", "must be >= 1 (or null to use total_epochs)")
    _require(trainer.total_epochs >= 1, "trainer.total_epochs", "must be >= 1")
    _one_of(trainer.resume_mode, RESUME_MODES, "trainer.resume_mode")
    if trainer.resume_mode == "resume_path":
        _require(bool(trainer.resume_from_path), "trainer.resume_from_path", "is required when resume_mode=resume_path")
    for logger in trainer.logger:
        _one_of(logger, LOGGERS, "trainer.logger")
    _one_of(trainer.device, DEVICES, "trainer.device")
    _require(trainer.cpu_threads >= 0, "trainer.cpu_threads", "must be >= 0 (0 = one per usable core)")
    _require(trainer.log_val_generations >= 0, "trainer.log_val_generations", "must be >= 0")
    _require(trainer.max_consecutive_skips >= 1, "trainer.max_consecutive_skips", "must be >= 1")
    _require(trainer.nnodes >= 1, "trainer.nnodes", "must be >= 1")
    _require(trainer.n_gpus_per_node >= 1, "trainer.n_gpus_per_node", "must be >= 1")
    world_size = trainer.nnodes * trainer.n_gpus_per_node
    _require((actor.ppo_mini_batch_size * rollout.n) % world_size == 0, "actor_rollout_ref.actor.ppo_mini_batch_size",
             f"x actor_rollout_ref.rollout.n = {actor.ppo_mini_batch_size * rollout.n} sequences per mini-batch must "
             f"split evenly over trainer.nnodes x trainer.n_gpus_per_node = {world_size} processes")


def engine_context(cfg: GSPOConfig) -> EngineContext:
    """The run around the rollout engine, for its check (:func:`gspo.config.rollout.validate_rollout`)."""
    return EngineContext(device=cfg.trainer.device, max_prompt_length=cfg.data.max_prompt_length,
                         max_response_length=cfg.data.max_response_length,
                         lora_rank=cfg.actor_rollout_ref.model.lora_rank,
                         world_size=cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node)
