"""What a finished run tells its user, dropout off in the update, dtype and file modes of the exported models."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from gspo.cli import main
from gspo.model.folder import stored_dtype
from gspo.trainer import Trainer
from tests.presets import PRESET_ARGS


def _train_args(tiny_model_dir, addition_files, parity_reward, run, *extra: str) -> list[str]:
    train, val = addition_files
    return ["train", *PRESET_ARGS, f"custom_reward_function.path={parity_reward}",
            f"actor_rollout_ref.model.path={tiny_model_dir}",
            f"data.train_files=[{train}]", f"data.val_files=[{val}]", f"trainer.default_local_dir={run}",
            "data.train_batch_size=4", "data.gen_batch_size=8", "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4", "data.max_response_length=4",
            "trainer.total_training_steps=2", "trainer.test_freq=-1", "trainer.device=cpu",
            "algorithm.filter_groups.enable=false", *extra]


def test_train_reports_start_end_accuracy_paths_and_next_commands(tiny_model_dir, addition_files, parity_reward,
                                                                  tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(tiny_model_dir, addition_files, parity_reward, run,
                            "trainer.log_val_generations=2", "trainer.test_freq=2")) == 0
    out = capsys.readouterr().out
    assert "step 0 val_acc=" in out  # the starting accuracy, before any update
    assert "done: 2 steps in " in out
    assert "  val acc      " in out and "(step 0) -> " in out and "(step 2)" in out and "best" in out
    assert f"  final model  {run / 'final_model'}" in out and f"  metrics      {run / 'metrics.jsonl'}" in out
    assert f"gspo eval --model {run / 'final_model'} --data {addition_files[1]}" in out
    assert f"gspo report {run}" in out
    samples = [json.loads(line) for line in (run / "val_generations.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [0, 0, 2, 2]  # before training and at the last step
    assert {"prompt", "response", "score", "acc", "ground_truth"} <= set(samples[0])
    assert samples[0]["prompt"] == samples[2]["prompt"]  # the same prompts every time: comparable across steps


def test_test_freq_off_validates_before_training_only(tiny_model_dir, addition_files, parity_reward, tmp_path):
    """verl's rule: trainer.test_freq <= 0 never validates during training, the last step included."""
    run = tmp_path / "run"
    assert main(_train_args(tiny_model_dir, addition_files, parity_reward, run, "trainer.total_training_steps=1",
                            "trainer.logger=[]")) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], "val/acc_mean" in row) for row in rows] == [(0, True), (1, False)]


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """The tiny Qwen2 with attention dropout 0.3 (GPT-2 / OPT ship 0.1), saved in bfloat16."""
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    folder = tmp_path_factory.mktemp("dropout_model")
    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)
    config.attention_dropout = 0.3
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _ratio_spread(make_config, model_dir, *extra: str) -> tuple[float, float]:
    """One step whose second mini-batch recomputes old log-probs in eval mode and whose update leaves the weights
    unchanged (lr 1e-30): its sequence ratios differ from 1 only through the update forward's dropout."""
    trainer = Trainer(make_config(f"actor_rollout_ref.model.path={model_dir}", "algorithm.filter_groups.enable=false",
                                  "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                                  "actor_rollout_ref.actor.use_rollout_log_probs=false",
                                  "actor_rollout_ref.actor.optim.lr=1e-30", *extra))
    metrics = trainer.train_step()
    return metrics["actor/seq_importance_ratio_min"], metrics["actor/seq_importance_ratio_max"]


def test_dropout_is_off_in_the_update_so_on_policy_ratios_are_exactly_one(make_config, dropout_model_dir):
    assert _ratio_spread(make_config, dropout_model_dir) == (1.0, 1.0)
    low, high = _ratio_spread(make_config, dropout_model_dir, "actor_rollout_ref.model.disable_dropout=false")
    assert high - low > 1e-3  # the key keeps the checkpoint's dropout: noise far beyond GSPO's 3e-4 clip


def test_exports_keep_the_input_dtype_and_are_readable_by_all(make_config, dropout_model_dir, tmp_path):
    trainer = Trainer(make_config(f"actor_rollout_ref.model.path={dropout_model_dir}", "trainer.total_training_steps=1",
                                  "algorithm.filter_groups.enable=false", "trainer.save_freq=1"))
    trainer.fit()
    assert next(trainer.model.parameters()).dtype == torch.float32  # trained in fp32 (optimizer state too)
    run = tmp_path / "run"
    umask = os.umask(0)
    os.umask(umask)
    for folder in (run / "final_model", run / "checkpoints" / "global_step_1" / "model"):
        assert stored_dtype(folder) == torch.bfloat16
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    # The exported config keeps the checkpoint's dropout (it is zeroed on the modules only, for training).
    assert json.loads((run / "final_model" / "config.json").read_text())["attention_dropout"] == 0.3
