r"""Answer equivalence with math-verify, as run inside a verifier worker process (see :mod:`.pool`).

math-verify's own timeouts use ``signal.alarm``, which only works on a process's main thread and only in whole
seconds. A worker process's main thread is ours, so the soft deadline here is a ``setitimer(ITIMER_PROF)`` timer:
CPU seconds of the worker, so a busy machine does not turn a slow-but-fine answer into a timeout. It raises
:class:`DeadlineExceeded`, a ``BaseException``, so math-verify's and sympy's ``except Exception`` do not swallow it.
Work stuck inside C code never sees the signal; the parent kills such a worker at its (wall-clock) hard deadline.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import lru_cache
from typing import Any

# Set by the parent: a result arrives as (task id, status, value); status is one of these.
OK, ERROR, TIMEOUT, READY = "ok", "error", "timeout", "ready"


class DeadlineExceeded(BaseException):
    """The soft per-answer deadline passed (raised by the interval timer in the worker's main thread)."""


@lru_cache(maxsize=4096)
def parse_answer(answer: str) -> tuple:
    r"""math-verify's parse of one extracted answer (LaTeX or plain), as a tuple of candidates.

    The answer is wrapped in ``\boxed{}`` so math-verify parses exactly it, not some other number in it.
    Candidates are sympy objects plus the string itself (math-verify's "first_match" fallback, so that answers
    it cannot parse, like ``\text{(C)}``, still compare as strings). Ground truths repeat once per sample of a
    prompt, hence the cache.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return tuple(parse("\\boxed{" + answer + "}", [LatexExtractionConfig(boxed_match_priority=0),
                                                    ExprExtractionConfig()], parsing_timeout=None))


def answers_match(gold: str, pred: str) -> bool:
    r"""Whether ``pred`` is mathematically equivalent to ``gold`` (both already extracted, e.g. ``\frac12``).

    Identical strings match without parsing. No timeout here: call it through :func:`call_with_deadline`.
    """
    if gold.strip() == pred.strip():
        return True
    from math_verify import verify

    gold_parsed, pred_parsed = parse_answer(gold), parse_answer(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


def _on_alarm(signum, frame) -> None:
    raise DeadlineExceeded()


def call_with_deadline(fn: Callable[..., Any], args: tuple, cpu_seconds: float) -> Any:
    """``fn(*args)``, raising :class:`DeadlineExceeded` once it used ``cpu_seconds`` of CPU (main thread; POSIX)."""
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def quiet_math_verify() -> None:
    """math-verify warns once that its own timeout is off (ours replaces it) and logs every parse failure."""
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def worker_main(conn, soft_timeout_s: float) -> None:
    """Serve ``(task_id, gold, pred)`` requests from ``conn`` until it closes; answer ``(task_id, status, value)``.

    ``value`` is the verdict (bool) for OK, a message for ERROR, None for TIMEOUT. A READY message with task id
    -1 goes out first, so the parent starts the deadline clock only once imports are done.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    quiet_math_verify()
    import math_verify  # noqa: F401  (imported before READY: a cold import is not the first answer's time)

    conn.send((-1, READY, None))
    while True:
        try:
            task_id, gold, pred = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        try:
            result = (task_id, OK, call_with_deadline(answers_match, (gold, pred), soft_timeout_s))
        except DeadlineExceeded:
            result = (task_id, TIMEOUT, None)
        except Exception as exc:  # a math-verify bug on this answer; reported and counted, the worker lives on
            result = (task_id, ERROR, f"{type(exc).__name__}: {exc}"[:500])
        conn.send(result)
