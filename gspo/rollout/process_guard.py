"""Kill a rank's helper processes when the rank dies without cleaning up (``kill -9``, the out-of-memory killer).

vLLM's engine core, run in a process of its own beside a rollout pool, outlives a parent killed that way: it waits
on a socket nobody writes to again. :func:`guard` starts a small watcher (this file run as a script, standard
library only) that kills those processes and their descendants within ~``INTERVAL_S`` of the parent's death, and
exits by itself once they are gone. A polling watcher rather than ``PR_SET_PDEATHSIG``, which would have to be set
inside processes that vLLM starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERVAL_S = 0.5


def child_pids(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (read from /proc; empty where there is none)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            children.add(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    found, frontier = set(), {pid}
    while frontier:
        frontier = set().union(*(child_pids(p) for p in frontier)) - found
        found |= frontier
    return found


def guard(pids: set[int]) -> subprocess.Popen | None:
    """Start the watcher of ``pids`` (children of this process); None when there is nothing to watch."""
    if not pids:
        return None
    return subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid()), *map(str, sorted(pids))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def watch(parent: int, pids: list[int]) -> None:
    """Until ``pids`` are gone: once ``parent`` has died (this process re-parented), SIGKILL them and theirs."""
    while any(_alive(pid) for pid in pids):
        if os.getppid() != parent:
            targets = set(pids).union(*(descendants(pid) for pid in pids))  # all found before any is killed
            for target in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
            return
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(arg) for arg in sys.argv[2:]])
