"""`gspo eval` on math data: answers extracted like the reward, maj@k grouped by math-verify equivalence."""

from __future__ import annotations

from gspo.evaluate import extract_answer, score_prompt, voting_answers


def test_extract_answer_uses_the_math_reward_rule():
    assert extract_answer(r"so $\boxed{\dfrac12}$", "HuggingFaceH4/MATH-500", {}) == r"\dfrac12"
    assert extract_answer("work\nAnswer: 34", "math_dapo", {}) == "34"
    assert extract_answer("the answer is 3", "aime24", {}) is None


def test_maj_at_k_groups_equivalent_answers_not_strings():
    # By string "2" has the most votes (2 of 5); by value 1/2 has 3 and is right.
    answers = [r"\frac12", "0.5", "2", "2", r"\dfrac{1}{2}"]
    accs = [1.0, 1.0, 0.0, 0.0, 1.0]
    by_string = score_prompt(answers, accs, accs, k=5)
    assert (by_string["majority_answer"], by_string["maj@k"]) == ("2", 0.0)
    votes = voting_answers(answers, "HuggingFaceH4/MATH-500", k=5)
    assert votes == [r"\frac12", r"\frac12", "2", "2", r"\frac12"]
    by_value = score_prompt(votes, accs, accs, k=5)
    assert (by_value["majority_answer"], by_value["maj@k"]) == (r"\frac12", 1.0)


def test_voting_answers_only_merges_within_the_first_k_and_only_for_math():
    answers = ["[1,2)", "[1, 2)", None, "0.5", r"\frac12"]
    assert voting_answers(answers, "math", k=3) == ["[1,2)", "[1,2)", None, "0.5", r"\frac12"]
    assert voting_answers(answers, "addition", k=5) == answers
