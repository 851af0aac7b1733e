"""A pool of verifier worker processes with a hard deadline per answer; stuck workers are killed and replaced.

Why not ``multiprocessing.Pool`` / ``ProcessPoolExecutor``: neither can stop one task. A verification stuck in C
code (sympy evaluating ``10^{10^{10}}``) holds its worker forever; verl's answer is to terminate the whole pool.
Here each worker has its own pipe and a short queue of tasks; results come back in order, so the parent knows
which task a worker is on and since when. A worker past ``hard_timeout_s`` (wall clock) on one task is SIGKILLed,
that task is a timeout, its queued tasks go back to the front of the line, and a fresh worker takes its place.

Workers start from a ``forkserver`` that has imported math-verify and warmed up sympy once (:mod:`.warmup`, a few
seconds), so a replacement is a fork (milliseconds) and starts warm, and the trainer's CUDA state is never forked.
Windows has no forkserver: ``spawn`` is used there. As with any spawn / forkserver multiprocessing, a script that
scores math rewards must guard its entry point with ``if __name__ == "__main__":`` (workers import ``__main__``).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from gspo.rewards.math import verifier
from gspo.rewards.math.verifier import ERROR, OK, READY, TIMEOUT

STARTUP_TIMEOUT_S = 120.0  # a worker that cannot import math-verify in this long will not (broken install)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one (gold, pred) comparison: ``status`` is "ok" (``equal`` is the verdict), "timeout" or
    "error" (``message`` says why; ``equal`` is False)."""

    status: str
    equal: bool = False
    message: str = ""


@dataclass
class _Worker:
    process: mp.Process
    conn: object
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    queue: deque = field(default_factory=deque)  # task indices sent, oldest (the one being worked on) first
    head_since: float = 0.0  # when the worker began the oldest queued task


def _context():
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Only the verifier is preloaded (not the default "__main__": re-importing a training script is no help).
        ctx.set_forkserver_preload(["math_verify", verifier.__name__, "gspo.rewards.math.warmup"])
        return ctx
    return mp.get_context("spawn")


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
        if num_workers < 1 or timeout_s <= 0 or queue_depth < 1:
            raise ValueError(f"need num_workers >= 1, timeout_s > 0, queue_depth >= 1; got {num_workers}, "
                             f"{timeout_s}, {queue_depth}")
        self.num_workers, self.timeout_s, self.queue_depth = num_workers, float(timeout_s), queue_depth
        self.hard_timeout_s = float(hard_timeout_s) if hard_timeout_s is not None else \
            self.timeout_s + 3.0
        self.num_killed = 0  # workers killed at the hard deadline, over the pool's life
        self._ctx = _context()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._workers = [self._start() for _ in range(num_workers)]

    def _start(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=verifier.worker_main, args=(child_conn, self.timeout_s), daemon=True,
                                    name="gspo-math-verifier")
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _replace(self, i: int) -> None:
        old = self._workers[i]
        if old.process.is_alive():
            old.process.kill()
        old.process.join(timeout=5)
        old.conn.close()
        self._workers[i] = self._start()

    def verify(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        """One :class:`Verdict` per ``(gold, pred)`` pair, in order. Never blocks past the hard deadlines."""
        if os.getpid() != self._pid:
            raise RuntimeError("a VerifierPool cannot be used in a forked child; create one in the child")
        with self._lock:
            return self._run(pairs)

    def _run(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        results: list[Verdict | None] = [None] * len(pairs)
        pending = deque(range(len(pairs)))
        remaining = len(pairs)
        while remaining:
            now = time.monotonic()
            for i in range(len(self._workers)):
                self._feed(i, pairs, pending, now)
            waiting = [w for w in self._workers if w.queue or not w.ready]
            timeout = max(0.0, min(self._deadline(w) for w in waiting) - now)
            for conn in wait([w.conn for w in waiting], timeout=timeout):
                i = next(j for j, w in enumerate(self._workers) if w.conn is conn)
                remaining -= self._receive(i, results, pending)
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if (w.queue or not w.ready) and now >= self._deadline(w):
                    remaining -= self._expire(i, results, pending)
        return results  # type: ignore[return-value]

    def _feed(self, i: int, pairs: list[tuple[str, str]], pending: deque, now: float) -> None:
        """Top up worker i's queue; a worker found dead (killed from outside while idle) is replaced first."""
        w = self._workers[i]
        if w.ready and not w.queue and pending and not w.process.is_alive():
            self._replace(i)
            return
        while w.ready and pending and len(w.queue) < self.queue_depth:
            task = pending.popleft()
            try:
                w.conn.send((task, *pairs[task]))
            except OSError:  # died since the check above: its tasks go back, a fresh worker takes over
                pending.appendleft(task)
                pending.extendleft(reversed(w.queue))
                w.queue.clear()
                self._replace(i)
                return
            if not w.queue:
                w.head_since = now
            w.queue.append(task)

    def _deadline(self, w: _Worker) -> float:
        return w.head_since + self.hard_timeout_s if w.ready else w.started + STARTUP_TIMEOUT_S

    def _receive(self, i: int, results: list, pending: deque) -> int:
        """Read one message from worker i; returns the number of tasks it finished (0 or 1)."""
        w = self._workers[i]
        try:
            task, status, value = w.conn.recv()
        except (EOFError, OSError):  # the worker died (OOM killer, segfault in a C extension)
            code = w.process.exitcode
            return self._fail_head(i, results, pending, Verdict(ERROR, message=f"verifier worker died (exit {code})"))
        if status == READY:
            w.ready = True
            return 0
        w.queue.popleft()
        w.head_since = time.monotonic()
        results[task] = Verdict(OK, bool(value)) if status == OK else Verdict(status, message=value or "")
        return 1

    def _expire(self, i: int, results: list, pending: deque) -> int:
        w = self._workers[i]
        if not w.ready:
            raise RuntimeError(f"math verifier worker did not start within {STARTUP_TIMEOUT_S:.0f} s; check that "
                               f"`python -c 'import math_verify'` works")
        self.num_killed += 1
        return self._fail_head(i, results, pending, Verdict(TIMEOUT, message=f"killed after {self.hard_timeout_s} s"))

    def _fail_head(self, i: int, results: list, pending: deque, verdict: Verdict) -> int:
        """The task worker i was on gets ``verdict``; its queued tasks go back to the front; the worker is replaced."""
        w = self._workers[i]
        if not w.queue:  # died while starting
            if not w.ready:
                raise RuntimeError(f"math verifier worker exited while starting (exit {w.process.exitcode}); "
                                   f"check that `python -c 'import math_verify'` works")
            self._replace(i)
            return 0
        head = w.queue.popleft()
        results[head] = verdict
        pending.extendleft(reversed(w.queue))
        w.queue.clear()
        self._replace(i)
        return 1

    def close(self) -> None:
        for w in self._workers:
            w.conn.close()
            if w.process.is_alive():
                w.process.kill()
            w.process.join(timeout=5)
        self._workers = []


_shared: VerifierPool | None = None
_shared_lock = threading.Lock()


def default_num_workers() -> int:
    """``GSPO_MATH_WORKERS`` if set, else this process's share of the CPUs (cores / local ranks), at most 8."""
    raw = os.environ.get("GSPO_MATH_WORKERS")
    if raw is not None:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"GSPO_MATH_WORKERS={raw!r}: expected a positive integer (verifier processes)")
        return int(raw)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(8, cpus // max(ranks, 1)))


def default_timeout_s() -> float:
    """``GSPO_MATH_TIMEOUT_S`` if set, else 2 CPU seconds per answer.

    The slowest ordinary answer measured (an interval, first of its kind in a worker) took 0.43 s; what takes
    longer is nearly always a pathological expression, and each one holds a worker for the whole deadline.
    """
    raw = os.environ.get("GSPO_MATH_TIMEOUT_S")
    if raw is None:
        return 2.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"GSPO_MATH_TIMEOUT_S={raw!r}: expected a positive number of seconds per answer")
    return value


def shared_pool() -> VerifierPool:
    """This process's pool, started on first use (sizes from :func:`default_num_workers` / :func:`default_timeout_s`)
    and closed at exit. A forked child gets its own."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._pid != os.getpid():
            _shared = VerifierPool(default_num_workers(), default_timeout_s())
            atexit.register(_shared.close)
        return _shared


def set_shared_pool(pool: VerifierPool | None) -> VerifierPool | None:
    """Replace this process's pool (e.g. other sizes, or None to start a default one on next use); returns the old."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, pool
        return old
