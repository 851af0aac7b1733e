"""reward_model.timeout_s: a custom reward that hangs is killed after the limit; raise names function, sample and
limit; zero scores 0, counts it, and the next call gets a fresh worker."""

from __future__ import annotations

import time

import pytest

from gspo.config import FilterGroupsConfig
from gspo.rewards import RewardError, RewardManager
from gspo.trainer.dynamic_sampling import GenerationStats


def hangs_on_loop(response, ground_truth, extra_info):
    if response == "loop":
        while True:  # pure Python: no signal-based timeout could stop C code, a killed process can
            pass
    if response == "sleep":
        time.sleep(3600)
    if response == "boom":
        raise KeyError("no answer")
    return float(response == ground_truth)


def _score(manager: RewardManager, responses: list[str]):
    return manager.score(responses, None, ["a"] * len(responses), ["x"] * len(responses), [{}] * len(responses))


def test_hanging_call_with_on_error_raise_names_function_sample_and_limit():
    manager = RewardManager(hangs_on_loop, timeout_s=0.3)
    start = time.perf_counter()
    with pytest.raises(RewardError) as info:
        _score(manager, ["a", "b", "loop"])
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "reward function 'hangs_on_loop'" in message and "sample 2" in message
    assert "reward_model.timeout_s=0.3 s" in message and "response: 'loop'" in message


def test_hanging_calls_with_on_error_zero_score_0_count_and_recover():
    manager = RewardManager(hangs_on_loop, timeout_s=0.3, on_error="zero")
    batch = _score(manager, ["a", "sleep", "a", "loop", "boom", "b"])
    assert batch.seq_reward.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert batch.num_errors == 3 and batch.metrics["reward/errors"] == 3.0
    assert _score(manager, ["a"]).seq_reward.tolist() == [1.0]  # a fresh worker after the kills


def test_worker_returns_the_functions_own_exception():
    with pytest.raises(RewardError, match="raised KeyError: 'no answer'"):
        _score(RewardManager(hangs_on_loop, timeout_s=5), ["boom"])


def test_dynamic_sampling_cap_message_names_reward_errors():
    stats = GenerationStats(eos_token_ids=[0], max_response_length=4, num_groups=8, _num_sequences=32,
                            _num_reward_errors=32)
    message = str(stats.cap_error(needed=4, cfg=FilterGroupsConfig()))
    assert "32 of 32 responses had reward errors" in message and "reward_model.on_error=zero" in message
    clean = GenerationStats(eos_token_ids=[0], max_response_length=4)
    assert "reward errors" not in str(clean.cap_error(4, FilterGroupsConfig()))


def test_worker_survives_a_stop_signal_so_the_trainer_can_finish_its_step():
    # torchrun's SIGTERM (and Ctrl-C) reach the whole process group; the trainer stops gracefully after the step
    # and still needs the worker, which used to die of it ("the reward worker process died during the call").
    import os
    import signal

    from gspo.rewards.timeout import TimedReward

    reward = TimedReward(lambda response, ground_truth, extra_info: float(response == ground_truth), timeout_s=30)
    try:
        assert reward("7", "7", {}) == 1.0
        worker = reward._pid
        for stop in (signal.SIGTERM, signal.SIGINT):
            os.kill(worker, stop)
        time.sleep(0.2)
        assert reward("7", "8", {}) == 0.0 and reward._pid == worker  # same worker, still answering
    finally:
        reward.close()
