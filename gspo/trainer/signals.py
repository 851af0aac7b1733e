"""Graceful stop on SIGINT / SIGTERM: finish the current step, checkpoint, exit with a resume hint.

A step that waits on reward workers (a custom reward with reward_model.timeout_s, the math rewards) is the one
exception: rewards still running :data:`STOP_GRACE_S` seconds after the signal may be hung for up to their timeout,
so the wait ends with :class:`StepAbandoned` and the step's partial work is dropped; the latest checkpoint stays the
resume point.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

from gspo.rewards.workers import interruptible_waits

STOP_GRACE_S = 1.0  # how long a reward wait may still run after a stop signal before its step is abandoned


class TrainingInterrupted(Exception):
    """Raised after the checkpoint of an interrupted run is safely on disk."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(
            f"{signal_name} received: stopped after step {step}, checkpoint {checkpoint}. Resume by running the same "
            f"command again (trainer.resume_mode=auto continues from the latest checkpoint in "
            f"trainer.default_local_dir).")

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM set ``signal_name`` instead of killing the process.

    A second signal of the same kind falls through to the previous handler (so a double Ctrl-C still aborts).
    Outside the main thread signals cannot be caught; the context manager then does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._signalled_at = 0.0  # time.monotonic() of the first signal
        self._previous: dict[int, object] = {}
        self._waits = contextlib.ExitStack()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._waits.enter_context(interruptible_waits(self.check_during_wait))
        return self

    def check_during_wait(self, wait_started: float) -> None:
        """Called by reward waits: raise :class:`StepAbandoned` once a signal is :data:`STOP_GRACE_S` seconds old
        (counted from the later of the signal and ``wait_started``, ``time.monotonic()`` seconds), so a wait for
        rewards that finish promptly lets the step finish and checkpoint."""
        if self.signal_name is not None and time.monotonic() - max(self._signalled_at, wait_started) >= STOP_GRACE_S:
            raise StepAbandoned(self.signal_name)

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None:  # second signal: restore and re-deliver
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        self._signalled_at = time.monotonic()

    def __exit__(self, *exc) -> None:
        self._waits.close()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupted(BaseException):
    """SIGINT / SIGTERM outside the training loop (start-up, final export): nothing more is trained or written.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signal_name: str, message: str | None = None):
        self.signal_name = signal_name
        super().__init__(message or f"{signal_name} received outside a training step (start-up or final export): "
                         f"nothing more was trained or written; run the same command again to continue")

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


class StepAbandoned(Interrupted):
    """SIGINT / SIGTERM while a step waited for rewards that were still running :data:`STOP_GRACE_S` seconds later:
    the step's partial work is dropped, nothing of it is written."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name, f"{signal_name} received while a step waited for rewards still running "
                                      f"{STOP_GRACE_S:g} s later: the step was abandoned and nothing of it was saved. "
                                      f"Resume by running the same command again (trainer.resume_mode=auto continues "
                                      f"from the latest checkpoint in trainer.default_local_dir; with none, the run "
                                      f"starts over).")


def interrupt_on_signals() -> None:
    """Make SIGINT / SIGTERM raise :class:`Interrupted` (the training loop's :class:`StopRequest` takes over while
    it runs, and restores this afterwards). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, frame) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in StopRequest.SIGNALS:
        signal.signal(sig, handle)
