"""A small synthetic GSM8K-format dataset (never the real one): word problems whose ``answer`` has GSM8K's
calculator annotations ``<<a+b=c>>`` and ends with ``#### N`` (thousands separators included), so the recipe
tests and `gspo data gsm8k` run in CI, where ../shared/data/gsm8k does not exist."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path


def real_gsm8k_dir() -> Path | None:
    """The real GSM8K copy (train.jsonl / test.jsonl) where this machine has one: $GSPO_GSM8K_DIR, else
    ../shared/data/gsm8k beside the repository; None elsewhere. Tests on the real copy are only collected where it
    exists (never collected-then-skipped): the fixture below runs the same checks everywhere."""
    for folder in (os.environ.get("GSPO_GSM8K_DIR"), Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"):
        if folder and (Path(folder) / "train.jsonl").is_file() and (Path(folder) / "test.jsonl").is_file():
            return Path(folder)
    return None

NAMES = ("Tom", "Ana", "Li", "Sam", "Priya", "Omar")
ITEMS = ("apples", "stamps", "marbles", "books", "coins")


def gsm8k_row(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, price = rng.randint(2, 60), rng.randint(2, 60), rng.randint(2, 40)
    total, cost = a + b, (a + b) * price
    question = (f"{name} has {a} {item} and buys {b} more. Each of the {item} is worth ${price}. "
                f"How many dollars are all of {name}'s {item} worth?")
    answer = (f"{name} has {a} + {b} = <<{a}+{b}={total}>>{total} {item}.\n"
              f"They are worth {total} * {price} = <<{total}*{price}={cost}>>{cost} dollars.\n#### {cost:,}")
    return {"question": question, "answer": answer}


def write_gsm8k_fixture(folder: Path, num_train: int = 64, num_test: int = 16, seed: int = 0) -> Path:
    """``folder/train.jsonl`` and ``folder/test.jsonl`` in the original GSM8K layout; returns ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("test", num_test)):
        rows = [gsm8k_row(rng) for _ in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder
