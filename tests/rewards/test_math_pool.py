"""The verifier pool: per-answer deadlines that hold off the main thread, stuck and dead workers replaced, order kept.

Pathological answers: deeply nested parentheses take math-verify's parser ~10 CPU-s (pure Python: the soft
deadline, in CPU seconds, stops it); a hard deadline shorter than the soft one makes the parent kill the worker
instead (the path taken when work is stuck in C code and never sees the signal).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from gspo.rewards import RewardError, RewardManager
from gspo.rewards.math import VerifierPool, configure_shared_pool, set_shared_pool, shared_pool
from gspo.rewards.workers import default_num_workers

SLOW = "(" * 40 + "1" + ")" * 40  # ~10 s to parse on an idle core
HUGE = "9^{9^{9^{9}}}"


@pytest.fixture(scope="module")
def pool():
    pool = VerifierPool(2, timeout_s=1.0, hard_timeout_s=30.0)
    yield pool
    pool.close()


def test_verdicts_in_order(pool):
    pairs = [(r"\frac12", "0.5"), ("3", "4"), ("x=3", "3"), ("[1,2)", "[1, 2)"), (r"\{1,2\}", r"\{2,1\}")] * 4
    assert [v.equal for v in pool.verify(pairs)] == [True, False, True, True, True] * 4
    assert {v.status for v in pool.verify(pairs)} == {"ok"}
    assert pool.verify([]) == []


def test_soft_deadline_stops_pathological_answers_and_the_rest_still_scores(pool):
    killed = pool.num_killed
    start = time.monotonic()
    verdicts = pool.verify([("1", SLOW), ("1", HUGE), ("2", "2.0"), ("1", SLOW), (r"\frac{1}{2}", "1/2")])
    assert [v.status for v in verdicts] == ["timeout", "timeout", "ok", "timeout", "ok"]
    assert [v.equal for v in verdicts] == [False, False, True, False, True]
    assert time.monotonic() - start < 60  # three timeouts of 1 CPU-s over two workers, never 3 x 10 s of parsing
    assert pool.num_killed == killed  # the workers stopped themselves


def test_hard_deadline_kills_and_replaces_a_stuck_worker():
    pool = VerifierPool(1, timeout_s=60.0, hard_timeout_s=1.0)
    try:
        verdicts = pool.verify([("1", SLOW), ("2", "2"), ("3", r"\frac{6}{2}")])
        assert [v.status for v in verdicts] == ["timeout", "ok", "ok"]
        assert [v.equal for v in verdicts] == [False, True, True]  # the queued tasks went to the new worker
        assert [v.message for v in verdicts] == ["killed after 1 s", "", ""]
        assert pool.num_killed == 1
    finally:
        pool.close()


def test_a_worker_killed_from_outside_is_replaced(pool):
    pool.verify([("1", "1")])
    victim = pool.processes[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    assert [v.equal for v in pool.verify([(str(i), f"{i}.0") for i in range(8)])] == [True] * 8
    assert all(process.is_alive() for process in pool.processes) and victim not in pool.processes


def test_works_off_the_main_thread(pool):
    """math-verify's own signal.alarm timeout raises in a thread; ours runs in the workers' main threads."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(v=pool.verify([("1", SLOW), ("1", "1.0")])))
    thread.start()
    thread.join(30)
    assert [v.status for v in out["v"]] == ["timeout", "ok"]


def test_timeouts_are_reward_errors_under_on_error(pool):
    old = set_shared_pool(pool)
    try:
        responses = [rf"\boxed{{{SLOW}}}", r"\boxed{1}"]
        scored = RewardManager(on_error="zero").score(responses, None, ["1", "1"], ["math"] * 2, [None] * 2)
        assert scored.num_errors == 1 and scored.acc.tolist() == [0.0, 1.0]
        with pytest.raises(RewardError, match="per-answer deadline.*on_error=zero.*reward_model.math_timeout_s"):
            RewardManager().score(responses, None, ["1", "1"], ["math"] * 2, [None] * 2)
    finally:
        set_shared_pool(old)


def test_sizes_from_the_config_and_a_share_of_the_cores(monkeypatch):
    old = set_shared_pool(None)
    try:
        configure_shared_pool(1, 2.5)
        pool = shared_pool()
        assert (pool.num_workers, pool.timeout_s, pool.hard_timeout_s) == (1, 2.5, 5.5)
        assert [v.equal for v in pool.verify([("x+1", "1+x")])] == [True] and len(pool.processes) == 1
        configure_shared_pool(1, 2.5)
        assert shared_pool() is pool  # same sizes: the running pool stays
        configure_shared_pool(0, 2.0)
        assert shared_pool() is not pool and not pool.processes  # other sizes: closed, a new one on next use
        assert shared_pool().num_workers == default_num_workers()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
        assert default_num_workers() == 1  # a share of the cores per local rank, at least one
        with pytest.raises(ValueError, match="num_workers >= 0"):
            configure_shared_pool(-1, 2.0)
    finally:
        shared_pool().close()
        configure_shared_pool()
        set_shared_pool(old)


def test_bad_pool_arguments():
    with pytest.raises(ValueError, match="num_workers"):
        VerifierPool(0, timeout_s=1.0)
