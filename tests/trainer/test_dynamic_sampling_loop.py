"""The generate -> score -> filter -> accumulate loop, without a model: scripted rewards per prompt index."""

from __future__ import annotations

import itertools

import pytest
import torch

from gspo.config import FilterGroupsConfig as _FilterGroupsConfig
from gspo.config import PrefilterConfig
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.dynamic_sampling import DynamicSamplingError, GenerationStats, collect_train_batch
from gspo.trainer.sampling_state import DynamicSamplingState

N = 2  # responses per prompt
EOS = 9
MAX_DRAWS = 1000  # a step that draws more prompts than this would draw for ever


def FilterGroupsConfig(**values) -> _FilterGroupsConfig:  # noqa: N802 (stands in for the class)
    """The addition preset's dynamic sampling (on, at most 10 generation batches; verl's defaults are off and
    unlimited) with ``values`` on top."""
    return _FilterGroupsConfig(**{"enable": True, "max_num_gen_batches": 10, **values})


class ScriptedRollout:
    """Prompts with an even index always score 1 (all-equal groups, dropped); odd ones score [0, 1] (kept)."""

    def __init__(self, num_prompts: int, step: int = 0):
        self.order = itertools.cycle(range(num_prompts))
        self.step = step
        self.next_group = 0
        self.generated: list[list[int]] = []  # prompt indices of each generation batch

    def draw(self, how_many: int) -> list[int]:
        self.num_drawn = getattr(self, "num_drawn", 0) + how_many
        if self.num_drawn > MAX_DRAWS:
            raise RuntimeError(f"drew more than {MAX_DRAWS} prompts")
        return [next(self.order) for _ in range(how_many)]

    def generate_and_score(self, indices: list[int]) -> tuple[RolloutBatch, dict[str, float]]:
        self.generated.append(list(indices))
        rows = len(indices) * N
        groups = torch.arange(self.next_group, self.next_group + len(indices)).repeat_interleave(N)
        self.next_group += len(indices)
        reward = torch.tensor([[1.0, 1.0] if i % 2 == 0 else [0.0, 1.0] for i in indices]).flatten()
        batch = RolloutBatch(prompt_ids=torch.ones(rows, 1, dtype=torch.long),
                             prompt_mask=torch.ones(rows, 1, dtype=torch.long),
                             response_ids=torch.full((rows, 2), EOS), response_mask=torch.ones(rows, 2),
                             group_ids=groups, prompt_index=torch.tensor(indices).repeat_interleave(N),
                             generation_step=torch.full((rows,), self.step), seq_reward=reward,
                             seq_final_reward=reward, acc=reward)
        return batch, {"reward/errors": 0.0}


def _collect(num_groups: int, cfg: FilterGroupsConfig, state: DynamicSamplingState, rollout: ScriptedRollout):
    return collect_train_batch(num_groups, cfg, state, step=rollout.step, draw_prompts=rollout.draw,
                               generate_and_score=rollout.generate_and_score, pad_token_id=0,
                               stats=GenerationStats(eos_token_ids=[EOS], max_response_length=2))


def _state(cfg: FilterGroupsConfig, gen_batch: int, num_prompts: int = 8) -> DynamicSamplingState:
    return DynamicSamplingState(cfg, default_gen_batch_size=gen_batch, num_prompts=num_prompts)


def test_keeps_only_varying_groups_across_generation_batches():
    cfg = FilterGroupsConfig(metric="acc")
    rollout = ScriptedRollout(num_prompts=8)
    batch, metrics = _collect(3, cfg, _state(cfg, gen_batch=4), rollout)
    # 4 prompts per batch, 2 of them odd: batch 1 keeps prompts 1, 3; batch 2 (4..7) keeps 5 (and 7, dropped).
    assert rollout.generated == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batch.prompt_index.tolist() == [1, 1, 3, 3, 5, 5]
    assert metrics["train/num_gen_batches"] == 2.0 and metrics["train/kept_prompts"] == 4.0
    assert metrics["train/filtered_prompts_ratio"] == 0.5
    assert metrics["response_length/clip_ratio"] == 0.0  # every response ends with EOS


def test_cap_reached_raises_naming_the_remedies():
    cfg = FilterGroupsConfig(metric="acc", max_num_gen_batches=2)
    rollout = ScriptedRollout(num_prompts=2)  # prompt 0 is always dropped, prompt 1 kept: 1 group per batch
    with pytest.raises(DynamicSamplingError, match="kept 2 of 4 prompt groups in 2 generation batches"):
        _collect(3, cfg, _state(cfg, gen_batch=2, num_prompts=2), rollout)
    assert len(rollout.generated) == 2


def test_surplus_is_carried_to_the_next_step_and_used_first():
    cfg = FilterGroupsConfig(metric="acc", keep_surplus=True)
    state = _state(cfg, gen_batch=8)
    rollout = ScriptedRollout(num_prompts=8)
    first, _ = _collect(2, cfg, state, rollout)  # keeps 1, 3, 5, 7: trains on 1, 3; 5, 7 wait
    assert first.prompt_index.tolist() == [1, 1, 3, 3]
    rollout.step = 1
    second, metrics = _collect(2, cfg, state, rollout)
    assert second.prompt_index.tolist() == [5, 5, 7, 7]
    assert len(rollout.generated) == 1  # filled from surplus alone
    assert metrics["train/surplus_groups_used"] == 2.0 and metrics["train/surplus_age_mean"] == 1.0
    assert "train/filtered_prompts_ratio" not in metrics  # nothing generated: no ratio to report


def test_without_keep_surplus_leftover_groups_are_dropped():
    cfg = FilterGroupsConfig(metric="acc")
    state = _state(cfg, gen_batch=8)
    _collect(2, cfg, state, ScriptedRollout(num_prompts=8))
    assert state.surplus is None


def test_prefilter_skips_prompts_that_were_always_all_equal():
    cfg = FilterGroupsConfig(metric="acc", prefilter=PrefilterConfig(enable=True, min_constant_visits=1,
                                                                     readmit_prob=0.0))
    state = _state(cfg, gen_batch=4, num_prompts=4)
    rollout = ScriptedRollout(num_prompts=4)
    _collect(2, cfg, state, rollout)  # prompts 0 and 2 are all-equal once: skipped from now on
    _, metrics = _collect(2, cfg, state, rollout)
    assert rollout.generated == [[0, 1, 2, 3], [1, 3]]
    assert metrics["train/prefiltered_prompts"] == 2.0 and metrics["train/filtered_prompts_ratio"] == 0.0


def test_prefilter_replaces_skipped_prompts_by_further_draws():
    cfg = FilterGroupsConfig(metric="acc", prefilter=PrefilterConfig(enable=True, min_constant_visits=1,
                                                                     readmit_prob=0.0))
    state = _state(cfg, gen_batch=4, num_prompts=8)
    rollout = ScriptedRollout(num_prompts=8)
    _collect(4, cfg, state, rollout)  # [0..3] then [4..7]: the even prompts are all-equal once
    _, metrics = _collect(2, cfg, state, rollout)
    # Draws 0-3 admit 1, 3; then 4, 5 -> 5; 6 -> none; 7 -> 7: one full batch of 4 informative prompts.
    assert rollout.generated[-1] == [1, 3, 5, 7]
    assert metrics["train/num_gen_batches"] == 1.0 and metrics["train/prefiltered_prompts"] == 4.0


@pytest.mark.parametrize(("decay", "expected"), [(False, [0.5, 0.5, 0.5]), (True, [0.5, 0.25, 0.125])])
def test_readmit_probability_backs_off_with_the_streak_when_decaying(decay, expected):
    # GRESO's back-off: readmit_prob ** (streak - min_constant_visits + 1) for streaks 2, 3, 4 with min 2.
    cfg = FilterGroupsConfig(prefilter=PrefilterConfig(enable=True, min_constant_visits=2, readmit_prob=0.5,
                                                       readmit_decay=decay))
    state = _state(cfg, gen_batch=4)
    assert [state.readmit_probability(streak) for streak in (2, 3, 4)] == expected


def test_failed_prompts_get_their_own_constant_readmission_rate():
    # Solved prompts back off (0.1, 0.01), failed ones come back at 0.3 whatever the streak (GRESO's hard rate).
    cfg = FilterGroupsConfig(prefilter=PrefilterConfig(enable=True, min_constant_visits=1, readmit_prob=0.1,
                                                       readmit_decay=True, failed_readmit_prob=0.3))
    state = _state(cfg, gen_batch=4)
    assert [state.readmit_probability(streak, failed=False) for streak in (1, 2)] == pytest.approx([0.1, 0.01])
    assert [state.readmit_probability(streak, failed=True) for streak in (1, 2, 5)] == [0.3, 0.3, 0.3]


def test_observe_records_which_all_equal_prompts_failed():
    cfg = FilterGroupsConfig(metric="acc", prefilter=PrefilterConfig(enable=True, failed_readmit_prob=0.3))
    state = _state(cfg, gen_batch=4)
    batch, _ = ScriptedRollout(num_prompts=8).generate_and_score([0, 1, 2, 3])
    state.observe(batch, "acc")  # even prompts all-right (acc 1, 1), odd ones informative
    assert state.last_failed == set() and state.constant_streak == {0: 1, 1: 0, 2: 1, 3: 0}
    batch.acc = batch.seq_reward = torch.zeros_like(batch.acc)  # now every group all-wrong
    state.observe(batch, "acc")
    assert state.last_failed == {0, 1, 2, 3} and state.constant_streak == {0: 2, 1: 1, 2: 2, 3: 1}
    restored = _state(cfg, gen_batch=4)
    restored.load_state_dict(*state.state_dict())
    assert restored.last_failed == state.last_failed


def test_disabled_filter_keeps_every_group():
    cfg = FilterGroupsConfig(enable=False)
    batch, metrics = _collect(4, cfg, _state(cfg, gen_batch=4), ScriptedRollout(num_prompts=8))
    assert batch.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert metrics["train/num_gen_batches"] == 1.0


class CyclingRollout(ScriptedRollout):
    """Each prompt's responses score the next values of its script, cycling: a probe and its completion see
    different values, as two draws of one policy would."""

    def __init__(self, scripts: dict[int, list[float]]):
        super().__init__(num_prompts=len(scripts))
        self.scripts = scripts
        self.cursor = dict.fromkeys(scripts, 0)
        self.calls: list[tuple[list[int], int]] = []  # (prompt indices, responses per prompt) of each call

    def generate_and_score(self, indices: list[int], num_responses: int | None = None):
        n = num_responses or N
        self.calls.append((list(indices), n))
        scores = []
        for i in indices:
            script = self.scripts[i]
            scores += [script[(self.cursor[i] + j) % len(script)] for j in range(n)]
            self.cursor[i] += n
        rows = len(indices) * n
        groups = torch.arange(self.next_group, self.next_group + len(indices)).repeat_interleave(n)
        self.next_group += len(indices)
        reward = torch.tensor(scores)
        return RolloutBatch(prompt_ids=torch.ones(rows, 1, dtype=torch.long),
                            prompt_mask=torch.ones(rows, 1, dtype=torch.long),
                            response_ids=torch.full((rows, 2), EOS), response_mask=torch.ones(rows, 2),
                            group_ids=groups, prompt_index=torch.tensor(indices).repeat_interleave(n),
                            generation_step=torch.full((rows,), self.step), seq_reward=reward,
                            seq_final_reward=reward, acc=reward), {"reward/errors": 0.0}


def _probing_state(cfg: FilterGroupsConfig) -> DynamicSamplingState:
    state = _state(cfg, gen_batch=4, num_prompts=4)
    state.constant_streak = {0: 1, 2: 1}  # prompt 0 was solved last time, prompt 2 failed
    state.constant_value = {0: 1.0, 2: 0.0}
    return state


PROBING = FilterGroupsConfig(metric="acc", prefilter=PrefilterConfig(enable=True, min_constant_visits=1,
                                                                     readmit_prob=0.0, probe_responses=1))


def test_probe_that_scores_unlike_the_last_group_is_completed_and_one_that_agrees_is_dropped():
    # Prompt 0 is still solved (its probe agrees: dropped); prompt 2 now answers right once (its probe differs
    # from the failed group: completed with one more response, which fails, so the group varies and is kept).
    rollout = CyclingRollout({0: [1.0], 1: [0.0, 1.0], 2: [1.0, 0.0], 3: [0.0, 1.0]})
    state = _probing_state(PROBING)
    batch, metrics = _collect(3, PROBING, state, rollout)
    assert rollout.calls == [([1, 3], 2), ([0, 2], 1), ([2], 1)]  # full groups, probes, completion
    assert batch.prompt_index.tolist() == [1, 1, 3, 3, 2, 2]
    assert batch.group_ids[4] == batch.group_ids[5]  # the probe and its completion form one group
    assert batch.acc[4:].tolist() == [1.0, 0.0]
    assert state.constant_streak == {0: 2, 1: 0, 2: 0, 3: 0} and state.constant_value == {0: 1.0}
    assert metrics["train/probed_prompts"] == 2.0 and metrics["train/probes_completed"] == 1.0
    assert metrics["train/prefiltered_prompts"] == 2.0
    assert metrics["train/filtered_prompts_ratio"] == 0.25  # 4 groups generated (2 probes), 3 kept
    assert metrics["train/generated_tokens"] == 14.0  # 7 responses of 2 tokens: 4 full, 2 probes, 1 completion


def test_completed_probe_that_turns_out_all_equal_is_dropped_and_counts_as_a_constant_visit():
    # Prompt 2 failed last time and is now solved every time: its probe differs, its completed group is all-equal.
    rollout = CyclingRollout({0: [1.0], 1: [0.0, 1.0], 2: [1.0], 3: [0.0, 1.0]})
    state = _probing_state(PROBING)
    batch, metrics = _collect(2, PROBING, state, rollout)
    assert batch.prompt_index.tolist() == [1, 1, 3, 3]
    assert state.constant_streak[2] == 2 and state.constant_value[2] == 1.0 and 2 not in state.last_failed
    assert metrics["train/probes_completed"] == 1.0


def test_a_probe_changed_when_it_scores_unlike_its_prompts_last_all_equal_group():
    rollout = CyclingRollout({0: [1.0], 1: [0.0, 1.0], 2: [1.0, 0.0], 3: [0.0, 1.0]})
    state = _probing_state(PROBING)  # last all-equal values: prompt 0 solved (1.0), prompt 2 failed (0.0)
    probes, _ = rollout.generate_and_score([0, 2], 1)  # both probes score 1
    assert state.changed_probe_rows(probes, "acc").tolist() == [False, True]


def test_recorded_values_survive_a_checkpoint():
    state = _probing_state(PROBING)
    state.last_failed, state.responses_per_prompt = {2}, 2
    restored = _state(PROBING, gen_batch=4, num_prompts=4)
    restored.load_state_dict(*state.state_dict())
    assert (restored.constant_streak, restored.constant_value) == ({0: 1, 2: 1}, {0: 1.0, 2: 0.0})
    assert restored.last_failed == {2} and restored.responses_per_prompt == 2


ALWAYS_SOLVED = {0: [1.0], 1: [1.0], 2: [1.0], 3: [1.0]}


@pytest.mark.parametrize("cap", [10, 0])
def test_a_prefilter_that_can_readmit_nothing_ends_the_step_at_once(cap):
    # Every prompt is all-equal on its first visit; readmit_prob=0 then skips every draw for ever, so the second
    # generation batch (one pass over the data, all skipped) ends the step, whatever the cap.
    cfg = FilterGroupsConfig(metric="acc", max_num_gen_batches=cap,
                             prefilter=PrefilterConfig(enable=True, min_constant_visits=1, readmit_prob=0.0))
    rollout = CyclingRollout(ALWAYS_SOLVED)
    with pytest.raises(DynamicSamplingError) as error:
        _collect(1, cfg, _state(cfg, gen_batch=4, num_prompts=4), rollout)
    assert str(error.value).startswith(
        "dynamic sampling kept 0 of 4 prompt groups in 2 generation batches, fewer than data.train_batch_size=1: "
        "the prefilter skips every prompt, and none can come back")
    assert "algorithm.filter_groups.prefilter.readmit_prob=0.0" in str(error.value)
    assert "\n" not in str(error.value) and rollout.calls == [([0, 1, 2, 3], 2)]


def test_generation_batches_whose_draws_were_all_skipped_count_toward_the_cap():
    cfg = FilterGroupsConfig(metric="acc", max_num_gen_batches=3,
                             prefilter=PrefilterConfig(enable=True, min_constant_visits=1, readmit_prob=1e-12))
    rollout = CyclingRollout(ALWAYS_SOLVED)
    with pytest.raises(DynamicSamplingError, match="kept 0 of 4 prompt groups in 3 generation batches") as error:
        _collect(1, cfg, _state(cfg, gen_batch=4, num_prompts=4), rollout)
    # One batch generated, then two passes over the 4 prompts skipped every draw.
    assert "The prefilter skipped 8 drawn prompts" in str(error.value) and len(rollout.calls) == 1


def test_when_every_draw_is_skipped_the_skipped_prompts_are_still_probed():
    rollout = CyclingRollout({0: [1.0], 1: [1.0], 2: [1.0, 0.0], 3: [1.0]})
    state = _state(PROBING, gen_batch=4, num_prompts=4)
    state.constant_streak, state.constant_value = dict.fromkeys(range(4), 1), {0: 1.0, 1: 1.0, 2: 0.0, 3: 1.0}
    state.responses_per_prompt = N
    batch, metrics = _collect(1, PROBING, state, rollout)
    # Only prompt 2's probe (1.0) is unlike its last group (0.0): completed with one response (0.0) and kept.
    assert rollout.calls == [([0, 1, 2, 3], 1), ([2], 1)]
    assert batch.prompt_index.tolist() == [2, 2] and batch.acc.tolist() == [1.0, 0.0]
    assert metrics["train/num_gen_batches"] == 1.0 and metrics["train/probes_completed"] == 1.0
