r"""Prepare MATH-style data for training and eval: published files -> prompt Parquet (``gspo data math``).

Input formats, with their field names as published:

    math      Hendrycks MATH as lighteval/MATH, DigitalLearningGmbH/MATH-lighteval or EleutherAI/hendrycks_math
              publish it (Parquet / JSONL): problem, solution (ending in \boxed{answer}), level, type.
              The answer is the last \boxed{} of the solution.
    math500   HuggingFaceH4/MATH-500 (test.jsonl): problem, solution, answer, subject, level, unique_id.
    dapo17k   BytedTsinghua-SIA/DAPO-Math-17k (Parquet, verl's layout): prompt (chat messages wrapping the problem
              in DAPO's "Answer: $Answer" instruction), reward_model.ground_truth, data_source, extra_info.index.
              The published file repeats each problem many times; repeats are dropped (first one kept).

Output: ``DIR/<split>.parquet``, one row per problem, in input order::

    prompt        [{"role": "user", "content": problem + INSTRUCTION}]          (chat messages)
    ground_truth  the reference answer, LaTeX as published                      (what the math reward compares to)
    data_source   "DigitalLearningGmbH/MATH-lighteval" | "HuggingFaceH4/MATH-500" | "math_dapo"
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": ...}                        (verl's layout)
    extra_info    {"split", "index", and level / type / subject / unique_id where published}

INSTRUCTION is verl's MATH preprocessing instruction (``examples/data_preprocess/math_dataset.py``), so numbers are
comparable; DAPO problems get it too (``--instruction dapo`` keeps DAPO's own "Answer:" wrapper instead). The
data_source picks the reward: 1 / 0 for the MATH names, DAPO's 1 / -1 for math_dapo.
"""

from __future__ import annotations

import os
from pathlib import Path

from gspo.data.errors import DataError
from gspo.data.gsm8k import write_parquet
from gspo.data.loading import load_rows_with_sources
from gspo.rewards.math.extract import boxed_answers

INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the form "
               "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
FORMATS = {  # format -> (data_source, default split, where it is published)
    "math": ("DigitalLearningGmbH/MATH-lighteval", "train",
             "https://huggingface.co/datasets/DigitalLearningGmbH/MATH-lighteval"),
    "math500": ("HuggingFaceH4/MATH-500", "test", "https://huggingface.co/datasets/HuggingFaceH4/MATH-500"),
    "dapo17k": ("math_dapo", "train", "https://huggingface.co/datasets/BytedTsinghua-SIA/DAPO-Math-17k"),
}
INSTRUCTIONS = ("boxed", "dapo")
_KEPT_METADATA = ("level", "type", "subject", "unique_id")


def last_boxed(solution: str) -> str | None:
    r"""The content of the last closed ``\boxed{}`` in a MATH solution; None without one.

    >>> last_boxed(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    """
    closed = [content for _, content in boxed_answers(solution) if content is not None and content.strip()]
    return closed[-1].strip() if closed else None


def _text(raw: dict, key: str, where: object) -> str:
    value = raw.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # DAPO and AIME answers are sometimes stored as numbers
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: missing or empty field {key!r}; keys: {sorted(map(str, raw))}")
    return value


def dapo_problem(raw: dict, where: object) -> str:
    """The problem text inside a DAPO-Math-17k row's prompt (DAPO's instruction wrapper removed)."""
    prompt = raw.get("prompt")
    if not isinstance(prompt, list) or not prompt or not isinstance(prompt[0], dict):
        raise DataError(f"{where}: 'prompt' must be a list of chat messages (DAPO-Math-17k's layout); "
                        f"keys: {sorted(map(str, raw))}")
    content = _text(prompt[-1], "content", where)
    return content.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX).strip()


def parse_row(raw: dict, fmt: str, where: object) -> tuple[str, str, dict]:
    """(problem, ground truth, published metadata) of one input row in format ``fmt``."""
    if fmt == "math":
        problem, solution = _text(raw, "problem", where), _text(raw, "solution", where)
        answer = last_boxed(solution)
        if answer is None:
            raise DataError(f"{where}: solution has no \\boxed{{answer}}: {solution[-80:]!r}")
    elif fmt == "math500":
        problem, answer = _text(raw, "problem", where), _text(raw, "answer", where)
    else:
        reward_model = raw.get("reward_model")
        if not isinstance(reward_model, dict):
            raise DataError(f"{where}: missing 'reward_model' object with the ground truth (DAPO-Math-17k's "
                            f"layout); keys: {sorted(map(str, raw))}")
        problem, answer = dapo_problem(raw, where), _text(reward_model, "ground_truth", where)
    metadata = {key: raw[key] for key in _KEPT_METADATA if raw.get(key) is not None}
    return problem, answer.strip(), metadata


def convert_file(path: str | os.PathLike, fmt: str, split: str, instruction: str = "boxed") -> tuple[list[dict], int]:
    """Prepared rows of one published file and the number of repeated problems dropped (DAPO-Math-17k)."""
    if fmt not in FORMATS:
        raise DataError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if instruction not in INSTRUCTIONS:
        raise DataError(f"--instruction: {instruction!r} is not one of {', '.join(INSTRUCTIONS)}")
    raw_rows, sources = load_rows_with_sources(path)
    data_source = FORMATS[fmt][0]
    rows, seen = [], set()
    for raw, where in zip(raw_rows, sources):
        problem, answer, metadata = parse_row(raw, fmt, where)
        if fmt == "dapo17k":
            if (problem, answer) in seen:
                continue
            seen.add((problem, answer))
        content = DAPO_PREFIX + problem + DAPO_SUFFIX if instruction == "dapo" else problem + INSTRUCTION
        rows.append({"prompt": [{"role": "user", "content": content}], "ground_truth": answer,
                     "data_source": data_source, "ability": "math",
                     "reward_model": {"style": "rule", "ground_truth": answer},
                     "extra_info": {"split": split, "index": len(rows), **metadata}})
    return rows, len(raw_rows) - len(rows)


def prepare_math(input_file: str | os.PathLike, fmt: str, output_dir: str | os.PathLike, split: str | None = None,
                 instruction: str = "boxed") -> dict:
    """Convert ``input_file`` into ``output_dir/<split>.parquet`` (split: the format's default, e.g. "test" for
    math500); returns ``{"path", "rows", "duplicates_dropped"}``. The input is fully parsed before anything is
    written, so a malformed file leaves no output."""
    if fmt not in FORMATS:
        raise DataError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    source = Path(input_file).expanduser()
    if not source.is_file():
        raise DataError(f"--input: file not found: {source}; expected the {fmt} file as published at "
                        f"{FORMATS[fmt][2]} (.parquet or .jsonl)")
    split = split or FORMATS[fmt][1]
    if not split or "/" in split or split.startswith("."):
        raise DataError(f"--split: {split!r} is not a file name stem (e.g. train, test)")
    rows, dropped = convert_file(source, fmt, split, instruction)
    target = Path(output_dir).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--output: cannot create {target}: {exc}") from exc
    write_parquet(rows, target / f"{split}.parquet")
    return {"path": str(target / f"{split}.parquet"), "rows": len(rows), "duplicates_dropped": dropped}
