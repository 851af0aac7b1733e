"""May this config resume that checkpoint? The same run continues; a different run never resumes silently.

A key changes *what is trained* (model, data, algorithm, actor, rollout sampling, reward, seed, ...) unless it is
listed in :data:`MAY_CHANGE`: scheduling, logging, checkpoint retention, validation, the number and placement of
processes, and performance knobs that leave the update the same up to float rounding.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from gspo.config import GSPOConfig, rollout_keys_that_may_change
from gspo.distributed import DistContext
from gspo.errors import RunComplete
from gspo.trainer.run_folder import RunFolderError

log = logging.getLogger(__name__)

# Prefixes of dotted keys that may differ between a checkpoint's config and the resuming one.
MAY_CHANGE = (
    "trainer.",  # scheduling, logging, retention, processes, device; trainer.seed is the exception below
    "data.val_files", "actor_rollout_ref.rollout.val_kwargs.",  # validation only
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor_rollout_ref.actor.use_dynamic_bsz",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "actor_rollout_ref.actor.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.actor.logits_chunk_size",
    "actor_rollout_ref.actor.entropy_checkpointing", "actor_rollout_ref.actor.share_prompt_forward",
    "actor_rollout_ref.actor.fsdp_config.", "actor_rollout_ref.model.enable_gradient_checkpointing",
    "actor_rollout_ref.rollout.micro_batch_size", "reward_model.timeout_s", "reward_model.math_workers",
    "reward_model.math_timeout_s",
)
MUST_MATCH = ("trainer.seed",)


def keys_that_may_change() -> tuple[str, ...]:
    """:data:`MAY_CHANGE` and the keys each rollout engine declares may change (its memory and speed knobs, e.g.
    vllm's gpu_memory_utilization: what a user retunes after an out-of-memory error)."""
    return MAY_CHANGE + rollout_keys_that_may_change()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} for a nested mapping (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def may_change(key: str) -> bool:
    return key not in MUST_MATCH and any(key == p or (p.endswith(".") and key.startswith(p))
                                         for p in keys_that_may_change())


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every key whose values differ.

    A key only one side has (a newer or older gspo) differs only when the other side is not at the default.
    """
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(GSPOConfig)))
    missing = object()
    diffs = []
    for key in sorted(set(saved) | set(current)):
        before = saved.get(key, defaults.get(key, missing))
        after = current.get(key, defaults.get(key, missing))
        if before != after:
            diffs.append((key, None if before is missing else before, None if after is missing else after))
    return diffs


def check_resumable(config: GSPOConfig, checkpoint_config_yaml: str, checkpoint: str, step: int) -> None:
    """Raise :class:`RunFolderError` (exit 2) unless ``config`` continues the run that wrote ``checkpoint``."""
    saved = flatten(yaml.safe_load(checkpoint_config_yaml) or {})
    current = flatten(OmegaConf.to_container(OmegaConf.structured(config)))
    diffs = config_differences(saved, current)
    blocking = [d for d in diffs if not may_change(d[0])]
    if blocking:
        listed = "; ".join(f"{key}: {before!r} in the checkpoint, {after!r} now" for key, before, after in blocking)
        raise RunFolderError(
            f"trainer.default_local_dir: {checkpoint} (step {step}) was written by a different run: {listed}. "
            f"Use a new trainer.default_local_dir, or trainer.resume_mode=disable to start over in this folder "
            f"(the previous run is moved to previous_runs/). Keys that may change on resume: "
            f"{', '.join(p.rstrip('.') + ('.*' if p.endswith('.') else '') for p in keys_that_may_change())} "
            f"(not {', '.join(MUST_MATCH)})")
    if diffs:
        log.info("resuming %s with changed keys (allowed): %s", checkpoint,
                 "; ".join(f"{key}: {before!r} -> {after!r}" for key, before, after in diffs))


def check_steps_left(total_steps: int, step: int, checkpoint: str, exported: bool) -> None:
    """``total_training_steps`` must lie beyond the checkpoint's step (equal: only an unfinished export remains).

    Equal with the export written is a finished run: :class:`RunComplete` (exit 0), so a scheduler that retries a
    job that already finished sees success, as with verl and TRL."""
    if step == total_steps and exported:
        raise RunComplete(f"{checkpoint} is step {step} of trainer.total_training_steps={total_steps} and "
                          f"final_model is exported; raise trainer.total_training_steps to train on")
    if step > total_steps:
        raise RunFolderError(
            f"trainer.total_training_steps: {total_steps} is at or below the step of the checkpoint to resume "
            f"({checkpoint}, step {step}{', final_model exported' if exported else ''}): nothing left to train. "
            f"Raise trainer.total_training_steps to train on, or use a new trainer.default_local_dir")


def plan_resume(config: GSPOConfig, output_dir: Path, total_steps: int, dist: DistContext) -> Path | None:
    """The verified checkpoint this run continues from, or None to start from scratch; fails (exit 2) on a
    damaged ``resume_from_path``, a folder whose checkpoints all fail verification, a different run, or no steps
    left. Cheap next to loading weights, so the trainer calls it first (collective)."""
    from gspo.trainer.checkpoint import exported_step, select_checkpoint
    from gspo.trainer.manifest import CheckpointDamaged, verify

    mode = config.trainer.resume_mode
    if mode == "disable":
        return None
    if mode == "resume_path":
        path = Path(config.trainer.resume_from_path)
        try:
            verify(path, dist)
        except CheckpointDamaged as exc:
            raise RunFolderError(f"trainer.resume_from_path: {path} is not a usable checkpoint: {exc}") from None
    else:
        path = select_checkpoint(output_dir / "checkpoints", dist)
        if path is None:
            return None
    step = int(json.loads((path / "trainer_state.json").read_text())["step"])
    check_resumable(config, (path / "config.yaml").read_text(), str(path), step)
    check_steps_left(total_steps, step, str(path), exported_step(output_dir / "final_model") == step)
    return path
