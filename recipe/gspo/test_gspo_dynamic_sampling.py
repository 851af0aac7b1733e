"""The recipe's dynamic-sampling behaviour, run with ``config/gspo_dynamic_sampling.yaml`` itself (sizes scaled
down, the recipe's ratios kept: gen batch > train batch, two mini-batches per train batch) on a tiny random Qwen2.

Collected by the suite (``recipe`` is in pytest's testpaths); ``validate_implementation.py`` checks the recipe's
files and keys, the tests here what its settings do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gspo.config import load_config
from gspo.trainer import Trainer
from gspo.trainer.dynamic_sampling import DynamicSamplingError

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config" / "gspo_dynamic_sampling.yaml"

# Prompts at even rows always score 1 (all-equal groups, which DAPO drops); odd rows score 1 for an odd response
# length (groups that vary, which it keeps).
HALF_CONSTANT_REWARD = """
def compute_score(response_text, ground_truth, extra_info):
    if int(extra_info["row_index"]) % 2 == 0:
        return 1.0
    return float(len(response_text) % 2)
"""


@pytest.fixture(scope="module")
def recipe_files(tmp_path_factory) -> dict[str, Path]:
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    folder = tmp_path_factory.mktemp("recipe")
    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    rows = [f'{{"prompt": "{a}+{b}=", "ground_truth": "{a + b}", "data_source": "addition"}}\n'
            for a in range(8) for b in range(8)]
    (folder / "train.jsonl").write_text("".join(rows))
    (folder / "half_constant.py").write_text(HALF_CONSTANT_REWARD)
    (folder / "constant.py").write_text("def compute_score(response_text, ground_truth, extra_info):\n    return 1.0\n")
    return {"model": folder / "model", "train": folder / "train.jsonl", "half": folder / "half_constant.py",
            "constant": folder / "constant.py", "run": folder / "run"}


def recipe_trainer(files: dict[str, Path], reward: str, *overrides: str) -> Trainer:
    return Trainer(load_config(CONFIG, [
        f"actor_rollout_ref.model.path={files['model']}", f"data.train_files=[{files['train']}]", "data.val_files=[]",
        f"custom_reward_function.path={files[reward]}", f"trainer.default_local_dir={files['run']}",
        "data.train_batch_size=4", "data.gen_batch_size=6", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.rollout.n=4", "data.max_response_length=4", "trainer.device=cpu",
        "trainer.resume_mode=disable", "trainer.logger=[]", *overrides]))


def test_recipe_keeps_only_groups_that_vary_and_updates_twice_per_step(recipe_files):
    trainer = recipe_trainer(recipe_files, "half")
    metrics = trainer.train_step()
    assert trainer.config.algorithm.filter_groups.metric == "acc"  # the recipe's filter
    assert metrics["train/num_gen_batches"] >= 1 and 0 < metrics["train/filtered_prompts_ratio"] < 1
    assert metrics["train/generated_prompts"] == 6 * metrics["train/num_gen_batches"]
    assert metrics["actor/num_updates"] == 2  # train batch / mini-batch: the second one is off-policy
    batch, _ = trainer.producer.produce(trainer.global_step)
    for group in torch.unique(batch.group_ids):
        assert batch.acc[batch.group_ids == group].std(unbiased=False) > 0  # no all-equal group is trained on
    kept_rows = {trainer.train_data[i].extra_info["row_index"] for i in batch.prompt_index.tolist()}
    assert all(row % 2 == 1 for row in kept_rows)


def test_recipe_gives_up_after_max_num_gen_batches_when_every_group_is_equal(recipe_files):
    trainer = recipe_trainer(recipe_files, "constant", "algorithm.filter_groups.max_num_gen_batches=3")
    with pytest.raises(DynamicSamplingError, match="kept 0 of 18 prompt groups in 3 generation batches"):
        trainer.train_step()


def test_recipe_without_filtering_trains_on_the_first_generation_batch(recipe_files):
    metrics = recipe_trainer(recipe_files, "constant", "algorithm.filter_groups.enable=false").train_step()
    assert metrics["train/num_gen_batches"] == 1


def test_validate_implementation_passes():
    spec = importlib.util.spec_from_file_location("validate_implementation", HERE / "validate_implementation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    keys = dict(module.script_overrides(module.SCRIPTS[0]))
    assert keys["actor_rollout_ref.actor.policy_loss.loss_mode"] == "gspo"
    assert keys["algorithm.rollout_correction.rollout_is"] == "geometric"
    engines = {name: dict(pairs) for name, pairs in module.engine_overrides(module.SCRIPTS[0]).items()}
    assert engines == {"vllm": {"actor_rollout_ref.rollout.name": "vllm",
                                "actor_rollout_ref.rollout.gpu_memory_utilization": "0.3"},
                       "hf": {"actor_rollout_ref.rollout.name": "hf"}}
