"""Our defaults against a pinned copy of verl's (v0.7.0: verl/trainer/config/_generated_ppo_trainer.yaml, i.e.
ppo_trainer.yaml with its actor / rollout / data sub-configs, and recipe/dapo/config/dapo_trainer.yaml for
data.gen_batch_size, algorithm.filter_groups and reward_model.overlong_buffer). A default that moves away from
verl's, or a new key, fails here until gspo/config/verl_defaults.py (the table of differences, with reasons) or
OURS_ONLY says why."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gspo.config import load_config
from gspo.config.verl_defaults import DIFFERENCES, difference, markdown_list
from gspo.config_docs import describe_schema, format_keys
from gspo.rollout.registry import rollout_engine_definitions

# Every schema key verl has, at verl v0.7.0's default (same path in verl unless the comment says otherwise).
VERL_V070 = {
    "data.train_files": ["~/data/rlhf/gsm8k/train.parquet"],
    "data.val_files": ["~/data/rlhf/gsm8k/test.parquet"],
    "data.prompt_key": "prompt",
    "data.max_prompt_length": 512,
    "data.max_response_length": 512,
    "data.train_batch_size": 1024,
    "data.gen_batch_size": None,  # DAPO: ${data.train_batch_size}; null means the same here
    "data.filter_overlong_prompts": False,
    "data.shuffle": True,
    "actor_rollout_ref.model.path": "~/models/deepseek-llm-7b-chat",
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.model.lora_rank": 0,
    "actor_rollout_ref.model.lora_alpha": 16,
    "actor_rollout_ref.model.target_modules": "all-linear",
    "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
    "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.2,
    "actor_rollout_ref.actor.clip_ratio_c": 3.0,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.ppo_mini_batch_size": 256,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": None,
    "actor_rollout_ref.actor.ppo_epochs": 1,
    "actor_rollout_ref.actor.use_dynamic_bsz": False,
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 16384,
    # verl: ref. / rollout.log_prob_max_token_len_per_gpu = ${actor.ppo_max_token_len_per_gpu}; null means the same
    "actor_rollout_ref.actor.log_prob_max_token_len_per_gpu": None,
    "actor_rollout_ref.actor.grad_clip": 1.0,
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "actor_rollout_ref.actor.entropy_checkpointing": False,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.0,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": -1,
    "actor_rollout_ref.actor.optim.weight_decay": 0.01,
    "actor_rollout_ref.actor.fsdp_config.param_offload": False,
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": False,
    "actor_rollout_ref.rollout.name": "??? (required)",
    "actor_rollout_ref.rollout.n": 1,
    "actor_rollout_ref.rollout.mode": "async",
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 1,
    "actor_rollout_ref.rollout.top_k": -1,
    "actor_rollout_ref.rollout.ignore_eos": False,
    "actor_rollout_ref.rollout.dtype": "bfloat16",
    "actor_rollout_ref.rollout.val_kwargs.n": 1,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 0,
    "actor_rollout_ref.rollout.val_kwargs.top_p": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.top_k": -1,
    "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.5,
    "actor_rollout_ref.rollout.enforce_eager": False,
    "actor_rollout_ref.rollout.enable_chunked_prefill": True,
    "actor_rollout_ref.rollout.max_num_batched_tokens": 8192,
    "actor_rollout_ref.rollout.max_model_len": None,
    "actor_rollout_ref.rollout.free_cache_engine": True,
    "actor_rollout_ref.rollout.load_format": "dummy",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
    "algorithm.adv_estimator": "gae",
    "algorithm.norm_adv_by_std_in_grpo": True,
    "algorithm.filter_groups.enable": False,  # DAPO recipe
    "algorithm.filter_groups.metric": None,  # DAPO recipe
    "algorithm.filter_groups.max_num_gen_batches": 0,  # DAPO recipe
    "algorithm.rollout_correction.rollout_is": None,
    "algorithm.rollout_correction.rollout_is_threshold": 2.0,
    "reward_model.overlong_buffer.enable": False,  # DAPO recipe
    "reward_model.overlong_buffer.len": 0,  # DAPO recipe
    "reward_model.overlong_buffer.penalty_factor": 0.0,  # DAPO recipe
    "custom_reward_function.path": None,
    "custom_reward_function.name": "compute_score",
    # verl: checkpoints/${trainer.project_name}/${trainer.experiment_name}; null derives the same (test below)
    "trainer.default_local_dir": None,
    "trainer.total_training_steps": None,
    "trainer.total_epochs": 30,
    "trainer.save_freq": -1,
    "trainer.test_freq": -1,
    "trainer.val_before_train": True,
    "trainer.resume_mode": "auto",
    "trainer.resume_from_path": None,
    "trainer.max_actor_ckpt_to_keep": None,
    "trainer.logger": ["console", "wandb"],
    "trainer.project_name": "verl_examples",
    "trainer.experiment_name": "gsm8k",
    "trainer.log_val_generations": 0,
    "trainer.device": "cuda",
    "trainer.nnodes": 1,
    "trainer.n_gpus_per_node": 8,
}

# Keys verl does not have (or has elsewhere under another meaning): ours alone.
OURS_ONLY = {
    "data.apply_chat_template", "actor_rollout_ref.model.lora_dropout", "actor_rollout_ref.model.disable_dropout",
    "actor_rollout_ref.actor.policy_loss.path", "actor_rollout_ref.actor.policy_loss.name",
    "actor_rollout_ref.actor.logits_chunk_size", "actor_rollout_ref.actor.use_rollout_log_probs",
    "actor_rollout_ref.actor.share_prompt_forward", "actor_rollout_ref.rollout.micro_batch_size",
    "algorithm.filter_groups.keep_surplus", "algorithm.filter_groups.max_surplus_age",
    "algorithm.filter_groups.adaptive_gen_batch_size", "reward_model.on_error", "reward_model.timeout_s",
    "reward_model.math_workers", "reward_model.math_timeout_s", "trainer.max_consecutive_skips", "trainer.seed",
    "trainer.cpu_threads",
    # verl's one-step-off recipe names its rollout pool at the top level (rollout.nnodes, rollout.n_gpus_per_node;
    # both map here), and its async_training.staleness_threshold is a fraction of samples, not policy versions.
    "actor_rollout_ref.rollout.nnodes", "actor_rollout_ref.rollout.n_gpus_per_node",
    "async_training.staleness_threshold", "async_training.behav_imp_weight_cap",
}
OURS_ONLY |= {d.key for d in describe_schema() if d.key.startswith("algorithm.filter_groups.prefilter.")}


def _defaults() -> dict:
    return {d.key: d.default for d in describe_schema()}


def _plugin_engine_keys() -> set[str]:
    """Keys of engines registered from outside gspo (a test registers one while the suite is collected)."""
    return {f"actor_rollout_ref.rollout.{field.name}" for engine in rollout_engine_definitions()
            if engine.options is not None and not engine.options.__module__.startswith("gspo.")
            for field in dataclasses.fields(engine.options)}


def test_every_schema_key_is_pinned_to_verl_or_ours_alone():
    keys = set(_defaults()) - _plugin_engine_keys()
    assert keys - VERL_V070.keys() - OURS_ONLY == set(), "pin verl's default above, or add the key to OURS_ONLY"
    assert VERL_V070.keys() - keys == set() and OURS_ONLY - keys == set(), "a pinned key left the schema"
    assert VERL_V070.keys() & OURS_ONLY == set()


@pytest.mark.parametrize("key", sorted(VERL_V070))
def test_default_is_verls_unless_the_table_says_why(key):
    ours, verl = _defaults()[key], VERL_V070[key]
    listed = difference(key)
    if listed is None:
        assert ours == verl, f"{key}: default {ours!r}, verl's {verl!r}: restore it or list it in verl_defaults.py"
    else:
        assert listed.verl == verl, f"{key}: the table says verl's default is {listed.verl!r}, it is {verl!r}"
        assert listed.reason


def test_the_table_lists_only_shared_keys_that_differ():
    defaults = _defaults()
    for entry in DIFFERENCES:
        assert entry.key in VERL_V070, f"{entry.key}: not a key verl has"
        conditional = "when" in entry.ours  # the static default is verl's, a rule changes it
        assert conditional or defaults[entry.key] != VERL_V070[entry.key], f"{entry.key} is at verl's default"


def test_null_defaults_resolve_as_verl_does():
    cfg = load_config(None, [], preset="none")
    assert cfg.trainer.default_local_dir == "checkpoints/verl_examples/gsm8k"
    assert cfg.data.gen_batch_size is None  # = data.train_batch_size (preflight, producer)


def test_gspo_loss_takes_the_paper_clip_range_unless_one_is_given():
    cfg = load_config(None, ["actor_rollout_ref.actor.policy_loss.loss_mode=gspo"], preset="none")
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (3e-4, 4e-4)
    cfg = load_config(None, ["actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
                             "actor_rollout_ref.actor.clip_ratio_high=0.001"], preset="none")
    assert (cfg.actor_rollout_ref.actor.clip_ratio_low, cfg.actor_rollout_ref.actor.clip_ratio_high) == (3e-4, 1e-3)
    vanilla = load_config(None, [], preset="none").actor_rollout_ref.actor
    assert (vanilla.clip_ratio_low, vanilla.clip_ratio_high) == (0.2, 0.2)


def test_gspo_config_marks_each_difference_and_the_readme_lists_the_table():
    out = format_keys()
    for entry in DIFFERENCES:
        assert "(verl: " in format_keys(entry.key) and entry.reason in format_keys(entry.key), entry.key
    assert out.count("differs because") == len(DIFFERENCES)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- verl-differences -->\n(.*?)\n<!-- /verl-differences -->", readme, re.S)
    assert block, "README.md: the list between <!-- verl-differences --> markers is missing"
    assert block.group(1) == markdown_list(), ("README.md's list of defaults that differ from verl is stale: paste "
                                               "python -c 'from gspo.config.verl_defaults import markdown_list; "
                                               "print(markdown_list())'")
