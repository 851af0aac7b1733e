"""Verifying math answers in reward worker processes (:mod:`gspo.rewards.workers`), with deadlines per answer.

Each answer has two deadlines. The soft one, ``reward_model.math_timeout_s`` CPU seconds of the worker, is checked
by the worker itself (:mod:`.verifier`; cheap, and a busy machine does not turn a slow-but-fine answer into a
timeout). The hard one, in wall seconds, is the pool's: a worker stuck where the soft deadline's signal cannot reach
it (sympy evaluating ``10^{10^{10}}`` in C) is killed and replaced, and the answer is a timeout.

The fork server imports math-verify and warms up sympy once (:mod:`.warmup`, a few seconds), so every worker, and
every replacement of a killed one, starts warm.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass

from gspo.rewards.math import verifier
from gspo.rewards.workers import DIED, OK, TIMEOUT, Outcome, WorkerPool, WorkerStartError, default_num_workers

DEFAULT_TIMEOUT_S = 2.0  # CPU seconds per answer; the default of reward_model.math_timeout_s
HARD_TIMEOUT_MARGIN_S = 3.0


@dataclass(frozen=True)
class Verdict:
    """The outcome of one (gold, pred) comparison: ``status`` is "ok" (``equal`` is the verdict), "timeout" or
    "error" (``message`` says why; ``equal`` is False)."""

    status: str
    equal: bool = False
    message: str = ""


class VerifierPool:
    """``num_workers`` verifier processes; :meth:`verify` compares many (gold, pred) pairs in parallel.

    Args:
        num_workers: processes (>= 1).
        timeout_s: soft deadline per answer, CPU seconds of the worker (it stops itself; cheap).
        hard_timeout_s: wall seconds on one answer after which the parent kills the worker (for work stuck where
            the soft deadline's signal cannot reach it, or a machine so loaded that CPU time crawls); default
            ``timeout_s + 3`` (an ordinary answer takes a fraction of a CPU second, so even a machine loaded
            several times over finishes it within 3 s of wall time).
        queue_depth: tasks sent ahead to each worker, so it never waits for the parent to be scheduled.
    """

    def __init__(self, num_workers: int, timeout_s: float, hard_timeout_s: float | None = None,
                 queue_depth: int = 4) -> None:
        if num_workers < 1 or not timeout_s > 0 or queue_depth < 1:
            raise ValueError(f"need num_workers >= 1, timeout_s > 0, queue_depth >= 1; got {num_workers}, "
                             f"{timeout_s}, {queue_depth}")
        self.num_workers, self.timeout_s = num_workers, float(timeout_s)
        self.hard_timeout_s = float(hard_timeout_s) if hard_timeout_s is not None else \
            self.timeout_s + HARD_TIMEOUT_MARGIN_S
        self._pool = WorkerPool(num_workers, self.hard_timeout_s, verifier.make_verifier, (self.timeout_s,),
                                name="gspo-math-verifier", queue_depth=queue_depth,
                                preload=["math_verify", verifier.__name__, "gspo.rewards.math.warmup"])

    @property
    def num_killed(self) -> int:
        """Workers killed at the hard deadline, over the pool's life."""
        return self._pool.num_killed

    @property
    def processes(self) -> list:
        return self._pool.processes

    @property
    def owner_pid(self) -> int:
        return self._pool.owner_pid

    def verify(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        """One :class:`Verdict` per ``(gold, pred)`` pair, in order. Never blocks past the hard deadlines."""
        try:
            outcomes = self._pool.run(pairs)
        except WorkerStartError as exc:
            raise RuntimeError(f"{exc}; check that `python -c 'import math_verify'` works") from exc
        return [self._verdict(outcome) for outcome in outcomes]

    def _verdict(self, outcome: Outcome) -> Verdict:
        if outcome.status == OK:
            return Verdict(OK, bool(outcome.value))
        if outcome.status == TIMEOUT:
            return Verdict(TIMEOUT, message=outcome.value or "")
        if outcome.status == DIED:
            return Verdict("error", message=f"verifier worker died (exit {outcome.value})")
        return Verdict("error", message=str(outcome.value or ""))

    def close(self) -> None:
        self._pool.close()


_shared: VerifierPool | None = None
_shared_sizes: tuple[int, float] = (0, DEFAULT_TIMEOUT_S)  # (workers, 0 = default_num_workers(); CPU s per answer)
_shared_lock = threading.Lock()


def configure_shared_pool(num_workers: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Sizes of this process's pool (``reward_model.math_workers`` / ``reward_model.math_timeout_s``): verifier
    processes (0 = :func:`gspo.rewards.workers.default_num_workers`) and CPU seconds per answer. A pool already
    running with other sizes is closed; the next verification starts one with these."""
    global _shared, _shared_sizes
    if num_workers < 0 or not timeout_s > 0:
        raise ValueError(f"need num_workers >= 0 and timeout_s > 0; got {num_workers}, {timeout_s}")
    with _shared_lock:
        _shared_sizes = (num_workers, float(timeout_s))
        if _shared is not None and (_shared.num_workers, _shared.timeout_s) != _resolved(_shared_sizes):
            _shared.close()
            _shared = None


def _resolved(sizes: tuple[int, float]) -> tuple[int, float]:
    return sizes[0] or default_num_workers(), sizes[1]


def shared_pool() -> VerifierPool:
    """This process's pool, started on first use (sizes from :func:`configure_shared_pool`) and closed at exit. A
    forked child gets its own."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.owner_pid != os.getpid():
            _shared = VerifierPool(*_resolved(_shared_sizes))
            atexit.register(_shared.close)
        return _shared


def set_shared_pool(pool: VerifierPool | None) -> VerifierPool | None:
    """Replace this process's pool (e.g. other sizes, or None to start a default one on next use); returns the old."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, pool
        return old
