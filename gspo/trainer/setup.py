"""Building the run's data and reward pieces from the config, shared by the trainer and ``gspo validate``."""

from __future__ import annotations

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
from gspo.rewards import RewardManager, get_reward_fn, load_custom_reward


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
        for source in sorted({item.data_source for item in train_data}):
            fn = get_reward_fn(source)  # raises, listing the registered rewards
            if callable(getattr(fn, "preflight", None)):
                fn.preflight()  # e.g. the math rewards: math-verify is installed
    check_ground_truths(cfg, "data.train_files", train_data)
    if val_data is not None:
        check_ground_truths(cfg, "data.val_files", val_data)


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


def preflight(cfg: GSPOConfig) -> str:
    """Everything ``gspo train`` would check before its first step, without loading weights or generating."""
    from gspo.models import check_model_path, load_tokenizer

    model_dir = check_model_path(cfg.actor_rollout_ref.model.path)
    tokenizer = load_tokenizer(cfg.actor_rollout_ref.model.path)
    train = build_dataset(cfg, "data.train_files", tokenizer)
    val = build_dataset(cfg, "data.val_files", tokenizer) if cfg.data.val_files else None
    check_runnable(cfg, train, val)
    build_reward_manager(cfg)
    build_policy_loss(cfg)
    reward = cfg.custom_reward_function.path or "registry by data_source"
    return (f"ok: model {model_dir}; {len(train)} train prompts ({train.num_dropped} overlong dropped); "
            f"{len(val) if val else 0} val prompts; reward: {reward}")


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
        raise PermissionError(f"trainer.default_local_dir: cannot write to {folder}: {exc}") from exc
