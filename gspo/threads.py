"""CPU thread setup for ``gspo train`` / ``gspo eval``: the OpenMP wait policy and torch's intra-op threads.

Why: torch's OpenMP workers spin-wait between parallel regions. On cores shared with other busy processes a
spinning worker burns the time slice its descheduled peer needs, and every op waits for the slowest thread: the
embedded default run took 38 minutes instead of 49 s on 2 cores with other work running. Two settings:

- ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep instead of spinning; measured on the embedded model under
  load 7 on 2 cores: a forward+backward 6.5 s with 2 spinning threads, 0.99 s passive, 0.93 s on one thread). The
  OpenMP runtime reads it once, when torch is imported, so :func:`prepare_openmp_env` runs before any torch import.
- As many intra-op threads as cores this process may use (its CPU affinity; split evenly over a node's ranks
  under torchrun). Not fewer when the machine looks busy: the load average also counts work that just ended (a
  previous run), and a run that picked 1 thread after one took 40 s instead of 35 s idle; with passive workers
  2 threads on 2 busy cores cost about what 1 thread does (0.99 s vs 0.93 s above).

Overrides, strongest first: ``trainer.cpu_threads`` (> 0), the ``GSPO_NUM_THREADS`` or ``OMP_NUM_THREADS``
environment variables; an ``OMP_WAIT_POLICY`` already set is kept.
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

    Once torch is loaded the runtime has read its settings: then this only warns, since setting it changes nothing.
    """
    if "OMP_WAIT_POLICY" in environ:
        return
    if "torch" in sys.modules:
        log.debug("torch was imported before the OpenMP wait policy could be set; workers keep spin-waiting")
        return
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    environ.setdefault("KMP_BLOCKTIME", "0")  # Intel's OpenMP (MKL builds): sleep at once instead of after 200 ms
    # GNU OpenMP (torch's CPU wheels): spin briefly before sleeping. Passive alone (spin count 0) makes every small
    # op of a tiny model wait for its workers to wake: the embedded default run took 76.7 s idle on 2 cores with it,
    # 44.6 s with this bounded spin, and beside two busy loops 76.4 s vs 80.1 s (benchmarks/default_run.py
    # --contended), so short spins cost little when cores are shared.
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
