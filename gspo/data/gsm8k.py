"""Prepare GSM8K for training: the original JSONL release -> prompt Parquet files (``gspo data gsm8k``).

Input: ``DIR/train.jsonl`` and ``DIR/test.jsonl`` of https://github.com/openai/grade-school-math, one
``{"question": str, "answer": str}`` per line, the answer ending in ``#### N``.
Output: ``train.parquet`` / ``test.parquet`` with one row per question, in input order::

    prompt        [{"role": "user", "content": question + INSTRUCTION}]   (chat messages)
    ground_truth  "N" with thousands separators removed                      (what gsm8k_reward compares to)
    data_source   "openai/gsm8k"                                            (selects the registered reward)
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": "N"}                    (verl's layout, for compatibility)
    extra_info    {"split": "train" | "test", "index": 0-based position among the split's rows}

The prompt text matches verl's ``examples/data_preprocess/gsm8k.py``, so results are comparable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gspo.data.errors import DataError
from gspo.data.loading import load_rows_with_sources

DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = ' Let\'s think step by step and output the final answer after "####".'
SPLITS = ("train", "test")
SOURCE_URL = "https://github.com/openai/grade-school-math"

# The reference answer is the last line of a GSM8K solution: "#### 1,234" (integers in the released data).
_FINAL_ANSWER = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


def parse_final_answer(answer: str) -> str | None:
    """The number after the trailing ``####``, commas removed; None when the solution does not end in one.

    >>> parse_final_answer("48 / 2 = 24\\n#### 1,072")
    '1072'
    >>> parse_final_answer("no final answer") is None
    True
    """
    match = _FINAL_ANSWER.search(answer)
    return match.group(1).replace(",", "") if match else None


def make_row(question: str, answer: str, *, split: str, index: int) -> dict:
    """One prepared row (see the module docstring); ``answer`` must end in ``#### N``."""
    ground_truth = parse_final_answer(answer)
    if ground_truth is None:
        raise ValueError(f"answer does not end in '#### N': {answer[-80:]!r}")
    return {
        "prompt": [{"role": "user", "content": question + INSTRUCTION}],
        "ground_truth": ground_truth,
        "data_source": DATA_SOURCE,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": index},
    }


def convert_split(path: str | os.PathLike, split: str) -> list[dict]:
    """All rows of one original GSM8K JSONL file; a malformed line raises :class:`DataError` citing ``file:line``."""
    raw_rows, sources = load_rows_with_sources(path)  # JSON errors already name file:line
    rows = []
    for index, (raw, where) in enumerate(zip(raw_rows, sources)):
        for key in ("question", "answer"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise DataError(f"{where}: missing or empty string field {key!r}; keys: {sorted(map(str, raw))}")
        try:
            rows.append(make_row(raw["question"], raw["answer"], split=split, index=index))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    """Write ``rows`` atomically (a temporary file renamed into place), so a crash never leaves half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def prepare_gsm8k(input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> dict[str, int]:
    """Convert ``input_dir/{train,test}.jsonl`` into ``output_dir/{train,test}.parquet``; returns rows per split.

    Both splits are parsed before anything is written, so a malformed file leaves no partial output.
    """
    source, target = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    missing = [str(source / f"{split}.jsonl") for split in SPLITS if not (source / f"{split}.jsonl").is_file()]
    if missing:
        raise DataError(f"--input: GSM8K file(s) not found: {', '.join(missing)}; expected the original JSONL "
                        f"release (train.jsonl, test.jsonl) from {SOURCE_URL} (grade_school_math/data)")
    converted = {split: convert_split(source / f"{split}.jsonl", split) for split in SPLITS}
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--output: cannot create {target}: {exc}") from exc
    for split, rows in converted.items():
        write_parquet(rows, target / f"{split}.parquet")
    return {split: len(rows) for split, rows in converted.items()}
