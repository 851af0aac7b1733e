"""Reward worker processes with a wall-clock deadline per task; stuck workers are killed and replaced.

Both kinds of out-of-process reward use this pool: math-verify answers (:mod:`gspo.rewards.math.pool`) and custom
reward functions with ``reward_model.timeout_s`` (:mod:`gspo.rewards.timeout`).

Why not ``multiprocessing.Pool`` / ``ProcessPoolExecutor``: neither can stop one task. A task stuck in C code holds
its worker forever; the only way out there is to terminate the whole pool. Here each worker has its own pipe and a
short queue of tasks; results come back in order, so the parent knows which task a worker is on and since when. A
worker past ``hard_timeout_s`` (wall clock) on one task is SIGKILLed, that task is a timeout, its queued tasks go
back to the front of the line, and a fresh worker takes its place.

Workers start from a ``forkserver`` (``spawn`` where there is none, as on Windows), never by ``os.fork()`` of the
trainer: a process holding CUDA, NCCL or vLLM threads is not safe to fork. The fork server is a fresh interpreter
that imports the ``preload`` modules once, so a replacement worker is a fork of it (milliseconds). As with any
spawn / forkserver multiprocessing, a script that scores such rewards must guard its entry point with
``if __name__ == "__main__":`` (workers import ``__main__``).

A graceful stop ends a wait: while :func:`interruptible_waits` is active (the trainer's stop request installs it),
a wait calls its check about every :data:`POLL_S` seconds; an exception from the check ends the wait, and the
workers busy on the abandoned tasks are killed (their late results must not reach the next call).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import util as mp_util
from multiprocessing.connection import wait
from typing import Any, NamedTuple

# A worker answers each task with (task id, status, value); READY (task id -1) first, once its handler is built.
OK, ERROR, TIMEOUT, READY = "ok", "error", "timeout", "ready"
DIED = "died"  # set by the parent: the worker died during the task; the value is its exit code
STARTUP_TIMEOUT_S = 120.0  # a worker that cannot build its handler in this long will not (a broken install)
POLL_S = 0.25  # how often a wait looks for a stop request
MAX_AUTO_WORKERS = 8


class Outcome(NamedTuple):
    """The result of one task: ``status`` OK (``value`` is the handler's result), ERROR (``value`` says why),
    TIMEOUT (``value`` "killed after N s" at the pool's hard deadline, or the handler's own, such as None at a
    soft deadline the worker kept itself) or DIED (``value`` the worker's exit code)."""

    status: str
    value: Any = None


class WorkerStartError(RuntimeError):
    """A worker could not build its handler (an import failed, the reward file is gone) or start in time."""


def default_num_workers() -> int:
    """This process's share of the CPUs (usable cores / ``LOCAL_WORLD_SIZE`` ranks), at least 1, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(MAX_AUTO_WORKERS, cpus // max(ranks, 1)))


# ------------------------------------------------------------------------------------------------ stop requests
_wait_checks: list[Callable[[float], None]] = []


@contextlib.contextmanager
def interruptible_waits(check: Callable[[float], None]) -> Iterator[None]:
    """While active, every wait for worker results calls ``check(wait_started)`` (``time.monotonic()`` seconds at
    which the wait began) about every :data:`POLL_S` seconds; an exception it raises ends the wait."""
    _wait_checks.append(check)
    try:
        yield
    finally:
        _wait_checks.remove(check)


def _check_stop(wait_started: float) -> None:
    for check in list(_wait_checks):
        check(wait_started)


# ------------------------------------------------------------------------------------------------ the worker side
def serve(conn, make_handler: Callable[..., Callable[[Any], tuple[str, Any]]], handler_args: tuple) -> None:
    """A worker's main: build ``make_handler(*handler_args)``, send READY, then answer each ``(task_id, task)`` with
    ``(task_id, *handler(task))`` until the parent closes the pipe. A handler that cannot be built is reported as
    ``(-1, ERROR, message)``."""
    _detach_from_parent()
    try:
        handler = make_handler(*handler_args)
    except Exception as exc:
        conn.send((-1, ERROR, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((-1, READY, None))
    while True:
        try:
            task_id, task = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        status, value = handler(task)
        try:
            conn.send((task_id, status, value))
        except Exception as exc:  # an unpicklable result: the task fails, the worker lives on
            conn.send((task_id, ERROR, RuntimeError(f"its result could not be sent back: {type(exc).__name__}: "
                                                    f"{exc}")))


def _detach_from_parent() -> None:
    # Ctrl-C, and torchrun's SIGTERM to a rank's process group, reach the workers too: the trainer handles both
    # (finishes or abandons the step) and may still need its rewards meanwhile; the workers end with the trainer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the process that started us
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)


# ------------------------------------------------------------------------------------------------ the parent side
_preload: list[str] = ["gspo.rewards.fork_server"]  # first: the server ignores stop signals before anything else


def _context(preload: Sequence[str]):
    """The forkserver context (spawn without one); ``preload`` joins what its server imports if it starts now."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    _preload.extend(name for name in preload if name not in _preload)
    ctx.set_forkserver_preload(list(_preload))  # not "__main__": re-importing a training script is no help
    return ctx


@dataclass
class _Worker:
    process: Any  # a multiprocessing Process
    conn: Any
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    queue: deque = field(default_factory=deque)  # task indices sent, oldest (the one being worked on) first
    head_since: float = 0.0  # when the worker began the oldest queued task


class WorkerPool:
    """``num_workers`` processes, each serving ``make_handler(*handler_args)``; :meth:`run` maps tasks over them.

    Args:
        num_workers: processes (>= 1), started on first use.
        hard_timeout_s: wall seconds on one task after which the worker is killed and the task is a TIMEOUT.
        make_handler: a module-level function (picklable by reference) run in each worker; the handler it returns
            takes one task and returns ``(status, value)``.
        handler_args: picklable arguments of ``make_handler``.
        name: the processes' name, and the pool's in error messages.
        preload: modules the fork server imports once for all workers.
        queue_depth: tasks sent ahead to each worker, so it never waits for the parent to be scheduled.
    """

    def __init__(self, num_workers: int, hard_timeout_s: float, make_handler: Callable, handler_args: tuple = (), *,
                 name: str, preload: Sequence[str] = (), queue_depth: int = 4) -> None:
        if num_workers < 1 or not hard_timeout_s > 0 or queue_depth < 1:
            raise ValueError(f"need num_workers >= 1, hard_timeout_s > 0, queue_depth >= 1; got {num_workers}, "
                             f"{hard_timeout_s}, {queue_depth}")
        self.num_workers, self.hard_timeout_s, self.queue_depth = num_workers, float(hard_timeout_s), queue_depth
        self.name, self.num_killed = name, 0  # workers killed at the hard deadline, over the pool's life
        self._target = (make_handler, handler_args)
        self._ctx = _context(preload)
        self._lock = threading.Lock()
        self.owner_pid = os.getpid()
        self._workers: list[_Worker | None] = [None] * num_workers  # None: not started, or discarded
        # Before multiprocessing's exit handler SIGTERMs daemon children (which ignore it) and joins them.
        self._finalizer = mp_util.Finalize(self, _kill_all, args=(self._workers,), exitpriority=10)

    @property
    def start_method(self) -> str:
        return self._ctx.get_start_method()

    @property
    def processes(self) -> list:
        """The live workers' processes (not yet started ones are left out)."""
        return [w.process for w in self._workers if w is not None]

    def run(self, tasks: Sequence, *, stop_at_first_failure: bool = False) -> list[Outcome | None]:
        """One :class:`Outcome` per task, in order; never waits past the hard deadlines.

        With ``stop_at_first_failure`` the call returns at the first outcome that is not OK, with None for every
        task not finished by then (the workers still on them are killed). Raises :class:`WorkerStartError` when a
        worker cannot start, and whatever a stop check raises (see :func:`interruptible_waits`).
        """
        if os.getpid() != self.owner_pid:
            raise RuntimeError(f"a {self.name} pool cannot be used in a forked child; create one in the child")
        with self._lock:
            try:
                return self._run(tasks, stop_at_first_failure)
            except BaseException:
                self._discard_busy()
                raise

    def close(self) -> None:
        self._finalizer()

    def _run(self, tasks: Sequence, stop_at_first_failure: bool) -> list[Outcome | None]:
        outcomes: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        remaining = len(tasks)
        wait_started = time.monotonic()
        if remaining:
            self._start_missing()
        while remaining:
            _check_stop(wait_started)
            now = time.monotonic()
            for i in range(len(self._workers)):
                self._feed(i, tasks, pending, now)
            waiting = [w for w in self._workers if w.queue or not w.ready]
            timeout = min(POLL_S, max(0.0, min(self._deadline(w) for w in waiting) - now))
            finished = []
            for conn in wait([w.conn for w in waiting], timeout=timeout):
                i = next(j for j, w in enumerate(self._workers) if w.conn is conn)
                finished.append(self._receive(i, outcomes, pending))
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if (w.queue or not w.ready) and now >= self._deadline(w):
                    finished.append(self._expire(i, outcomes, pending))
            finished = [task for task in finished if task is not None]
            remaining -= len(finished)
            if stop_at_first_failure and any(outcomes[task].status != OK for task in finished):
                self._discard_busy()
                break
        return outcomes

    def _start(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=serve, args=(child_conn, *self._target), daemon=True, name=self.name)
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn)

    def _start_missing(self) -> None:
        for i, w in enumerate(self._workers):
            if w is None:
                self._workers[i] = self._start()

    def _replace(self, i: int) -> None:
        _kill(self._workers[i])
        self._workers[i] = self._start()

    def _discard_busy(self) -> None:
        """Kill the workers still on tasks of an abandoned call; fresh ones start on the next call."""
        for i, w in enumerate(self._workers):
            if w is not None and (w.queue or not w.ready):
                _kill(w)
                self._workers[i] = None

    def _feed(self, i: int, tasks: Sequence, pending: deque, now: float) -> None:
        """Top up worker i's queue; a worker found dead (killed from outside while idle) is replaced first."""
        w = self._workers[i]
        if w.ready and not w.queue and pending and not w.process.is_alive():
            self._replace(i)
            return
        while w.ready and pending and len(w.queue) < self.queue_depth:
            task = pending.popleft()
            try:
                w.conn.send((task, tasks[task]))
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

    def _receive(self, i: int, outcomes: list, pending: deque) -> int | None:
        """Read one message from worker i; returns the task it finished, if any."""
        w = self._workers[i]
        try:
            task, status, value = w.conn.recv()
        except (EOFError, OSError):  # the worker died (OOM killer, segfault in a C extension, os._exit)
            w.process.join(timeout=5)
            return self._fail_head(i, outcomes, pending, Outcome(DIED, w.process.exitcode))
        if task == -1:
            if status != READY:
                raise WorkerStartError(f"a {self.name} worker could not start: {value}")
            w.ready = True
            return None
        w.queue.popleft()
        w.head_since = time.monotonic()
        outcomes[task] = Outcome(status, value)
        return task

    def _expire(self, i: int, outcomes: list, pending: deque) -> int | None:
        if not self._workers[i].ready:
            raise WorkerStartError(f"a {self.name} worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
        self.num_killed += 1
        return self._fail_head(i, outcomes, pending, Outcome(TIMEOUT, f"killed after {self.hard_timeout_s:g} s"))

    def _fail_head(self, i: int, outcomes: list, pending: deque, outcome: Outcome) -> int | None:
        """The task worker i was on gets ``outcome``; its queued tasks go back to the front; the worker is replaced."""
        w = self._workers[i]
        if not w.queue:  # died while starting, or while idle
            if not w.ready:
                raise WorkerStartError(f"a {self.name} worker exited while starting (exit {w.process.exitcode})")
            self._replace(i)
            return None
        head = w.queue.popleft()
        outcomes[head] = outcome
        pending.extendleft(reversed(w.queue))
        w.queue.clear()
        self._replace(i)
        return head


def _kill(w: _Worker | None) -> None:
    if w is None:
        return
    w.conn.close()
    if w.process.is_alive():
        w.process.kill()
    w.process.join(timeout=5)


def _kill_all(workers: list[_Worker | None]) -> None:
    for i, w in enumerate(workers):
        _kill(w)
        workers[i] = None
