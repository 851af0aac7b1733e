"""The rollout engine keys: validated at load time, each error naming its key."""

from __future__ import annotations

import importlib.util

import pytest

from gspo.config import ConfigError, load_config


def test_defaults_are_the_hf_engine():
    rollout = load_config().actor_rollout_ref.rollout
    assert rollout.name == "hf" and rollout.dtype == "auto" and rollout.tensor_model_parallel_size == 1
    assert load_config().algorithm.rollout_correction.rollout_is is None  # off by default


@pytest.mark.parametrize("level", ["token", "sequence", "geometric"])
def test_every_rollout_correction_level_validates(level):
    correction = load_config(None, [f"algorithm.rollout_correction.rollout_is={level}"]).algorithm.rollout_correction
    assert correction.rollout_is == level and correction.rollout_is_threshold == 2.0


@pytest.mark.parametrize("override", ["actor_rollout_ref.rollout.gpu_memory_utilization=0.7",
                                      "actor_rollout_ref.rollout.enforce_eager=false",
                                      "actor_rollout_ref.rollout.max_model_len=64",
                                      "actor_rollout_ref.rollout.load_format=dummy"])
def test_vllm_only_keys_are_not_ignored_by_another_engine(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: is read by the vllm engine only"):
        load_config(None, [override])


def test_bad_engine_values_name_the_key():
    with pytest.raises(ConfigError, match="actor_rollout_ref.rollout.dtype"):
        load_config(None, ["actor_rollout_ref.rollout.dtype=fp8"])
    with pytest.raises(ConfigError, match="tensor_model_parallel_size: 2: only 1"):
        load_config(None, ["actor_rollout_ref.rollout.name=vllm",
                           "actor_rollout_ref.rollout.tensor_model_parallel_size=2"])
    with pytest.raises(ConfigError, match="algorithm.rollout_correction.rollout_is"):
        load_config(None, ["algorithm.rollout_correction.rollout_is=product"])
    with pytest.raises(ConfigError, match="need recomputed old log-probs"):
        load_config(None, ["algorithm.rollout_correction.rollout_is=token",
                           "actor_rollout_ref.actor.use_rollout_log_probs=true"])


def test_vllm_without_vllm_fails_at_validation_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec  # an environment without vLLM, whether or not this one has it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"actor_rollout_ref.rollout.name: 'vllm' needs vLLM installed: "
                                          r"pip install -e '\.\[vllm\]'"):
        load_config(None, ["actor_rollout_ref.rollout.name=vllm"])


def test_vllm_installed_validates(monkeypatch):
    real = importlib.util.find_spec  # an environment with vLLM, whether or not this one has it
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: real("json") if name == "vllm" else real(name, *a))
    assert load_config(None, ["actor_rollout_ref.rollout.name=vllm"]).actor_rollout_ref.rollout.name == "vllm"


def test_vllm_with_lora_is_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"actor_rollout_ref.rollout.name: vllm with LoRA"):
        load_config(None, ["actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.model.lora_rank=8"])
