"""Integration: real training steps of a tiny Qwen2 on CPU (seconds), no mocks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gspo.trainer import DynamicSamplingError, Trainer
from gspo.trainer.actor import compute_log_probs
from gspo.trainer.old_policy import num_on_policy_rows, rollout_log_probs_are_old, takes_on_policy_shortcut


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# Constant reward for prompts whose first operand is < 5, a length-dependent reward otherwise: the first
# kind of group is all-equal and must be dropped; the second varies and must be kept.
HALF_CONSTANT_REWARD = '''
def compute_score(response_text, ground_truth, extra_info):
    if int(extra_info["row_index"]) % 2 == 0:
        return 1.0
    return float(len(response_text) % 2)
'''


def test_train_step_updates_parameters_with_finite_loss(make_config):
    trainer = Trainer(make_config("algorithm.filter_groups.enable=false", "actor_rollout_ref.actor.optim.lr=1e-2"))
    before = _params(trainer.model)
    metrics = trainer.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "no parameter changed after a training step"
    assert metrics["train/num_gen_batches"] == 1.0
    for key in ("actor/pg_clipfrac_lower", "actor/pg_clipfrac_upper", "actor/seq_importance_ratio",
                "actor/entropy", "actor/grad_norm", "actor/lr", "timing/gen", "timing/update", "timing/step",
                "perf/gen_tokens_per_s", "perf/train_tokens_per_s", "response_length/clip_ratio"):
        assert key in metrics, key


def test_dynamic_sampling_drops_all_equal_groups_and_trims_whole_groups(make_config, tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text(HALF_CONSTANT_REWARD)
    trainer = Trainer(make_config(f"custom_reward_function.path={reward}", "algorithm.filter_groups.metric=seq_reward",
                                  "data.train_batch_size=4", "data.gen_batch_size=8", "actor_rollout_ref.rollout.n=8"))
    batch, metrics = trainer.producer.produce(trainer.global_step)
    # Exactly train_batch_size whole groups of n rows each.
    groups, counts = torch.unique(batch.group_ids, return_counts=True)
    assert groups.numel() == 4 and counts.tolist() == [8, 8, 8, 8]
    # Every kept group varies; none of the constant (even row_index) prompts survived.
    for gid in groups:
        rewards = batch.seq_reward[batch.group_ids == gid]
        assert rewards.std(unbiased=False) > 0
    kept_rows = {trainer.train_data[i].extra_info["row_index"] for i in batch.prompt_index.tolist()}
    assert all(r % 2 == 1 for r in kept_rows)
    # Some generated groups were constant and dropped; the counts agree with the ratio.
    assert 0 < metrics["train/filtered_prompts_ratio"] < 1
    assert metrics["train/kept_prompts"] >= 4
    assert metrics["train/kept_prompts"] == pytest.approx(
        metrics["train/generated_prompts"] * (1 - metrics["train/filtered_prompts_ratio"]))
    assert metrics["train/generated_prompts"] == 8 * metrics["train/num_gen_batches"]


def test_cap_error_names_counts_and_remedies(make_config, tmp_path):
    reward = tmp_path / "constant.py"
    reward.write_text("def compute_score(response_text, ground_truth, extra_info):\n    return 1.0\n")
    trainer = Trainer(make_config(f"custom_reward_function.path={reward}",
                                  "algorithm.filter_groups.max_num_gen_batches=2"))
    with pytest.raises(DynamicSamplingError) as info:
        trainer.train_step()
    message = str(info.value)
    assert "kept 0 of 16 prompt groups in 2 generation batches" in message
    assert "max_num_gen_batches" in message and "0 = unlimited" in message and "metric" in message


def test_off_policy_mini_batches_clip(make_config):
    # 2 mini-batches per train batch: the second is taken after one optimizer step, so ratios leave the
    # 3e-4 / 4e-4 band and some tokens are clipped.
    trainer = Trainer(make_config("algorithm.filter_groups.enable=false", "data.train_batch_size=8",
                                  "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=8",
                                  "actor_rollout_ref.actor.optim.lr=5e-2",
                                  "actor_rollout_ref.actor.use_rollout_log_probs=false"))  # recompute them
    metrics = trainer.train_step()
    assert metrics["actor/pg_clipfrac"] > 0
    assert metrics["actor/pg_clipfrac"] == pytest.approx(
        metrics["actor/pg_clipfrac_lower"] + metrics["actor/pg_clipfrac_upper"], abs=1e-6)
    assert metrics["timing/old_log_prob"] > 0


def test_rollout_log_probs_replace_the_old_log_prob_forward(make_config):
    off_policy = ("algorithm.filter_groups.enable=false", "data.train_batch_size=8",
                  "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=8",
                  "actor_rollout_ref.actor.optim.lr=5e-2")
    trainer = Trainer(make_config(*off_policy, "actor_rollout_ref.actor.use_rollout_log_probs=true"))
    batch, _ = trainer.producer.produce(trainer.global_step)
    recomputed = compute_log_probs(trainer.model, batch, micro_batch_size=64, temperature=1.0, autocast_dtype=None)
    torch.testing.assert_close(batch.rollout_log_probs, recomputed, rtol=0, atol=1e-5)
    metrics = trainer.train_step()
    assert "timing/old_log_prob" not in metrics and metrics["actor/pg_clipfrac"] > 0  # second mini-batch clips


def test_rollout_log_probs_stand_in_only_for_rows_sampled_by_the_current_weights(make_config):
    from dataclasses import replace

    trainer = Trainer(make_config("algorithm.filter_groups.enable=false", "data.train_batch_size=8",
                                  "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=8"))
    batch, _ = trainer.producer.produce(trainer.global_step)
    first_mini_batch = 4 * 8

    def are_old(candidate):
        return rollout_log_probs_are_old(candidate, on_policy_rows=first_mini_batch, step=trainer.global_step,
                                         use_rollout_log_probs=True, dist=trainer.dist)

    assert are_old(batch)
    # A carried-over (surplus) row in the first mini-batch is fine: it takes the on-policy shortcut...
    stale_first = batch.generation_step.clone()
    stale_first[0] -= 1
    assert are_old(replace(batch, generation_step=stale_first))
    # ...one after it needs the policy at the start of this update, which its sampler was not.
    stale_later = batch.generation_step.clone()
    stale_later[-1] -= 1
    assert not are_old(replace(batch, generation_step=stale_later))
    # Restored without them (a checkpoint of a run that recomputed): recompute.
    assert not are_old(replace(batch, rollout_log_probs=None))
    local = replace(batch, generation_step=stale_later)
    trainer.policy_update.compute_old_log_probs(local, step=trainer.global_step, timings=(timings := {}))
    assert "timing/old_log_prob" in timings and torch.isfinite(local.old_log_probs[first_mini_batch:]).all()


def test_rollout_log_probs_are_used_by_default_in_fp32_only(make_config):
    def uses_rollout_log_probs(*overrides: str) -> bool:
        return Trainer(make_config(*overrides)).policy_update.context.use_rollout_log_probs

    assert uses_rollout_log_probs()  # CPU: rollout and update both in fp32
    assert not uses_rollout_log_probs("actor_rollout_ref.actor.use_rollout_log_probs=false")


def test_on_policy_step_skips_old_log_prob_forward(make_config):
    trainer = Trainer(make_config("algorithm.filter_groups.enable=false"))
    metrics = trainer.train_step()
    assert "timing/old_log_prob" not in metrics
    assert metrics["actor/seq_importance_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["actor/pg_clipfrac"] == 0.0


def test_fit_writes_metrics_checkpoint_and_loadable_final_model(make_config, tmp_path):
    cfg = make_config("algorithm.filter_groups.enable=false", "trainer.val_before_train=true",
                      "trainer.test_freq=1", "trainer.save_freq=1")
    Trainer(cfg).fit()
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert all("val/acc_mean" in line and "val/score_mean" in line for line in lines)
    assert (run / "checkpoints" / "latest").read_text().strip() == "global_step_2"
    assert (run / "config.yaml").is_file()
    model = AutoModelForCausalLM.from_pretrained(run / "final_model")
    tokenizer = AutoTokenizer.from_pretrained(run / "final_model")
    ids = tokenizer("3+4=", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]


def test_kl_loss_loads_reference_and_reports_kl(make_config):
    trainer = Trainer(make_config("algorithm.filter_groups.enable=false", "actor_rollout_ref.actor.use_kl_loss=true",
                                  "actor_rollout_ref.actor.ppo_mini_batch_size=2"))
    assert trainer.policy_update.context.reference_model is not None
    metrics = trainer.train_step()
    assert "actor/kl_loss" in metrics and metrics["actor/kl_loss"] >= 0
    assert Trainer(make_config()).policy_update.context.reference_model is None


def test_tensorboard_logger_writes_events(make_config, tmp_path):
    pytest.importorskip("tensorboard")
    Trainer(make_config("algorithm.filter_groups.enable=false", "trainer.logger=[tensorboard]",
                        "trainer.total_training_steps=1")).fit()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_total_training_steps_wins_over_epochs(make_config):
    assert Trainer(make_config("trainer.total_epochs=5", "trainer.total_training_steps=3")).total_steps == 3
    # 64 prompts / 8 per generation batch = 8 steps per epoch.
    assert Trainer(make_config("trainer.total_epochs=2", "trainer.total_training_steps=null")).total_steps == 16


FLAKY_REWARD = '''
def compute_score(response_text, ground_truth, extra_info):
    if int(extra_info["row_index"]) % 2 == 0:
        raise RuntimeError("boom")
    return float(len(response_text) % 2)
'''


def test_reward_errors_are_counted_over_all_generation_batches(make_config, tmp_path):
    from gspo.rewards import RewardError

    reward = tmp_path / "flaky.py"
    reward.write_text(FLAKY_REWARD)
    trainer = Trainer(make_config(f"custom_reward_function.path={reward}", "reward_model.on_error=zero",
                                  "algorithm.filter_groups.enable=false", "data.gen_batch_size=2"))
    batch, metrics = trainer.producer.produce(trainer.global_step)
    assert metrics["train/num_gen_batches"] == 2.0
    even_rows = sum(trainer.train_data[i].extra_info["row_index"] % 2 == 0 for i in batch.prompt_index.tolist())
    assert metrics["reward/errors"] == even_rows  # one error per failed sequence, summed over batches
    assert even_rows > 0
    strict = Trainer(make_config(f"custom_reward_function.path={reward}", "reward_model.on_error=raise"))
    with pytest.raises(RewardError, match="boom"):
        for _ in range(3):
            strict.train_step()


def test_old_policy_rule_first_mini_batch_of_a_single_epoch_only():
    assert num_on_policy_rows(32, ppo_epochs=1) == 32 and num_on_policy_rows(32, ppo_epochs=2) == 0
    assert takes_on_policy_shortcut(0, 0, ppo_epochs=1)
    assert not takes_on_policy_shortcut(0, 1, ppo_epochs=1)  # after the first optimizer step
    assert not takes_on_policy_shortcut(0, 0, ppo_epochs=2)  # the second epoch revisits these rows off-policy
