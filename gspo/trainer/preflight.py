"""What a run builds and checks before its first step (data, reward, policy loss, device, run folder, resume), shared
by the trainer's builder and ``gspo validate``."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import numpy as np
import torch

from gspo.algos import RegisteredLoss, get_policy_loss_fn
from gspo.algos.registry import describe_loss
from gspo.config import ConfigError, GSPOConfig
from gspo.data import DataError, PromptDataset
from gspo.plugins import load_function_from_file
from gspo.resources import resolve_path
from gspo.rewards import RewardError, RewardManager, get_reward_fn, load_custom_reward, registered_rewards
from gspo.rewards.math import configure_shared_pool
from gspo.trainer.run_folder import RunFolderError


def build_dataset(cfg: GSPOConfig, key: str, tokenizer) -> PromptDataset:
    """The prompts of ``data.train_files`` or ``data.val_files`` (``key``); errors name the key and the file."""
    data = cfg.data
    files = getattr(data, key.split(".")[-1])
    try:
        return PromptDataset.from_files([str(resolve_path(f)) for f in files], tokenizer,
                                        prompt_key=data.prompt_key, max_prompt_length=data.max_prompt_length,
                                        filter_overlong_prompts=data.filter_overlong_prompts,
                                        apply_chat_template=data.apply_chat_template)
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from exc


def build_reward_manager(cfg: GSPOConfig) -> RewardManager:
    custom = cfg.custom_reward_function
    buffer = cfg.reward_model.overlong_buffer
    configure_shared_pool(cfg.reward_model.math_workers, cfg.reward_model.math_timeout_s)
    return RewardManager(load_custom_reward(custom.path, custom.name) if custom.path else None,
                         on_error=cfg.reward_model.on_error, overlong_enable=buffer.enable,
                         overlong_buffer_len=buffer.len, overlong_penalty_factor=buffer.penalty_factor,
                         max_response_length=cfg.data.max_response_length, timeout_s=cfg.reward_model.timeout_s)


def build_policy_loss(cfg: GSPOConfig) -> RegisteredLoss:
    """The policy loss: ``policy_loss.path``'s function ``policy_loss.name`` if set, else the registered
    ``policy_loss.loss_mode``."""
    loss = cfg.actor_rollout_ref.actor.policy_loss
    if not loss.path:
        return get_policy_loss_fn(loss.loss_mode)
    key = "actor_rollout_ref.actor.policy_loss.path"
    try:
        return describe_loss(load_function_from_file(loss.path, loss.name, what="policy loss"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def check_runnable(cfg: GSPOConfig, train_data: PromptDataset, val_data: PromptDataset | None = None) -> None:
    """Settings that type-check but cannot run on this data: fail before any generation."""
    if cfg.data.train_batch_size > len(train_data):
        raise ConfigError(f"data.train_batch_size: {cfg.data.train_batch_size} is larger than the "
                          f"{len(train_data)} usable prompts in data.train_files")
    gen_batch = cfg.data.gen_batch_size or cfg.data.train_batch_size
    if gen_batch > len(train_data):
        raise ConfigError(f"data.gen_batch_size: {gen_batch} is larger than the {len(train_data)} usable prompts "
                          f"in data.train_files")
    if cfg.actor_rollout_ref.model.lora_rank > 0:
        from gspo.trainer.lora import require_peft

        require_peft()  # an optional extra: say so before the weights load
    if not cfg.custom_reward_function.path:
        check_reward_sources(train_data, "data.train_files")
    check_ground_truths(cfg, "data.train_files", train_data)
    if val_data is not None:
        check_ground_truths(cfg, "data.val_files", val_data)
    check_loggers(cfg.trainer.logger)


def check_ground_truths(cfg: GSPOConfig, key: str, data: PromptDataset) -> None:
    """Every row a built-in reward scores needs a ground truth; a custom reward gets all rows with one or none.

    Without this, a row lacking one is scored as an error (or 0) mid-run, and a short run can finish unnoticed.
    """
    lacking = [item for item in data if item.ground_truth is None or not str(item.ground_truth).strip()]
    if not lacking:
        return
    first = lacking[0]
    where = f"{key}: row {first.extra_info.get('row_index', first.index)} (data_source={first.data_source!r})"
    if not cfg.custom_reward_function.path:
        raise DataError(f"{where} and {len(lacking) - 1} more rows have no ground truth (field 'ground_truth' or "
                        f"'reward_model.ground_truth'); the built-in reward for their data_source needs one: fix "
                        f"or drop those rows")
    if len(lacking) < len(data):
        raise DataError(f"{where} and {len(lacking) - 1} more of {len(data)} rows have no ground truth while the "
                        f"others have one: fix or drop those rows (a custom reward gets a ground truth for every "
                        f"row or for none)")


def check_loggers(loggers: list[str]) -> None:
    """The libraries of the sinks in trainer.logger are installed (an ImportError naming the extra otherwise)."""
    from gspo.trainer.sinks import EXTRAS, MissingLoggerError

    needs = {"tensorboard": ("tensorboard", "pip install 'gspo[tensorboard]'"), "wandb": ("wandb", EXTRAS["wandb"]),
             "mlflow": ("mlflow", EXTRAS["mlflow"])}
    for name in loggers:
        if name in needs and importlib.util.find_spec(needs[name][0]) is None:
            raise MissingLoggerError(f"trainer.logger: {name!r} needs the {needs[name][0]} library: "
                                     f"{needs[name][1]}, or drop {name} from trainer.logger")


def check_reward_sources(data: PromptDataset, key: str) -> None:
    """Every row's data_source has a registered reward; else one line naming the first such row's file:line."""
    for source in sorted({item.data_source for item in data}):
        try:
            fn = get_reward_fn(source)
        except RewardError:
            first = next(i for i, item in enumerate(data) if item.data_source == source)
            count = sum(item.data_source == source for item in data)
            what = "rows have no data_source column" if source == "unknown" else \
                f"rows have data_source {source!r}, which has no registered reward"
            raise ConfigError(
                f"{key}: {count} {what} (first: {data.where[first]}); registered: "
                f"{', '.join(registered_rewards())}. Set custom_reward_function.path=FILE.py (a compute_score("
                f"data_source, solution_str, ground_truth, extra_info) function) or a registered data_source") from None
        if callable(getattr(fn, "preflight", None)):
            fn.preflight()  # e.g. the math rewards: math-verify is installed


def preflight(cfg: GSPOConfig) -> str:
    """Everything ``gspo train`` would check before its first step, without loading weights or generating."""
    from gspo.model.folder import check_weights_present, stored_dtype
    from gspo.model.loading import check_model_path, load_tokenizer

    model_dir = check_model_path(cfg.actor_rollout_ref.model.path)
    check_weights_present(model_dir)
    device = check_device(cfg)
    check_output_writable(Path(cfg.trainer.default_local_dir))
    tokenizer = load_tokenizer(cfg.actor_rollout_ref.model.path)
    train = build_dataset(cfg, "data.train_files", tokenizer)
    val = build_dataset(cfg, "data.val_files", tokenizer) if cfg.data.val_files else None
    check_runnable(cfg, train, val)
    build_reward_manager(cfg)
    build_policy_loss(cfg)
    from gspo.rollout import rollout_engine_factory

    rollout_engine_factory(cfg.actor_rollout_ref.rollout.name)  # an unknown engine names the key
    resume = check_resume(cfg, count_training_steps(cfg, len(train)))
    reward = cfg.custom_reward_function.path or "registry by data_source"
    return (f"ok: model {model_dir} ({stored_dtype(model_dir)}); device {device}; run folder "
            f"{cfg.trainer.default_local_dir} ({resume}); {len(train)} train prompts ({train.num_dropped} overlong "
            f"dropped); {len(val) if val else 0} val prompts; reward: {reward}")


def count_training_steps(cfg: GSPOConfig, num_train_prompts: int) -> int:
    """trainer.total_training_steps, else one step per generation batch of the data, times trainer.total_epochs."""
    if cfg.trainer.total_training_steps is not None:  # wins over total_epochs
        return cfg.trainer.total_training_steps
    gen_batch = cfg.data.gen_batch_size or cfg.data.train_batch_size
    return max(1, num_train_prompts // gen_batch) * cfg.trainer.total_epochs


def check_resume(cfg: GSPOConfig, total_steps: int) -> str:
    """What ``gspo train`` would resume (a verified checkpoint of the same run) or why it cannot (RunFolderError)."""
    from gspo.distributed import SINGLE_PROCESS
    from gspo.trainer.resume import plan_resume

    path = plan_resume(cfg, Path(cfg.trainer.default_local_dir), total_steps, SINGLE_PROCESS)
    return "fresh start" if path is None else f"resumes from {path}"


def check_device(cfg: GSPOConfig) -> str:
    """trainer.device exists here, with enough GPUs for trainer.n_gpus_per_node; returns its name."""
    from gspo.model.loading import resolve_device

    device = resolve_device(cfg.trainer.device)
    if device.type == "cuda" and cfg.trainer.n_gpus_per_node > torch.cuda.device_count():
        raise ConfigError(f"trainer.n_gpus_per_node: {cfg.trainer.n_gpus_per_node} processes asked for but this node "
                         f"has {torch.cuda.device_count()} GPUs; lower it or set CUDA_VISIBLE_DEVICES")
    return device.type


def check_output_writable(folder: Path) -> None:
    """``gspo validate``'s version of :func:`check_writable`: the run folder, or the nearest folder above it that
    exists, accepts new files; nothing is created."""
    existing = folder.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir():
        ok = os.access(existing, os.W_OK | os.X_OK)
    else:
        ok = False
    if not ok:
        raise RunFolderError(f"trainer.default_local_dir: cannot write to {folder} ({existing} is "
                              f"{'not a folder' if not existing.is_dir() else 'not writable'}); choose another folder")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_writable(folder: Path, rank: int = 0) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{rank}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"trainer.default_local_dir: cannot write to {folder}: {exc}") from exc
