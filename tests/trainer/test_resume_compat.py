"""Which config changes a resumed run accepts: the engine's memory knobs and the log-prob token budgets change no
result (they are what a user retunes after an out-of-memory error); what is trained must not change."""

from __future__ import annotations

import dataclasses

import pytest

from gspo.config import GSPOConfig, to_yaml
from gspo.trainer.resume import check_resumable
from gspo.trainer.run_folder import RunFolderError

RETUNED_ENGINE_KEYS = {"gpu_memory_utilization": 0.85, "enforce_eager": False, "max_num_batched_tokens": 4096,
                       "free_cache_engine": False, "enable_chunked_prefill": True, "max_model_len": 64}


def _checkpoint_yaml(rollout: dict, actor: dict) -> str:
    """The config.yaml of a checkpoint written with these rollout / actor values (defaults elsewhere)."""
    config = GSPOConfig()
    for key, value in rollout.items():
        setattr(config.actor_rollout_ref.rollout, key, value)
    config.actor_rollout_ref.actor = dataclasses.replace(config.actor_rollout_ref.actor, **actor)
    return to_yaml(config)


def test_engine_memory_keys_and_log_prob_budgets_may_change_on_resume():
    saved = _checkpoint_yaml({"name": "vllm", **RETUNED_ENGINE_KEYS},
                             {"log_prob_max_token_len_per_gpu": 8192, "ppo_max_token_len_per_gpu": 4096})
    current = GSPOConfig()
    current.actor_rollout_ref.rollout.name = "vllm"
    check_resumable(current, saved, "checkpoints/global_step_3", 3)  # resumes: no error


@pytest.mark.parametrize("key, value", [("load_format", "dummy"), ("n", 4), ("temperature", 0.7)])
def test_keys_that_change_what_is_trained_still_refuse(key, value):
    saved = _checkpoint_yaml({key: value}, {})
    with pytest.raises(RunFolderError, match=rf"actor_rollout_ref\.rollout\.{key}: .* in the checkpoint"):
        check_resumable(GSPOConfig(), saved, "checkpoints/global_step_3", 3)
