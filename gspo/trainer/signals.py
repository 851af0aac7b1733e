"""Graceful stop on SIGINT / SIGTERM: finish the current step, checkpoint, exit with a resume hint."""

from __future__ import annotations

import signal
import threading
from pathlib import Path


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
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None:  # second signal: restore and re-deliver
            signal.signal(signum, self._previous[signum])
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Interrupted(BaseException):
    """SIGINT / SIGTERM outside the training loop (start-up, final export): nothing more is trained or written.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"{signal_name} received outside a training step (start-up or final export): nothing more "
                         f"was trained or written; run the same command again to continue")

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


def interrupt_on_signals() -> None:
    """Make SIGINT / SIGTERM raise :class:`Interrupted` (the training loop's :class:`StopRequest` takes over while
    it runs, and restores this afterwards). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, frame) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in StopRequest.SIGNALS:
        signal.signal(sig, handle)
