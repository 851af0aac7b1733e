r"""The math reward on a hand-written table of answers: equivalent forms, near misses, several boxes, units,
percentages, the DAPO answer line, malformed and empty responses; scored through RewardManager like training.

Each row: (response, ground truth as MATH / MATH-500 / DAPO publish it, expected acc, what the row checks).
"""

from __future__ import annotations

import pytest

from gspo.rewards import RewardManager, get_reward_fn, registered_rewards
from gspo.rewards.math import dapo_math_reward, math_reward

B = "\\boxed{%s}"

TABLE = [
    # equivalent forms: fractions, decimals, radicals, signs, spacing
    (B % "\\frac{1}{2}", "\\frac{1}{2}", 1.0, "identical fraction"),
    (B % "\\dfrac12", "\\frac{1}{2}", 1.0, "dfrac without braces"),
    (B % "\\tfrac{1}{2}", "\\frac12", 1.0, "tfrac"),
    (B % "0.5", "\\frac{1}{2}", 1.0, "decimal for fraction"),
    (B % "1/2", "\\frac{1}{2}", 1.0, "slash fraction"),
    (B % "\\frac{2}{4}", "\\frac{1}{2}", 1.0, "unreduced fraction"),
    (B % "-\\frac{3}{4}", "\\frac{-3}{4}", 1.0, "sign placement"),
    (B % "-0.75", "-\\frac34", 1.0, "negative decimal"),
    (B % "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", 1.0, "sqrt without braces"),
    (B % "\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", 1.0, "rationalised denominator"),
    (B % "2\\sqrt{5}", "\\sqrt{20}", 1.0, "simplified radical"),
    (B % "3.0", "3", 1.0, "trailing zero"),
    (B % "3.000", "3", 1.0, "several trailing zeros"),
    (B % " 12 ", "12", 1.0, "spaces inside the box"),
    (B % "1,000", "1000", 1.0, "thousands separator"),
    (B % "10^{3}", "1000", 1.0, "power of ten"),
    (B % "\\pi", "\\pi", 1.0, "pi"),
    (B % "2\\pi", "\\pi \\cdot 2", 1.0, "commuted product"),
    (B % "\\frac{\\pi}{3}", "\\frac{1}{3}\\pi", 1.0, "pi fraction"),
    (B % "x^2+2x+1", "(x+1)^2", 1.0, "expanded polynomial"),
    (B % "x = 3", "3", 1.0, "answer written as an equation"),
    (B % "0.333333", "\\frac{1}{3}", 1.0, "six-digit decimal of 1/3"),
    (B % "2^{-1}", "\\frac{1}{2}", 1.0, "negative exponent"),
    # sets, tuples, intervals
    (B % "\\{1, 2\\}", "\\{2, 1\\}", 1.0, "set order does not matter"),
    (B % "1, 2", "2, 1", 1.0, "list of solutions in another order"),
    (B % "(1, 2)", "(1,2)", 1.0, "same ordered pair"),
    (B % "(2, 1)", "(1, 2)", 0.0, "ordered pair swapped"),
    (B % "[1, 2)", "[1,2)", 1.0, "half-open interval"),
    (B % "(1, 2]", "[1, 2)", 0.0, "other half-open interval"),
    (B % "(-\\infty, 3)", "(-\\infty,3)", 1.0, "unbounded interval"),
    (B % "x \\in [0, 1]", "[0,1]", 1.0, "membership written out"),
    # units, degrees, percentages, text
    (B % "5 \\text{ cm}", "5", 1.0, "unit after the number"),
    (B % "5\\text{ cm}^2", "5", 1.0, "squared unit"),
    (B % "30^\\circ", "30", 1.0, "degrees"),
    (B % "30^{\\circ}", "30^\\circ", 1.0, "degrees both sides"),
    (B % "50\\%", "50", 1.0, "percent sign"),
    (B % "50\\%", "50\\%", 1.0, "percent both sides"),
    (B % "\\$ 18.90", "18.90", 1.0, "dollar sign"),
    (B % "\\text{(C)}", "\\text{(C)}", 1.0, "multiple-choice letter"),
    (B % "\\text{Monday}", "\\text{Monday}", 1.0, "word answer"),
    (B % "\\text{Tuesday}", "\\text{Monday}", 0.0, "other word"),
    # near misses
    (B % "3", "4", 0.0, "wrong integer"),
    (B % "-3", "3", 0.0, "wrong sign"),
    (B % "0.33", "\\frac{1}{3}", 0.0, "decimal too short"),
    (B % "\\frac{1}{3}", "\\frac{1}{2}", 0.0, "wrong fraction"),
    (B % "\\sqrt{2}", "2", 0.0, "missing square"),
    (B % "2\\sqrt{3}", "3\\sqrt{2}", 0.0, "swapped radical"),
    (B % "x^2+2x", "(x+1)^2", 0.0, "polynomial off by a constant"),
    (B % "\\{1, 2, 3\\}", "\\{1, 2\\}", 0.0, "set with an extra element"),
    (B % "[1, 2]", "[1, 2)", 0.0, "closed instead of half-open"),
    (B % "34.5", "34", 0.0, "decimal near the integer"),
    (B % "340", "34", 0.0, "digit appended"),
    # several boxes: the last one is the answer
    ("First \\boxed{3}, but recheck: \\boxed{4}", "4", 1.0, "last of two boxes is right"),
    ("\\boxed{4} ... no, \\boxed{3}", "4", 0.0, "last of two boxes is wrong"),
    ("\\boxed{\\boxed{7}}", "7", 1.0, "nested box"),
    ("roots: \\boxed{2} and \\boxed{3}", "2, 3", 0.0, "two boxes are not a list"),
    # the DAPO answer line
    ("Step 1 ... \nAnswer: 34", "34", 1.0, "DAPO answer line"),
    ("Answer: $\\frac{1}{2}$", "0.5", 1.0, "answer line in dollars"),
    ("**Answer:** 12", "12", 1.0, "bold answer label"),
    ("Answer: 35", "34", 0.0, "wrong answer line"),
    ("\\boxed{5}\nAnswer: 6", "5", 0.0, "answer line after the box wins"),
    ("Answer: 6 so \\boxed{5}", "5", 1.0, "box after the answer line wins"),
    # malformed, empty, missing
    ("", "3", 0.0, "empty response"),
    ("The answer is 3.", "3", 0.0, "no box and no answer line"),
    ("\\boxed{}", "3", 0.0, "empty box"),
    ("\\boxed{3", "3", 0.0, "box never closed (cut response)"),
    (B % "\\frac{1}{", "\\frac{1}{2}", 0.0, "malformed fraction"),
    (B % "\\sqrt{}", "0", 0.0, "empty sqrt"),
    (B % "}{", "3", 0.0, "stray braces"),
    (B % "3 \\over", "3", 0.0, "dangling over"),
    (B % "\\frac{a}{b}", "\\frac{a}{b}", 1.0, "symbolic fraction"),
    ("\\boxed{\\text{no solution}}", "3", 0.0, "text instead of a number"),
]


def test_table_is_large_and_varied():
    assert len(TABLE) >= 60
    assert {acc for _, _, acc, _ in TABLE} == {0.0, 1.0}
    assert len({why for *_, why in TABLE}) == len(TABLE)


def test_table_scores_correctly_through_the_manager():
    responses, gts, expected, _ = zip(*TABLE)
    scored = RewardManager().score(list(responses), None, list(gts), ["HuggingFaceH4/MATH-500"] * len(TABLE),
                                   [None] * len(TABLE))
    wrong = [(why, r, gt, got) for (r, gt, _, why), want, got in zip(TABLE, expected, scored.acc.tolist())
             if got != want]
    assert wrong == [], wrong
    assert scored.num_errors == 0
    assert scored.seq_reward.tolist() == scored.acc.tolist()  # MATH names score 1 / 0
    has_answer = sum(e["has_answer"] for e in scored.extras) / len(TABLE)
    assert scored.metrics["reward/extra/has_answer"] == pytest.approx(has_answer)


def test_dapo_and_aime_names_score_plus_minus_one():
    responses = ["Answer: 34", "Answer: 35", "\\boxed{34}", "nothing"]
    for source in ("math_dapo", "aime24", "aime_2025", "aime"):
        scored = RewardManager().score(responses, None, ["34"] * 4, [source] * 4, [None] * 4)
        assert scored.seq_reward.tolist() == [1.0, -1.0, 1.0, -1.0], source
        assert scored.acc.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_registered_names_match_verl():
    for name in ("math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500"):
        assert get_reward_fn(name) is math_reward
    for name in ("math_dapo", "aime24", "aime_2024", "aime2025"):
        assert get_reward_fn(name) is dapo_math_reward
    assert "aime*" in registered_rewards() and "math_dapo" in registered_rewards()


def test_single_response_call_and_missing_ground_truth():
    assert math_reward("\\boxed{\\dfrac{1}{2}}", "0.5", {}) == {"score": 1.0, "acc": 1.0, "has_answer": 1.0}
    with pytest.raises(ValueError, match="needs a ground truth"):
        math_reward("\\boxed{1}", None, {})
    scored = RewardManager(on_error="zero").score(["\\boxed{1}", "\\boxed{1}"], None, [None, "1"],
                                                  ["math", "math"], [None, None])
    assert scored.num_errors == 1 and scored.acc.tolist() == [0.0, 1.0]


def test_missing_math_verify_is_one_clear_error(monkeypatch):
    import importlib.util

    from gspo.rewards import RewardError
    from gspo.rewards.math.reward import check_math_verify

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
    with pytest.raises(RewardError, match=r"pip install 'gspo\[math\]'"):
        math_reward.preflight()
    with pytest.raises(RewardError, match="math-verify"):  # not scored 0 under on_error=zero: it is no answer's fault
        RewardManager(on_error="zero").score([r"\boxed{\frac12}"], None, ["0.5x"], ["math"], [None])
    assert check_math_verify is math_reward.preflight
