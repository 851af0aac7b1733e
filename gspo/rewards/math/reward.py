r"""Math rewards verified with math-verify: MATH / MATH-500 (score 1 / 0) and DAPO-Math / AIME (score 1 / -1).

Each response's final answer is extracted (:func:`.extract.extract_final_answer`: the last ``\boxed{}`` or
``Answer:`` line) and compared with the ground truth by math-verify in worker processes (:mod:`.pool`), so
``\dfrac12``, ``0.5`` and ``\frac{1}{2}`` all match ``\frac12``. Scores follow verl for the same ``data_source``:
its MATH reward gives 1 / 0, its DAPO reward (``math_dapo`` and ``aime*``) 1 / -1; ``acc`` is 1 / 0 for both.
Every result also carries ``has_answer`` (1 when an answer was extracted), logged as ``reward/extra/has_answer``.

A verification that passes its deadline (``reward_model.math_timeout_s``, default 2 CPU seconds per answer; the
parent kills a worker after ``timeout + 3`` wall seconds on one answer; ``reward_model.math_workers`` processes
verify in parallel) is a reward error (:class:`MathVerifyTimeout`), handled like any other by
``reward_model.on_error``: "raise" stops with the answer shown, "zero" scores it 0 and counts it in ``reward/errors``.

The registered functions have a ``score_batch`` attribute, which :class:`gspo.rewards.RewardManager` uses to send
a whole batch to the pool at once; calling the function itself scores one response.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from fractions import Fraction

from gspo.rewards.base import RewardError, preview
from gspo.rewards.math.extract import clean_answer, extract_final_answer
from gspo.rewards.math.pool import Verdict, shared_pool
from gspo.rewards.registry import register_reward, register_reward_prefix

MATH_SOURCES = ("math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500")
DAPO_SOURCES = ("math_dapo",)
DAPO_PREFIX = "aime"  # verl: data_source.startswith("aime") is scored like math_dapo

_RATIONAL = re.compile(r"(-)?(?:(\d+(?:\.\d+)?)|\\[dt]?frac\{(\d+)\}\{(\d+)\}|\\[dt]?frac(\d)(\d)|(\d+)/(\d+))")


class MathVerifyTimeout(RewardError):
    """math-verify did not finish comparing one answer within the per-answer deadline."""


class MathVerifyFailure(RewardError):
    """math-verify (or its worker process) failed on one answer."""


def is_math_source(data_source: str) -> bool:
    """Whether ``data_source`` is scored by the math-verify rewards of this module.

    >>> is_math_source("HuggingFaceH4/MATH-500"), is_math_source("aime_2024"), is_math_source("openai/gsm8k")
    (True, True, False)
    """
    return data_source in MATH_SOURCES or data_source in DAPO_SOURCES or data_source.startswith(DAPO_PREFIX)


def _as_rational(answer: str) -> tuple[Fraction, bool] | None:
    r"""``answer`` as an exact number and whether it was written as a decimal, if it is a plain integer, decimal or
    fraction (``\frac{a}{b}``, ``\dfrac12``, ``a/b``, with a sign); None for anything else.

    >>> _as_rational(r"-\dfrac{3}{4}"), _as_rational("0.5"), _as_rational(r"\frac12"), _as_rational("50\\%")
    ((Fraction(-3, 4), False), (Fraction(1, 2), True), (Fraction(1, 2), False), None)
    """
    match = _RATIONAL.fullmatch(answer.replace(" ", ""))
    if match is None:
        return None
    sign, number, num, den, num1, den1, slash_num, slash_den = match.groups()
    if number is not None:
        value, decimal = Fraction(number), "." in number
    else:
        top, bottom = (num, den) if num is not None else (num1, den1) if num1 is not None else (slash_num, slash_den)
        if int(bottom) == 0:
            return None
        value, decimal = Fraction(int(top), int(bottom)), False
    return (-value if sign else value), decimal


def _fast_verdict(gold: str, pred: str) -> bool | None:
    """The verdict without math-verify where it is certain: equal strings, or two plain numbers (integers,
    decimals, fractions) that are exactly equal, or unequal beyond math-verify's decimal rounding (6 places).

    >>> _fast_verdict("34", "34"), _fast_verdict("3", "3.0"), _fast_verdict("34", "35"), _fast_verdict("1/2", "0.5")
    (True, True, False, True)
    >>> _fast_verdict(r"\frac{1}{3}", "0.333333") is None, _fast_verdict("x", "y") is None  # for math-verify
    (True, True)
    """
    if gold == pred:
        return True
    a, b = _as_rational(gold), _as_rational(pred)
    if a is None or b is None:
        return None
    if a[0] == b[0]:
        return True
    if not (a[1] or b[1]) or abs(a[0] - b[0]) > Fraction(1, 10**5):
        return False
    return None  # a decimal within rounding distance: math-verify's rounding rules decide


def check_math_verify() -> None:
    """Raise :class:`RewardError` (with the install command) when math-verify is not installed."""
    if importlib.util.find_spec("math_verify") is None:
        raise RewardError("the math rewards need math-verify: pip install 'gspo[math]'")


def verify_pairs(pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
    """A :class:`Verdict` per ``(gold, pred)`` answer pair; certain cases are settled here, the rest in the pool.

    Each distinct pair is verified once, and pairs go out sorted by ground truth, so a worker sees a ground truth's
    pairs together and parses it once (its parse cache is per process).
    """
    verdicts: dict[tuple[str, str], Verdict] = {}
    for pair in pairs:
        if pair not in verdicts:
            fast = _fast_verdict(*pair)
            if fast is not None:
                verdicts[pair] = Verdict("ok", fast)
    todo = sorted({pair for pair in pairs if pair not in verdicts})
    if todo:
        check_math_verify()
        verdicts.update(zip(todo, shared_pool().verify(todo)))
    return [verdicts[pair] for pair in pairs]


def _score_batch(responses: Sequence[str], ground_truths: Sequence[str | None], wrong_score: float) -> list:
    """Per response: ``{"score", "acc", "has_answer"}`` or the :class:`RewardError` to report for it."""
    results: list = [None] * len(responses)
    pairs, where = [], []
    for i, (response, gt) in enumerate(zip(responses, ground_truths)):
        if gt is None or not str(gt).strip():
            results[i] = ValueError("math reward needs a ground truth answer, got " + repr(gt))
            continue
        answer = extract_final_answer(response)
        if answer is None:
            results[i] = {"score": wrong_score, "acc": 0.0, "has_answer": 0.0}
        else:
            pairs.append((clean_answer(str(gt)), answer))
            where.append(i)
    for i, (gold, pred), verdict in zip(where, pairs, verify_pairs(pairs)):
        if verdict.status == "ok":
            results[i] = {"score": 1.0 if verdict.equal else wrong_score, "acc": float(verdict.equal),
                          "has_answer": 1.0}
        elif verdict.status == "timeout":
            results[i] = MathVerifyTimeout(
                f"math-verify passed its per-answer deadline ({verdict.message or 'soft timeout'}) comparing answer "
                f"{preview(pred, 120)} with ground truth {preview(gold, 120)}; set reward_model.on_error=zero to "
                f"score such answers 0 and count them, or raise reward_model.math_timeout_s")
        else:
            results[i] = MathVerifyFailure(f"math-verify failed on answer {preview(pred, 120)}: {verdict.message}")
    return results


def _single(results: list):
    (result,) = results
    if isinstance(result, BaseException):
        raise result
    return result


@register_reward(*MATH_SOURCES)
def math_reward(response_text: str, ground_truth: str | None, extra_info: dict) -> dict:
    r"""1.0 when the response's final answer is equivalent to the ground truth (math-verify), else 0.0.

    >>> math_reward(r"so $x = \boxed{\dfrac12}$", r"\frac{1}{2}", {})
    {'score': 1.0, 'acc': 1.0, 'has_answer': 1.0}
    >>> math_reward("the answer is 7", "7", {})  # no box, no "Answer:" line
    {'score': 0.0, 'acc': 0.0, 'has_answer': 0.0}
    """
    return _single(_score_batch([response_text], [ground_truth], wrong_score=0.0))


@register_reward(*DAPO_SOURCES)
@register_reward_prefix(DAPO_PREFIX)
def dapo_math_reward(response_text: str, ground_truth: str | None, extra_info: dict) -> dict:
    """As :func:`math_reward` with DAPO's scores: 1.0 when correct, -1.0 otherwise (``acc`` stays 1 / 0).

    >>> dapo_math_reward("...\\nAnswer: 34", "34", {}), dapo_math_reward("Answer: 35", "34", {})["score"]
    ({'score': 1.0, 'acc': 1.0, 'has_answer': 1.0}, -1.0)
    """
    return _single(_score_batch([response_text], [ground_truth], wrong_score=-1.0))


math_reward.preflight = dapo_math_reward.preflight = check_math_verify  # run by `gspo validate` / the trainer
math_reward.score_batch = lambda responses, gts, extra_infos: _score_batch(responses, gts, wrong_score=0.0)
dapo_math_reward.score_batch = lambda responses, gts, extra_infos: _score_batch(responses, gts, wrong_score=-1.0)


def merge_equivalent(answers: Sequence[str | None]) -> list[str | None]:
    r"""``answers`` with each replaced by the first earlier answer it is equivalent to (math-verify), so a vote
    over the result counts equivalent forms together; None (no answer) stays None. Timeouts count as different.

    >>> merge_equivalent([r"\frac12", "0.5", "2", None, r"\dfrac{1}{2}"])
    ['\\frac12', '\\frac12', '2', None, '\\frac12']
    """
    distinct = list(dict.fromkeys(a for a in answers if a is not None))
    pairs = [(distinct[j], distinct[i]) for i in range(len(distinct)) for j in range(i)]
    verdicts = dict(zip(pairs, verify_pairs(pairs)))
    representative: dict[str, str] = {}
    for i, answer in enumerate(distinct):
        representative[answer] = next((representative[distinct[j]] for j in range(i)
                                       if verdicts[(distinct[j], answer)].equal), answer)
    return [None if a is None else representative[a] for a in answers]
