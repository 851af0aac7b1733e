"""Embedded default task: multi-digit addition with a tiny Qwen2-architecture model.

The prompt is ``"37+48="`` and the expected response is ``"85"`` followed by EOS;
the reward is 1 for the exact sum. Everything here is built locally (no Hub access):

* :func:`build_addition_tokenizer` - a character-level tokenizer made with the
  ``tokenizers`` library (one id per character, ``<pad>`` = 0, ``<eos>`` = 1,
  no BOS, nothing added by ``add_special_tokens``).
* :func:`build_addition_model_config` - a tiny :class:`transformers.Qwen2Config`.
* :func:`make_addition_rows` / :func:`make_addition_splits` - deterministic data
  rows ``{"prompt", "ground_truth", "data_source"}`` with a held-out validation set
  whose prompts never appear in training.
* :data:`ADDITION_ASSET_DIR` - the package folder holding the shipped warm-started
  checkpoint, tokenizer and ``train.jsonl`` / ``val.jsonl``
  (built by ``scripts/build_addition_checkpoint.py``; see its ``README.md``);
  :func:`load_addition_rows` reads those splits.

The reward (exact match of the stripped response) lives in :mod:`gspo.rewards.addition`.

Defaults: operands uniform in ``[0, 1000)`` (up to 3 digits), so a response is at
most 4 digits + EOS = :func:`max_response_tokens` (5) tokens.

>>> tok = build_addition_tokenizer()
>>> tok("37+48=").input_ids == [tok.convert_tokens_to_ids(c) for c in "37+48="]
True
>>> tok.pad_token_id, tok.eos_token_id
(0, 1)
>>> train, val = make_addition_splits(seed=0, num_digits=2, num_val=8)
>>> sorted(val[0])
['data_source', 'ground_truth', 'prompt']
>>> a, b = val[0]["prompt"][:-1].split("+")
>>> int(a) + int(b) == int(val[0]["ground_truth"])
True
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

ADDITION_ASSET_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "addition"
"""Package folder with the shipped checkpoint (``model.safetensors``, ``config.json``,
tokenizer files, ``train.jsonl``, ``val.jsonl``, ``README.md``)."""

DATA_SOURCE = "addition"

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2
CHARACTERS = "0123456789+="  # ids 3 .. 14

# Defaults used to build the shipped checkpoint (scripts/build_addition_checkpoint.py).
DEFAULT_SEED = 0
DEFAULT_NUM_DIGITS = 3
DEFAULT_NUM_VAL = 512
DEFAULT_NUM_TRAIN = 6144
MODEL_MAX_LENGTH = 32

__all__ = [
    "ADDITION_ASSET_DIR",
    "DATA_SOURCE",
    "DEFAULT_NUM_DIGITS",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "build_addition_model_config",
    "build_addition_tokenizer",
    "make_addition_rows",
    "load_addition_rows",
    "make_addition_splits",
    "max_response_tokens",
    "read_jsonl",
    "write_jsonl",
]


def build_addition_tokenizer(model_max_length: int = MODEL_MAX_LENGTH):
    """Character-level tokenizer over ``0123456789+=``.

    Vocabulary: ``<pad>`` (0), ``<eos>`` (1), ``<unk>`` (2), then the 12 characters
    (3..14). Every character is one token, nothing is added around the text
    (no BOS/EOS), and ``decode(..., skip_special_tokens=True)`` round-trips.
    ``padding_side`` is ``"left"`` (what batched generation needs). There is no
    chat template: prompts are plain text.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Every single character becomes its own "word" (whitespace included -> <unk>).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()  # concatenate tokens without spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return tok


def build_addition_model_config(
    vocab_size: int,
    *,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    bos_token_id: int | None = None,
    hidden_size: int = 128,
    num_hidden_layers: int = 3,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 384,
    max_position_embeddings: int = MODEL_MAX_LENGTH,
):
    """Tiny Qwen2 config for the addition task (~0.6M parameters by default).

    ``bos_token_id`` defaults to the EOS id (as in Qwen2); the tokenizer never adds it.
    """
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=True,
        use_cache=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id if bos_token_id is None else bos_token_id,
    )


def _row(a: int, b: int) -> dict:
    return {"prompt": f"{a}+{b}=", "ground_truth": str(a + b), "data_source": DATA_SOURCE}


def max_response_tokens(num_digits: int = DEFAULT_NUM_DIGITS) -> int:
    """Longest response in tokens: the sum has at most ``num_digits + 1`` digits, plus EOS."""
    return num_digits + 2


def make_addition_rows(
    num_rows: int,
    *,
    seed: int = DEFAULT_SEED,
    num_digits: int = DEFAULT_NUM_DIGITS,
    exclude: Iterable[str] = (),
) -> list[dict]:
    """``num_rows`` distinct addition rows, operands uniform in ``[0, 10**num_digits)``.

    Prompts in ``exclude`` are never produced. Deterministic for ``seed``. If fewer
    than ``num_rows`` distinct prompts are available, all of them are returned
    (shuffled).
    """
    if num_digits < 1:
        raise ValueError("num_digits must be >= 1")
    hi = 10**num_digits
    excluded = set(exclude)
    rng = random.Random(f"addition-{seed}-{num_digits}")
    space = hi * hi
    if space - len(excluded) <= 4 * num_rows:
        # Small space: enumerate everything, shuffle, take the first num_rows.
        rows = [_row(a, b) for a in range(hi) for b in range(hi)]
        rows = [r for r in rows if r["prompt"] not in excluded]
        rng.shuffle(rows)
        return rows[:num_rows]
    rows, seen = [], set(excluded)
    while len(rows) < num_rows:
        a, b = rng.randrange(hi), rng.randrange(hi)
        r = _row(a, b)
        if r["prompt"] in seen:
            continue
        seen.add(r["prompt"])
        rows.append(r)
    return rows


def make_addition_splits(
    seed: int = DEFAULT_SEED,
    num_digits: int = DEFAULT_NUM_DIGITS,
    num_val: int = DEFAULT_NUM_VAL,
    num_train: int = DEFAULT_NUM_TRAIN,
) -> tuple[list[dict], list[dict]]:
    """Deterministic ``(train_rows, val_rows)``; no val prompt appears in train."""
    val = make_addition_rows(num_val, seed=seed, num_digits=num_digits)
    train = make_addition_rows(
        num_train, seed=seed + 1_000_003, num_digits=num_digits, exclude=[r["prompt"] for r in val]
    )
    return train, val


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_addition_rows(split: str = "train", asset_dir: str | Path | None = None) -> list[dict]:
    """Rows of the shipped ``train`` or ``val`` split (``{asset_dir}/{split}.jsonl``)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return read_jsonl(Path(asset_dir or ADDITION_ASSET_DIR) / f"{split}.jsonl")
