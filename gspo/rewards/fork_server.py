"""Imported by the reward workers' fork server (the first module it preloads, see :mod:`.workers`): the server
ignores Ctrl-C and SIGTERM, as the workers do. torchrun's SIGTERM to a rank's process group would otherwise end the
server, and with it (``PR_SET_PDEATHSIG``) every worker in the middle of a call while the trainer stops gracefully;
the server still exits when the trainer does (its pipe to the trainer closes).

Only the fork server is changed: imported anywhere else (a test collector, a documentation build) this module
leaves the importing process's signal handling alone, since ignored signals are inherited by every process it
starts afterwards.
"""

import signal
import sys


def _imported_by_fork_server() -> bool:
    """True while :func:`multiprocessing.forkserver.main` imports its preload modules (it is on the call stack)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "multiprocessing.forkserver" and frame.f_code.co_name == "main":
            return True
        frame = frame.f_back
    return False


if _imported_by_fork_server():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
