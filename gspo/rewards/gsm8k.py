"""GSM8K answer scoring, compatible with verl's ``gsm8k.compute_score``.

Differences from verl, all in the direction of accepting well-formed answers:
``$`` is allowed inside the strict ``#### N`` match, a trailing ``.`` is
stripped, flexible mode also removes commas and skips matches without a digit,
and the whole response is searched (verl looks only at the last 300 chars).
"""

from __future__ import annotations

import re

from gspo.rewards.registry import register_reward

EXTRACT_METHODS = ("strict", "flexible")

_STRICT = re.compile(r"#### (\-?[0-9\.\,\$]+)")
_FLEXIBLE = re.compile(r"(\-?[0-9\.\,\$]+)")


def _clean(number: str) -> str:
    """Drop commas and ``$``; write decimals canonically so ``18.00`` matches ``18`` (and ``2.50`` matches ``2.5``).

    >>> _clean("$1,234.00"), _clean("2.50"), _clean("72."), _clean("100")
    ('1234', '2.5', '72', '100')
    """
    text = number.replace(",", "").replace("$", "").rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def extract_solution(text: str, method: str = "strict") -> str | None:
    """The final numeric answer in ``text``, or None.

    strict: the last ``#### N``; flexible: the last number anywhere. Commas and
    ``$`` are removed, a trailing ``.`` is stripped and decimal trailing zeros are dropped.

    >>> extract_solution("so 3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_solution("#### $1,234.")
    '1234'
    >>> extract_solution("the answer is 7") is None
    True
    >>> extract_solution("12 apples, then 15.", method="flexible")
    '15'
    """
    if method not in EXTRACT_METHODS:
        raise ValueError(f"method must be one of {EXTRACT_METHODS}, got {method!r}")
    pattern = _STRICT if method == "strict" else _FLEXIBLE
    for match in reversed(pattern.findall(text)):
        answer = _clean(match)
        # Punctuation like "," or "..." also matches the character class; it is not a number.
        if any(c.isdigit() for c in answer):
            return answer
    return None


def normalize_ground_truth(ground_truth: str) -> str:
    """Normalise a GSM8K reference like an extracted answer; a full solution ending in ``#### N`` gives N.

    >>> normalize_ground_truth(" 1,234 "), normalize_ground_truth("4 + 3 = 7\\n#### 7")
    ('1234', '7')
    """
    text = str(ground_truth).strip()
    if "####" in text:
        extracted = extract_solution(text, method="strict")
        if extracted is not None:
            return extracted
    return _clean(text)


@register_reward("openai/gsm8k", "gsm8k")
def gsm8k_reward(response_text: str, ground_truth: str | None, extra_info: dict) -> dict:
    """1.0 when the extracted answer equals the ground truth string exactly, else 0.0.

    ``extra_info["method"]`` selects "strict" (default) or "flexible" extraction.

    >>> gsm8k_reward("... #### 72", "72", {})
    {'score': 1.0, 'acc': 1.0}
    >>> gsm8k_reward("The answer is 72", "72", {})
    {'score': 0.0, 'acc': 0.0}
    >>> gsm8k_reward("The answer is 72", "72", {"method": "flexible"})
    {'score': 1.0, 'acc': 1.0}
    """
    if ground_truth is None:
        raise ValueError("gsm8k_reward needs a ground truth answer, got None")
    method = (extra_info or {}).get("method", "strict")
    answer = extract_solution(response_text, method=method)
    score = 1.0 if answer is not None and answer == normalize_ground_truth(ground_truth) else 0.0
    return {"score": score, "acc": score}
