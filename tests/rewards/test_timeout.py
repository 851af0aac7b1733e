"""reward_model.timeout_s: a custom reward runs in reward worker processes started from a fork server (never an
os.fork of the trainer); a hung, crashing or dying call is killed and named. Under on_error=raise the first failure
of a batch stops it at once; under zero every call is scored, failures as 0, and the next call gets fresh workers."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pytest

from gspo.config import FilterGroupsConfig
from gspo.rewards import RewardError, RewardManager, load_custom_reward
from gspo.rewards.timeout import TimedReward
from gspo.rewards.workers import interruptible_waits
from gspo.trainer.dynamic_sampling import GenerationStats

REWARDS = textwrap.dedent("""
    import os
    import time


    def hangs_on_loop(response, ground_truth, extra_info):
        if response == "loop":
            while True:  # pure Python: no signal-based timeout could stop C code, a killed process can
                pass
        if response == "sleep":
            time.sleep(3600)
        if response == "boom":
            raise KeyError("no answer")
        if response == "exit":
            os._exit(3)
        return float(response == ground_truth)


    def sleeps(response, ground_truth, extra_info):
        time.sleep(10)
        return 1.0


    def worker_pid(response, ground_truth, extra_info):
        return {"score": 0.0, "pid": os.getpid()}
""")


@pytest.fixture(scope="module")
def rewards_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "rewards.py"
    path.write_text(REWARDS)
    return path


def _score(manager: RewardManager, responses: list[str]):
    return manager.score(responses, None, ["a"] * len(responses), ["x"] * len(responses), [{}] * len(responses))


def test_hanging_call_with_on_error_raise_names_function_file_sample_and_limit(rewards_file):
    manager = RewardManager(load_custom_reward(rewards_file, "hangs_on_loop"), timeout_s=0.3)
    start = time.perf_counter()
    with pytest.raises(RewardError) as info:
        _score(manager, ["a", "b", "loop"])
    assert time.perf_counter() - start < 30  # the first call starts the fork server (imports torch)
    message = str(info.value)
    assert f"reward function 'hangs_on_loop' ({rewards_file})" in message and "sample 2" in message
    assert "reward_model.timeout_s=0.3 s" in message and "response: 'loop'" in message


def test_the_first_timeout_of_a_large_batch_stops_it_at_once(rewards_file):
    # 256 calls of 10 s each: waiting out every call's own limit one after another took 256 x 1 s
    manager = RewardManager(load_custom_reward(rewards_file, "sleeps"), timeout_s=1)
    _score(RewardManager(load_custom_reward(rewards_file, "hangs_on_loop"), timeout_s=5), ["a"])  # fork server up
    start = time.perf_counter()
    with pytest.raises(RewardError, match=r"reward function 'sleeps' \(.*rewards\.py\) took longer than "
                                          r"reward_model\.timeout_s=1 s and was killed \(sample \d+"):
        _score(manager, ["a"] * 256)
    assert time.perf_counter() - start < 8


def test_hanging_calls_with_on_error_zero_score_0_count_and_recover(rewards_file):
    manager = RewardManager(load_custom_reward(rewards_file, "hangs_on_loop"), timeout_s=0.3, on_error="zero")
    batch = _score(manager, ["a", "sleep", "a", "loop", "boom", "exit", "b"])
    assert batch.seq_reward.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert batch.num_errors == 4 and batch.metrics["reward/errors"] == 4.0
    assert _score(manager, ["a"]).seq_reward.tolist() == [1.0]  # fresh workers after the kills


def test_a_crashing_reward_is_named_with_its_own_exception(rewards_file):
    manager = RewardManager(load_custom_reward(rewards_file, "hangs_on_loop"), timeout_s=5)
    with pytest.raises(RewardError, match=rf"reward function 'hangs_on_loop' \({rewards_file}\) raised KeyError: "
                                          r"'no answer' \(sample 1, ground_truth='a'\); response: 'boom'"):
        _score(manager, ["a", "boom"])
    with pytest.raises(RewardError, match=r"'hangs_on_loop' .* failed: the reward worker process died during the "
                                          r"call \(exit code 3\) \(sample 0"):
        _score(manager, ["exit"])


def test_calls_run_in_forkserver_workers_never_in_a_fork_of_the_trainer(rewards_file, monkeypatch):
    def no_fork():
        raise AssertionError("os.fork() called in the trainer's process")

    reward = TimedReward(load_custom_reward(rewards_file, "worker_pid"), timeout_s=30, num_workers=2)
    try:
        monkeypatch.setattr(os, "fork", no_fork)
        pids = {value["pid"] for value in reward.score_batch(["a"] * 16, ["a"] * 16, [{}] * 16)}
        assert reward.pool.start_method == "forkserver"
        assert os.getpid() not in pids and pids <= {p.pid for p in reward.pool.processes}
    finally:
        reward.close()


def test_a_function_that_cannot_reach_a_worker_is_refused_with_what_to_do():
    with pytest.raises(RewardError, match="cannot be sent to a reward worker process.*custom_reward_function.path"):
        TimedReward(lambda response, ground_truth, extra_info: 1.0, timeout_s=5)


def test_workers_and_their_fork_server_survive_stop_signals_so_the_trainer_can_finish_its_step(rewards_file):
    # torchrun's SIGTERM (and Ctrl-C) reach the whole process group; the trainer decides how to stop and may still
    # need its rewards meanwhile. A worker dies with its parent, the fork server: that must survive them too.
    from multiprocessing import forkserver

    reward = TimedReward(load_custom_reward(rewards_file, "hangs_on_loop"), timeout_s=30, num_workers=1)
    try:
        assert reward("a", "a", {}) == 1.0
        (worker,) = reward.pool.processes
        for pid in (worker.pid, forkserver._forkserver._forkserver_pid):
            for stop in (signal.SIGTERM, signal.SIGINT):
                os.kill(pid, stop)
        time.sleep(0.2)
        assert reward("a", "b", {}) == 0.0 and reward.pool.processes == [worker]  # same worker, still answering
    finally:
        reward.close()


def test_dynamic_sampling_cap_message_names_reward_errors():
    stats = GenerationStats(eos_token_ids=[0], max_response_length=4, num_groups=8, _num_sequences=32,
                            _num_reward_errors=32)
    message = str(stats.cap_error(needed=4, cfg=FilterGroupsConfig()))
    assert "32 of 32 responses had reward errors" in message and "reward_model.on_error=zero" in message
    clean = GenerationStats(eos_token_ids=[0], max_response_length=4)
    assert "reward errors" not in str(clean.cap_error(4, FilterGroupsConfig()))


def test_a_stop_check_ends_a_reward_wait_and_kills_the_workers_on_it(rewards_file):
    class Stop(BaseException):
        pass

    def stop_after_half_a_second(wait_started: float) -> None:
        if time.monotonic() - wait_started > 0.5:
            raise Stop

    reward = TimedReward(load_custom_reward(rewards_file, "sleeps"), timeout_s=600, num_workers=2)
    try:
        start = time.perf_counter()
        with interruptible_waits(stop_after_half_a_second), pytest.raises(Stop):
            reward.score_batch(["a"] * 8, ["a"] * 8, [{}] * 8)
        assert time.perf_counter() - start < 2.5  # polled every 0.25 s, never the 600 s limit
        assert reward.pool.processes == []  # killed: their late results must not reach the next call
        assert reward.score_batch([], [], []) == []
    finally:
        reward.close()
