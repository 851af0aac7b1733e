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

from gspo.rewards.workers import ERROR, OK, TIMEOUT


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


def make_verifier(soft_timeout_s: float) -> Callable[[tuple[str, str]], tuple[str, Any]]:
    """Built in each verifier worker (:func:`gspo.rewards.workers.serve`): a handler mapping a ``(gold, pred)`` task
    to ``(OK, verdict)``, ``(TIMEOUT, None)`` past ``soft_timeout_s`` CPU seconds, or ``(ERROR, message)``.

    math-verify is imported here, before the worker reports ready: a cold import is not the first answer's time.
    """
    quiet_math_verify()
    import math_verify  # noqa: F401

    def verify(task: tuple[str, str]) -> tuple[str, Any]:
        try:
            return OK, call_with_deadline(answers_match, task, soft_timeout_s)
        except DeadlineExceeded:
            return TIMEOUT, None
        except Exception as exc:  # a math-verify bug on this answer; reported and counted, the worker lives on
            return ERROR, f"{type(exc).__name__}: {exc}"[:500]

    return verify
