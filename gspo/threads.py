"""CPU thread setup for ``gspo train`` / ``gspo eval``: the OpenMP wait policy and torch's intra-op threads.

What it does:

- Before torch is imported (:func:`prepare_openmp_env`, called by the CLI): unless ``OMP_WAIT_POLICY`` is already
  set, it sets ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers sleep instead of spin-waiting),
  ``KMP_BLOCKTIME=0`` (Intel's OpenMP sleeps at once) and ``GOMP_SPINCOUNT=10000`` (GNU OpenMP, torch's CPU
  wheels, spins briefly before sleeping); the last two only when not set. The OpenMP runtime reads these once, when
  torch is imported, so setting them later changes nothing.
- Intra-op threads (:func:`apply_threads`): ``trainer.cpu_threads`` when > 0 (``gspo eval``: ``cpu_threads``), else
  the ``GSPO_NUM_THREADS`` environment variable, else ``OMP_NUM_THREADS``, else the cores this process may run on
  (its CPU affinity) divided by the processes on this node (torchrun's ``LOCAL_WORLD_SIZE``), at least 1. The load
  average is not consulted.

Why: spinning workers on cores shared with other busy processes burn the time slice a descheduled peer needs, and
every parallel op waits for its slowest thread; sleeping workers give the core back. A brief spin before sleeping
keeps the many small ops of a tiny model from paying a wake-up each. ``python benchmarks/default_run.py
--contended`` measures the embedded default run alone and beside two busy loops; set ``OMP_WAIT_POLICY`` /
``GOMP_SPINCOUNT`` / ``GSPO_NUM_THREADS`` in its environment to measure other choices.
"""

from __future__ import annotations

import logging
import os
import sys

from gspo.errors import InputError

log = logging.getLogger(__name__)

THREADS_ENV = "GSPO_NUM_THREADS"


def prepare_openmp_env(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Set the OpenMP wait policy (passive unless the user chose one) before torch is imported.

    Once torch is loaded the runtime has read its settings: then this sets nothing (setting them would change
    nothing) and logs that at debug level.
    """
    if "OMP_WAIT_POLICY" in environ:
        return
    if "torch" in sys.modules:
        log.debug("torch was imported before the OpenMP wait policy could be set; workers keep spin-waiting")
        return
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    environ.setdefault("KMP_BLOCKTIME", "0")  # Intel's OpenMP (MKL builds): sleep at once instead of after 200 ms
    # GNU OpenMP (torch's CPU wheels): spin briefly before sleeping, so that the small ops of a tiny model do not
    # each wait for their workers to wake up.
    environ.setdefault("GOMP_SPINCOUNT", "10000")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one), >= 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def choose_threads(configured: int, environ: dict[str, str] | os._Environ = os.environ,
                   processes_per_node: int = 1) -> tuple[int, str]:
    """The intra-op thread count and where it came from: the key, an env var, or the usable cores (split evenly
    over this node's processes under torchrun)."""
    if configured > 0:
        return configured, "trainer.cpu_threads"
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise InputError(f"{name}={value!r}: must be a whole number of threads, e.g. {name}=1") from None
            if threads < 1:
                raise InputError(f"{name}={value!r}: must be >= 1")
            return threads, name
    return max(1, usable_cores() // max(1, processes_per_node)), "usable cores"


def apply_threads(configured: int = 0, processes_per_node: int = 1) -> int:
    """Set torch's intra-op threads (see :func:`choose_threads`); returns the count."""
    import torch

    threads, source = choose_threads(configured, processes_per_node=processes_per_node)
    if threads != torch.get_num_threads():  # torch starts with one per core: leave its own setup alone then
        torch.set_num_threads(threads)
    log.debug("torch intra-op threads: %d (%s); OMP_WAIT_POLICY=%s", threads, source,
              os.environ.get("OMP_WAIT_POLICY", "(runtime default)"))
    return threads
