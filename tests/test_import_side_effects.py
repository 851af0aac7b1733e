"""Importing any gspo module leaves the process's signal handling alone (pytest imports every module for its
doctests before the first test runs: an ignored SIGTERM there is inherited by every process the suite starts)."""

from __future__ import annotations

import signal
import subprocess
import sys


def test_the_test_process_ignores_no_stop_signal_after_collecting_every_module():
    # Only an ignored signal is inherited through exec; a Python handler (a test may run the CLI in-process,
    # which installs one) is reset in every child.
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


def test_importing_the_fork_server_preload_module_outside_the_fork_server_ignores_no_signal():
    code = ("import signal, gspo.rewards.fork_server; "
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "
            "signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]
