r"""Final-answer extraction: the last \boxed{} / \fbox{} / "Answer:" line, balanced braces, cleaning."""

from __future__ import annotations

import pytest

from gspo.rewards.math.extract import boxed_answers, clean_answer, extract_final_answer


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{42}", "42"),
    (r"so the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
    (r"\fbox{7}", "7"),
    (r"\boxed {7}", "7"),  # a space before the brace
    (r"\boxed 7", "7"),  # the space form
    (r"first \boxed{1}, then \boxed{2}", "2"),
    (r"\boxed{\boxed{3}}", "3"),  # a box in a box
    (r"\boxed{\boxed{3} + 1}", r"\boxed{3} + 1"),  # not only a box: kept for the verifier
    (r"\boxed{3} and a cut-off \boxed{4", None),  # the last box never closes
    (r"\boxed{}", None),
    (r"\boxed{5} then \boxed{  }", "5"),  # an empty box states nothing
    ("Answer: 34", "34"),
    ("Reasoning.\nAnswer: $-7$\n", "-7"),
    ("**Answer:** 12", "12"),
    ("**Answer**: 12", "12"),
    ("answer: x = 2.", "x = 2"),
    ("Final Answer: 9", "9"),
    ("Answer:\n\\boxed{5}", "5"),  # a bare label, the box on the next line
    ("Answer: 3\nAnswer: 4", "4"),
    (r"\boxed{3}" + "\nAnswer: 4", "4"),  # the later statement wins
    (r"Answer: 4, i.e. \boxed{3}", "3"),
    ("the answer is 5", None),  # no marker
    ("", None),
    ("Reanswer: 5", None),  # not the word "answer"
    (r"\boxed{" + "1" * 1001 + "}", None),  # runaway "answer"
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("raw, expected", [
    (" $5$ ", "5"), ("$$5$$", "5"), (r"\(5\)", "5"), (r"\[5\]", "5"), ("**5**", "5"), ("5.", "5"),
    ("$5$.", "5"), ("3.5", "3.5"), ("$5", "5"), ("  ", ""),
])
def test_clean_answer(raw, expected):
    assert clean_answer(raw) == expected


def test_boxed_answers_reports_positions_and_unclosed_boxes():
    text = r"a \boxed{1} b \boxed{x^{2}} c \boxed{"
    assert boxed_answers(text) == [(2, "1"), (14, "x^{2}"), (30, None)]
