"""Shared fixtures: a tiny random Qwen2 checkpoint and addition prompts, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gspo.config import GSPOConfig, load_config
from tests.presets import ADDITION_PRESET


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Qwen2 with the embedded character tokenizer (no network)."""
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    folder = tmp_path_factory.mktemp("tiny_model")
    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def addition_files(tmp_path_factory) -> tuple[Path, Path]:
    """64 train and 8 val one-digit addition prompts."""
    folder = tmp_path_factory.mktemp("addition_data")
    rows = [{"prompt": f"{a}+{b}=", "ground_truth": str(a + b), "data_source": "addition"}
            for a in range(10) for b in range(10)]
    return write_jsonl(folder / "train.jsonl", rows[:64]), write_jsonl(folder / "val.jsonl", rows[64:72])


@pytest.fixture(scope="session")
def parity_reward(tmp_path_factory) -> Path:
    """A reward a random policy earns about half the time (odd response length), so advantages are non-zero."""
    path = tmp_path_factory.mktemp("rewards") / "parity.py"
    path.write_text("def compute_score(response_text, ground_truth, extra_info):\n"
                    "    return float(len(response_text) % 2)\n")
    return path


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, addition_files, parity_reward):
    """A fast config on the tiny model with the parity reward, on the addition preset's settings; extra
    ``key=value`` overrides apply last."""

    def build(*overrides: str) -> GSPOConfig:
        train, val = addition_files
        base = [
            f"custom_reward_function.path={parity_reward}",
            f"actor_rollout_ref.model.path={tiny_model_dir}",
            f"data.train_files=[{train}]",
            f"data.val_files=[{val}]",
            f"trainer.default_local_dir={tmp_path / 'run'}",
            "data.train_batch_size=4",
            "data.gen_batch_size=8",
            "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
            "data.max_response_length=4",
            "trainer.total_training_steps=2",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
            "trainer.logger=[]",
            "trainer.device=cpu",
            "trainer.resume_mode=disable",
        ]
        return load_config(None, base + list(overrides), preset=ADDITION_PRESET)

    return build
