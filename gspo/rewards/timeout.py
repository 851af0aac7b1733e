"""A per-call time limit for custom reward functions: calls run in reward worker processes, killed past the limit.

A thread cannot be stopped and ``SIGALRM`` neither interrupts C code nor coexists with libraries that use it
themselves (math-verify does), so the function runs in the worker pool of :mod:`gspo.rewards.workers`, the one the
math rewards use: processes started from a fork server, never forked from the trainer. A worker loads the function
itself: a :class:`~gspo.rewards.registry.CustomReward` from its file (``custom_reward_function.path`` / ``name``),
any other function by its module and name, so it must be importable (defined at the top level of a module).

A batch's calls run in parallel, each with its own ``timeout_s`` seconds of wall time. A call that overruns is
killed with its worker (a fresh one takes over) and counts as :class:`RewardTimeout`. With
``stop_at_first_error`` (``reward_model.on_error=raise``) the first call that times out, raises or kills its worker
ends the batch at once with a :class:`~gspo.rewards.base.RewardError` that names the function, its file, the sample
and what happened; otherwise every call's value or exception comes back and ``on_error`` decides.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
from typing import Any

from gspo.rewards.base import RewardError, preview
from gspo.rewards.workers import DIED, ERROR, OK, TIMEOUT, Outcome, WorkerPool, WorkerStartError, default_num_workers


class RewardTimeout(TimeoutError):
    """One reward call took longer than ``reward_model.timeout_s``."""


class RewardWorkerDied(RuntimeError):
    """The worker process running a reward call died (a segfault in a C extension, the OOM killer, ``os._exit``)."""


class TimedReward:
    """``fn(response, ground_truth, extra_info)`` with a ``timeout_s`` second limit per call (see module docstring).

    Args:
        fn: the reward function; picklable (a :class:`~gspo.rewards.registry.CustomReward`, or a function defined
            at the top level of an importable module).
        timeout_s: wall seconds one call may take (> 0).
        num_workers: worker processes, started on first use; 0 = one per core this process may use, at most 8.
        stop_at_first_error: raise at the first failed call of a batch instead of returning every call's outcome.
    """

    def __init__(self, fn, timeout_s: float, *, num_workers: int = 0, stop_at_first_error: bool = False):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._pool: WorkerPool | None = None
        self.fn, self.timeout_s, self.stop_at_first_error = fn, float(timeout_s), stop_at_first_error
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)
        self.source = _source_file(fn)
        self._pickled = self._pickle(fn)
        self._num_workers = num_workers or default_num_workers()

    @property
    def pool(self) -> WorkerPool:
        """The worker pool (created on first use; its processes start on the first call)."""
        if self._pool is None:
            # One call at a time per worker: a call costs far more than the round trip, so none waits in a queue
            # behind a slow one while another worker is idle.
            self._pool = WorkerPool(self._num_workers, self.timeout_s, _load_reward, (self._pickled,),
                                    name="gspo-reward-worker", preload=["gspo.rewards.timeout"], queue_depth=1)
        return self._pool

    def __call__(self, response: str, ground_truth: Any, extra_info: dict) -> Any:
        (value,) = self.score_batch([response], [ground_truth], [extra_info])
        if isinstance(value, BaseException):
            raise value
        return value

    def score_batch(self, responses: list[str], ground_truths: list, extra_infos: list[dict]) -> list:
        """The batch protocol of :class:`~gspo.rewards.manager.RewardManager`: each response's value, or the
        exception (a :class:`RewardTimeout` past the limit) its call ended with. With ``stop_at_first_error``, the
        first failure raises :class:`~gspo.rewards.base.RewardError` instead (the other calls are abandoned)."""
        calls = list(zip(responses, ground_truths, extra_infos))
        try:
            outcomes = self.pool.run(calls, stop_at_first_failure=self.stop_at_first_error)
        except WorkerStartError as exc:
            raise RewardError(f"reward function {self._name()} could not be loaded in a reward worker process: "
                              f"{exc}") from exc
        results = [None if outcome is None else self._result(outcome) for outcome in outcomes]
        if self.stop_at_first_error:
            for i, result in enumerate(results):
                if isinstance(result, BaseException):
                    raise RewardError(self._failure_message(result, i, calls[i])) from result
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def _result(self, outcome: Outcome) -> Any:
        if outcome.status == OK:
            return outcome.value
        if outcome.status == TIMEOUT:
            return RewardTimeout(f"no result within reward_model.timeout_s={self.timeout_s:g} s (the call was killed)")
        if outcome.status == DIED:
            return RewardWorkerDied(f"the reward worker process died during the call (exit code {outcome.value})")
        return outcome.value  # the function's own exception

    def _name(self) -> str:
        return f"{self.__qualname__!r}" + (f" ({self.source})" if self.source else "")

    def _failure_message(self, error: BaseException, i: int, call: tuple) -> str:
        response, ground_truth, _ = call
        if isinstance(error, RewardTimeout):
            what = (f"took longer than reward_model.timeout_s={self.timeout_s:g} s and was killed", "; make it faster, "
                    "raise reward_model.timeout_s, or set reward_model.on_error=zero to score such calls 0")
        elif isinstance(error, RewardWorkerDied):
            what = (f"failed: {error}", "")
        else:
            what = (f"raised {type(error).__name__}: {error}", "")
        return (f"reward function {self._name()} {what[0]} (sample {i}, ground_truth={ground_truth!r:.200}); "
                f"response: {preview(response)}{what[1]}")

    def _pickle(self, fn) -> bytes:
        try:
            return pickle.dumps(fn)
        except Exception as exc:
            raise RewardError(
                f"reward function {self._name()} cannot be sent to a reward worker process ({type(exc).__name__}: "
                f"{exc}): define it at the top level of a file and set custom_reward_function.path / name, or set "
                f"reward_model.timeout_s=null to call it in the trainer's process without a time limit") from exc

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()


def _source_file(fn) -> str | None:
    path = getattr(fn, "path", None)
    if isinstance(path, str):
        return path
    try:
        return inspect.getsourcefile(fn)
    except TypeError:
        return None


def _load_reward(pickled: bytes):
    """Run in each reward worker: the function (a custom reward file is imported here), as a task handler."""
    fn = pickle.loads(pickled)

    def call(args: tuple) -> tuple[str, Any]:
        try:
            return OK, fn(*args)
        except Exception as exc:
            return ERROR, _sendable(exc)

    return call


def _sendable(exc: Exception) -> Exception:
    """``exc`` if it survives the trip back to the trainer (pickled there, re-created here), else a RuntimeError
    with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
