"""Second embedded task, shaped like math RL: sums of 2 to 3 numbers of 1 to 3 digits each.

The prompt is ``"7+316+45="`` and the expected response is ``"368"`` followed by EOS; the reward is 1 for the exact
sum (the addition reward, registered under ``"sums"`` too). Difficulty spreads from one prompt to the next (``"3+4="``
against ``"987+659+478="``), so the warm-started model solves some prompts every time and fails others every time,
as a math model does on competition problems: at ``rollout.n = 8`` many groups are all-right or all-wrong, which is
what dynamic sampling filters. The tokenizer and model architecture are those of :mod:`gspo.tasks.addition` (the
characters ``0-9+=`` already cover the prompts); the shipped warm start is built by
``scripts/build_sums_checkpoint.py`` into :data:`SUMS_ASSET_DIR`.

Select it with ``gspo train --config recipe/gspo/config/sums.yaml`` (model and data at ``embedded://sums``).

>>> rows = make_sums_rows(4, seed=0)
>>> sorted(rows[0])
['data_source', 'ground_truth', 'prompt']
>>> terms = rows[0]["prompt"][:-1].split("+")
>>> 2 <= len(terms) <= 3 and sum(map(int, terms)) == int(rows[0]["ground_truth"])
True
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from gspo.tasks.addition import read_jsonl

SUMS_ASSET_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "sums"
"""Package folder with the shipped checkpoint, tokenizer files, ``train.jsonl`` and ``val.jsonl``."""

DATA_SOURCE = "sums"
DEFAULT_SEED = 0
MIN_TERMS, MAX_TERMS = 2, 3
MAX_DIGITS = 3
DEFAULT_NUM_VAL = 512
DEFAULT_NUM_TRAIN = 1024  # few enough that a 150-step run revisits each prompt several times (epochs)
MAX_PROMPT_TOKENS = MAX_TERMS * (MAX_DIGITS + 1)  # digits and "+" / "=" per term: 12
MAX_RESPONSE_TOKENS = len(str(MAX_TERMS * (10**MAX_DIGITS - 1))) + 1  # sum digits + EOS: 5


def _term(rng: random.Random) -> int:
    """Digit count uniform in 1..MAX_DIGITS, then the value uniform among numbers of that many digits."""
    digits = rng.randint(1, MAX_DIGITS)
    return rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10**digits)


def _row(terms: list[int]) -> dict:
    return {"prompt": "+".join(map(str, terms)) + "=", "ground_truth": str(sum(terms)), "data_source": DATA_SOURCE}


def make_sums_rows(num_rows: int, *, seed: int = DEFAULT_SEED, exclude: Iterable[str] = ()) -> list[dict]:
    """``num_rows`` distinct rows, none of whose prompts is in ``exclude``; deterministic for ``seed``."""
    rng = random.Random(f"sums-{seed}")
    rows, seen = [], set(exclude)
    while len(rows) < num_rows:
        row = _row([_term(rng) for _ in range(rng.randint(MIN_TERMS, MAX_TERMS))])
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    return rows


def make_sums_splits(seed: int = DEFAULT_SEED, num_val: int = DEFAULT_NUM_VAL,
                     num_train: int = DEFAULT_NUM_TRAIN) -> tuple[list[dict], list[dict]]:
    """Deterministic ``(train_rows, val_rows)``; no val prompt appears in train."""
    val = make_sums_rows(num_val, seed=seed)
    train = make_sums_rows(num_train, seed=seed + 1_000_003, exclude=[r["prompt"] for r in val])
    return train, val


def load_sums_rows(split: str = "train", asset_dir: str | Path | None = None) -> list[dict]:
    """Rows of the shipped ``train`` or ``val`` split (``{asset_dir}/{split}.jsonl``)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return read_jsonl(Path(asset_dir or SUMS_ASSET_DIR) / f"{split}.jsonl")
