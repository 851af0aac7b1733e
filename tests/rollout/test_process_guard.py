"""gspo/rollout/process_guard.py: a rank's helper processes (vLLM's engine core beside a rollout pool) die with the
rank, however it dies; the watcher leaves by itself once they are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from gspo.rollout.process_guard import _alive, child_pids, descendants

# A "rank": starts a helper that itself starts a grandchild, guards the helper, prints the pids, then waits.
RANK = """
import subprocess, sys, time
from gspo.rollout.process_guard import guard
helper = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time, sys; "
    "time.sleep(float(sys.argv[1]))', sys.argv[1]]); "
    "time.sleep(float(sys.argv[1]))", sys.argv[1]])
time.sleep(0.5)
watcher = guard({helper.pid})
print(helper.pid, watcher.pid, flush=True)
time.sleep(60)
"""


def _start_rank(helper_seconds: float) -> tuple[subprocess.Popen, int, int]:
    rank = subprocess.Popen([sys.executable, "-c", RANK, str(helper_seconds)], stdout=subprocess.PIPE, text=True)
    helper, watcher = map(int, rank.stdout.readline().split())
    return rank, helper, watcher


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_killed_rank_takes_its_helpers_and_theirs_along():
    rank, helper, watcher = _start_rank(60)
    grandchildren = descendants(helper)
    assert helper in child_pids(rank.pid) and len(grandchildren) == 1
    os.kill(rank.pid, signal.SIGKILL)
    rank.wait()
    assert _gone(helper) and all(_gone(pid) for pid in grandchildren) and _gone(watcher)


def test_the_watcher_leaves_once_the_helpers_are_gone():
    rank, helper, watcher = _start_rank(0.5)
    try:
        assert _gone(watcher) and _alive(rank.pid)
    finally:
        rank.kill()
        rank.wait()
