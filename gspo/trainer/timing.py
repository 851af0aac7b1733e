"""Wall-clock phases of a training step, reported as ``timing/*`` metrics in seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timer(timings: dict[str, float], name: str) -> Iterator[None]:
    """Adds elapsed seconds to ``timings[name]`` (sums over repeated phases such as several gen batches)."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
