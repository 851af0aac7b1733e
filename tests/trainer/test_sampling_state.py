"""keep_surplus, adaptive generation batches and the prefilter: whole groups, never trained twice, exact resume."""

from __future__ import annotations

import random

import pytest
import torch

from gspo.config import FilterGroupsConfig, PrefilterConfig
from gspo.trainer import Trainer
from gspo.trainer.sampling_state import DynamicSamplingState

# Even rows get a constant reward (their groups are always dropped), odd rows a varying one.
HALF_CONSTANT_REWARD = '''
def compute_score(response_text, ground_truth, extra_info):
    if int(extra_info["row_index"]) % 2 == 0:
        return 1.0
    return float(len(response_text) % 2)
'''


@pytest.fixture
def half_constant(tmp_path):
    path = tmp_path / "half.py"
    path.write_text(HALF_CONSTANT_REWARD)
    return path


def test_keep_surplus_uses_leftover_whole_groups_once(make_config, half_constant):
    trainer = Trainer(make_config(f"custom_reward_function.path={half_constant}", "data.gen_batch_size=16",
                                  "algorithm.filter_groups.keep_surplus=true", "actor_rollout_ref.rollout.n=8"))
    seen: set[int] = set()
    used_surplus, surplus_only_steps = 0.0, 0
    for step in range(4):
        batch, metrics = trainer.producer.produce(trainer.global_step)
        groups, counts = torch.unique(batch.group_ids, return_counts=True)
        assert groups.numel() == 4 and set(counts.tolist()) == {8}  # exactly train_batch_size whole groups
        assert not seen & set(groups.tolist()), "a group was trained twice"
        seen |= set(groups.tolist())
        assert bool((step - batch.generation_step <= 1).all())  # nothing older than max_surplus_age
        used_surplus += metrics["train/surplus_groups_used"]
        if metrics["train/generated_prompts"] == 0:  # filled from surplus alone: nothing generated, nothing filtered
            assert not {"train/filtered_prompts_ratio", "reward/all/acc_mean", "response_length/mean"} & set(metrics)
            surplus_only_steps += 1
        else:
            assert 0.0 <= metrics["train/filtered_prompts_ratio"] < 1.0
        trainer.global_step += 1
    assert used_surplus > 0 and surplus_only_steps > 0


def test_surplus_older_than_max_age_is_dropped():
    from gspo.trainer.batch import RolloutBatch

    state = DynamicSamplingState(FilterGroupsConfig(keep_surplus=True, max_surplus_age=1), default_gen_batch_size=8,
                                 num_prompts=100)
    ones = torch.ones(4, 2)
    leftover = RolloutBatch(prompt_ids=ones.long(), prompt_mask=ones.long(), response_ids=ones.long(),
                            response_mask=ones, group_ids=torch.tensor([7, 7, 9, 9]),
                            prompt_index=torch.tensor([1, 1, 2, 2]), generation_step=torch.tensor([3, 3, 4, 4]))
    state.store_surplus(leftover)
    fresh = state.take_surplus(step=5)  # group 7 is 2 steps old, group 9 one step
    assert fresh.group_ids.tolist() == [9, 9]
    assert state.take_surplus(step=5) is None  # taken once, never again


def test_adaptive_gen_batch_size_follows_the_keep_ratio():
    state = DynamicSamplingState(FilterGroupsConfig(adaptive_gen_batch_size=True), default_gen_batch_size=48,
                                 num_prompts=1000)
    assert state.gen_batch_size(32) == 48  # nothing observed yet
    state.keep_ratio = 0.5
    assert state.gen_batch_size(32) == 71  # ceil(32 / 0.5 * 1.1)
    state.keep_ratio = 0.0
    assert state.gen_batch_size(32) == 704  # floor of 5% keep ratio: 32 / 0.05 * 1.1
    small = DynamicSamplingState(FilterGroupsConfig(adaptive_gen_batch_size=True), default_gen_batch_size=48,
                                 num_prompts=100)
    small.keep_ratio = 0.5
    assert small.gen_batch_size(10**6) == 100  # never more than the dataset


def test_prefilter_skips_constant_prompts_and_readmits_some():
    cfg = FilterGroupsConfig(prefilter=PrefilterConfig(enable=True, min_constant_visits=2, readmit_prob=0.25))
    state = DynamicSamplingState(cfg, default_gen_batch_size=8, num_prompts=100)
    state.constant_streak = {1: 2, 2: 1, 3: 5}
    random.seed(0)
    admitted_counts = {1: 0, 2: 0, 3: 0, 4: 0}
    for _ in range(2000):
        admitted, skipped = state.admit([1, 2, 3, 4])
        assert sorted(admitted + skipped) == [1, 2, 3, 4]
        for i in admitted:
            admitted_counts[i] += 1
    assert admitted_counts[2] == admitted_counts[4] == 2000  # below the streak threshold: always generated
    for i in (1, 3):  # skipped, but re-admitted about a quarter of the time
        assert 400 < admitted_counts[i] < 600


def test_prefilter_in_training_skips_always_constant_prompts(make_config, half_constant):
    trainer = Trainer(make_config(f"custom_reward_function.path={half_constant}", "data.gen_batch_size=16",
                                  "algorithm.filter_groups.prefilter.enable=true",
                                  "algorithm.filter_groups.prefilter.min_constant_visits=1",
                                  "algorithm.filter_groups.prefilter.readmit_prob=0.01", "trainer.total_epochs=3",
                                  "algorithm.filter_groups.max_num_gen_batches=0"))
    skipped = 0.0
    for _ in range(12):
        _, metrics = trainer.producer.produce(trainer.global_step)
        skipped += metrics["train/prefiltered_prompts"]
    assert skipped > 0
    even = [i for i, item in enumerate(trainer.train_data) if item.extra_info["row_index"] % 2 == 0]
    assert all(trainer.producer.sampling_state.constant_streak.get(i, 0) >= 1 for i in even
               if i in trainer.producer.sampling_state.constant_streak)


def test_probes_in_training_drop_constant_prompts_for_one_response_each(make_config, half_constant):
    trainer = Trainer(make_config(f"custom_reward_function.path={half_constant}", "data.gen_batch_size=16",
                                  "actor_rollout_ref.rollout.n=4", "algorithm.filter_groups.prefilter.enable=true",
                                  "algorithm.filter_groups.prefilter.min_constant_visits=1",
                                  "algorithm.filter_groups.prefilter.readmit_prob=0.0",
                                  "algorithm.filter_groups.prefilter.probe_responses=1", "trainer.total_epochs=3",
                                  "algorithm.filter_groups.max_num_gen_batches=0"))
    even = {i for i, item in enumerate(trainer.train_data) if item.extra_info["row_index"] % 2 == 0}
    probed = 0.0
    for _ in range(12):
        batch, metrics = trainer.producer.produce(trainer.global_step)
        probed += metrics["train/probed_prompts"]
        assert not even & set(batch.prompt_index.tolist())
        groups, counts = torch.unique_consecutive(batch.group_ids, return_counts=True)  # whole, contiguous groups
        assert set(counts.tolist()) == {4} and groups.numel() == len(set(groups.tolist()))
    assert probed > 0
    state = trainer.producer.sampling_state
    visited_even = even & set(state.constant_streak)
    assert all(state.constant_streak[i] >= 1 and state.constant_value[i] == 1.0 for i in visited_even)


@pytest.mark.parametrize("probing", [(), ("algorithm.filter_groups.prefilter.probe_responses=1",
                                              "algorithm.filter_groups.prefilter.min_constant_visits=1")])
def test_resume_is_exact_with_every_switch_on(make_config, tmp_path, half_constant, addition_files, probing):
    if probing:  # 16 prompts, so they recur within the 4 steps and the prefilter probes some before the resume
        subset = tmp_path / "train16.jsonl"
        subset.write_text("".join(addition_files[0].read_text().splitlines(keepends=True)[:16]))
        probing = (*probing, f"data.train_files=[{subset}]")
    switches = (f"custom_reward_function.path={half_constant}", "data.gen_batch_size=16", *probing,
                "algorithm.filter_groups.keep_surplus=true", "algorithm.filter_groups.adaptive_gen_batch_size=true",
                "algorithm.filter_groups.prefilter.enable=true", "algorithm.filter_groups.prefilter.readmit_prob=0.5",
                "algorithm.filter_groups.max_num_gen_batches=0", "trainer.total_training_steps=4",
                "trainer.save_freq=2", "trainer.max_actor_ckpt_to_keep=0")
    straight = Trainer(make_config(*switches))
    straight.fit()
    resumed = Trainer(make_config(*switches, "trainer.resume_mode=resume_path",
                                  f"trainer.resume_from_path={tmp_path / 'run' / 'checkpoints' / 'global_step_2'}",
                                  f"trainer.default_local_dir={tmp_path / 'resumed'}"))
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
