"""A per-call time limit for custom reward functions: each call runs in a forked worker process, killed past it.

A thread cannot be stopped and ``SIGALRM`` neither interrupts C code nor coexists with libraries that use it
themselves (math-verify does), so the function runs in a child process forked from the trainer (no re-import, no
pickling of the function; a batch of calls goes out in one message and the results stream back). A call that
overruns kills the child and counts as :class:`RewardTimeout`; the rest of the batch goes to a fresh child. The
child ignores Ctrl-C and SIGTERM (the trainer stops gracefully) and dies with the trainer.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import warnings
from typing import Any


class RewardTimeout(TimeoutError):
    """One reward call took longer than ``reward_model.timeout_s``."""


class TimedReward:
    """``fn(response, ground_truth, extra_info)`` with a ``timeout_s`` second limit per call (see module docstring)."""

    def __init__(self, fn, timeout_s: float):
        self.fn, self.timeout_s = fn, timeout_s
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)
        self._pid: int | None = None
        self._conn = None

    def __call__(self, response: str, ground_truth: Any, extra_info: dict) -> Any:
        status, value = self.map([(response, ground_truth, extra_info)])[0]
        if status == "error":
            raise value
        return value

    def score_batch(self, responses: list[str], ground_truths: list, extra_infos: list[dict]) -> list:
        """The batch protocol of :class:`~gspo.rewards.manager.RewardManager`: each response's value, or the
        exception (a :class:`RewardTimeout` past the limit) its call ended with."""
        results = self.map(list(zip(responses, ground_truths, extra_infos)))
        return [value for _, value in results]

    def map(self, calls: list[tuple], stop_at_first_error: bool = False) -> list[tuple[str, Any]]:
        """``("ok", value)`` or ``("error", exception)`` per call, in order: one message out, results streamed back
        (one pipe round trip per batch, not per call); each call still gets ``timeout_s`` seconds. With
        ``stop_at_first_error`` the list ends at the first error."""
        results: list[tuple[str, Any]] = []
        while len(results) < len(calls):
            pending = calls[len(results):]
            if self._pid is None:
                self._start()
            try:
                self._conn.send(pending)
                for _ in pending:
                    if not self._conn.poll(self.timeout_s):
                        self.close()
                        results.append(("error", RewardTimeout(
                            f"no result within reward_model.timeout_s={self.timeout_s:g} s (the call was killed)")))
                        break
                    results.append(self._conn.recv())
                    if stop_at_first_error and results[-1][0] == "error":
                        break
            except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                results.append(("error", RuntimeError(f"the reward worker process died during the call "
                                                      f"({type(exc).__name__})")))
            if stop_at_first_error and results[-1][0] == "error":
                self.close()  # it would go on with the rest of the batch
                break
        return results

    def _start(self) -> None:
        parent, child = multiprocessing.Pipe()
        with warnings.catch_warnings():  # the child only runs the reward function: no lock of another thread
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the worker (os.fork, not multiprocessing.Process: a daemon process may still use it)
            try:
                parent.close()
                _serve(self.fn, child)
            finally:
                os._exit(0)
        child.close()
        self._pid, self._conn = pid, parent

    def close(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
        if self._conn is not None:
            self._conn.close()
        self._pid = self._conn = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _serve(fn, conn) -> None:
    """The worker: answer calls until the trainer closes the pipe (or dies)."""
    _detach_from_trainer()
    while True:
        try:
            calls = conn.recv()
        except (EOFError, OSError):
            return
        for args in calls:
            try:
                reply = ("ok", fn(*args))
            except Exception as exc:
                reply = ("error", exc)
            try:
                conn.send(reply)
            except Exception as exc:  # an unpicklable exception or return value
                conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _detach_from_trainer() -> None:
    # Ctrl-C, and torchrun's SIGTERM to a rank's process group, reach this worker too: the trainer handles both
    # (finishes the step, checkpoints) and still needs its reward calls meanwhile; the worker ends with the trainer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the trainer (its main thread forked us)
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)
