r"""Finding the final answer of a math response: the last ``\boxed{...}`` or ``Answer: ...`` line.

Pure string code (no math-verify, no processes), so it runs in the trainer process and in doctests.

The final answer is the last one the response states: of all ``\boxed{...}`` / ``\fbox{...}`` groups (balanced
braces) and ``Answer: ...`` lines (DAPO-Math-17k's format), the one that starts last. A box inside an answer line
starts after the line's ``Answer:``, so ``Answer: \boxed{5}`` gives ``5``. An empty box or a bare ``Answer:``
states nothing (the answer before it counts); a last box whose braces never close (a response cut at the length
limit) means no answer. Phrases without these markers ("the answer is 5") are not read: the prompts ask for a box.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "\boxed 5": the space form some models write; the argument runs to the next space, "$" or end.
_BOX_SPACE_FORM = re.compile(r"\\boxed +([^\s${}]+)")
# DAPO's reward reads r"(?i)Answer\s*:\s*([^\n]+)"; the word boundary keeps "Reanswer:" out, and markdown bold
# around the label ("**Answer:** 5", "**Answer**: 5") is allowed.
_ANSWER_LINE = re.compile(r"(?i)\banswer\s*(?:\*\*)?\s*:\s*(?:\*\*)?[ \t]*([^\n]*)")
_MAX_ANSWER_CHARS = 1000  # a longer "answer" is a runaway generation, not an answer; never worth verifying


def _balanced_group(text: str, open_brace: int) -> str | None:
    """The text between ``text[open_brace] == "{"`` and its matching ``}``; None when it never closes.

    >>> _balanced_group("{a{b}c}d", 0), _balanced_group("{a{b}", 0)
    ('a{b}c', None)
    """
    depth = 0
    for i in range(open_brace, len(text)):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue  # an escaped brace ("\{") does not nest; the next iteration skips over it below
        if char in "{}" and i > open_brace and text[i - 1] == "\\":
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1:i]
    return None


def boxed_answers(text: str) -> list[tuple[int, str | None]]:
    r"""Every ``\boxed{...}`` / ``\fbox{...}`` / ``\boxed x`` in ``text`` as (start offset, content or None).

    Content is None for a box that never closes. Nested boxes are reported once, as the outer box.

    >>> boxed_answers(r"\boxed{1} then \fbox{\frac{1}{2}} and \boxed{3")
    [(0, '1'), (15, '\\frac{1}{2}'), (38, None)]
    >>> boxed_answers(r"so \boxed 7$.")
    [(3, '7')]
    """
    found: list[tuple[int, str | None]] = []
    end_of_last = -1
    for match in _BOX_COMMANDS.finditer(text):
        if match.start() < end_of_last:
            continue  # inside the previous box
        content = _balanced_group(text, match.end() - 1)
        found.append((match.start(), content))
        end_of_last = match.end() + (len(content) + 1 if content is not None else len(text))
    for match in _BOX_SPACE_FORM.finditer(text):
        found.append((match.start(), match.group(1)))
    return sorted(found)


def clean_answer(answer: str) -> str:
    r"""Strip what surrounds an answer but is not part of it: whitespace, ``$`` / ``\(...\)`` delimiters,
    markdown bold and a final full stop.

    >>> clean_answer(r" $\frac{1}{2}$. "), clean_answer("**42**"), clean_answer(r"\( x=3 \)"), clean_answer("3.5")
    ('\\frac{1}{2}', '42', 'x=3', '3.5')
    """
    text = answer.strip()
    previous = None
    while text != previous:
        previous = text
        text = text.strip().removesuffix(".").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left):len(text) - len(right)]
        if text.count("$") == 1:  # "Answer: $5" or "5$" (an unpaired delimiter left over from a cut)
            text = text.replace("$", "")
    return text.strip()


def extract_final_answer(text: str) -> str | None:
    r"""The response's final answer (see the module docstring), cleaned; None when it states none.

    >>> extract_final_answer(r"First \boxed{2}, no wait: \boxed{\dfrac{1}{2}}.")
    '\\dfrac{1}{2}'
    >>> extract_final_answer("Working...\nAnswer: $34$")
    '34'
    >>> extract_final_answer(r"Answer: 3, so the total is \boxed{5}")
    '5'
    >>> extract_final_answer(r"\boxed{5} ... Answer: 6")
    '6'
    >>> extract_final_answer(r"cut off at \boxed{\frac{1}{2") is None, extract_final_answer(r"\boxed{4} \boxed{ }")
    (True, '4')
    >>> extract_final_answer("no answer here") is None
    True
    """
    candidates = boxed_answers(text)
    candidates += [(m.start(), m.group(1)) for m in _ANSWER_LINE.finditer(text)]
    for _, answer in sorted(candidates, reverse=True):
        if answer is None:  # the last box never closes: the response was cut before its answer ended
            return None
        answer = clean_answer(answer)
        while answer.startswith("\\boxed{") and _balanced_group(answer, 6) == answer[7:-1]:
            answer = clean_answer(answer[7:-1])  # \boxed{\boxed{3}}
        if answer:  # an empty box or a bare "Answer:" states nothing; the answer before it counts
            return answer if len(answer) <= _MAX_ANSWER_CHARS else None
    return None
