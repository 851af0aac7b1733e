"""Turning loaded rows into tokenised prompts.

A row carries the prompt under ``prompt_key`` as plain text or as a list of
chat messages (``[{"role": ..., "content": ...}]``), plus optional
``ground_truth`` (or verl's nested ``reward_model.ground_truth``),
``data_source`` and ``extra_info``. Prompts are rendered (chat template or
plain text), tokenised eagerly, and length-checked; they are never truncated.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gspo.data.errors import DataError
from gspo.data.loading import PathLike, RowSource, load_rows_with_sources

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_MODES = ("auto", "always", "never")
_TOKENIZE_CHUNK = 1024


@dataclass
class PromptItem:
    """One prompt, ready for generation.

    Attributes:
        index: position in the dataset (after overlong filtering), 0-based.
        prompt_ids: token ids of the rendered prompt, length <= max_prompt_length.
        prompt_text: the rendered prompt (chat template applied when used).
        ground_truth: reference answer as a string (numbers are cast), or None.
        data_source: selects the reward function; "unknown" when the row has none.
        extra_info: the row's ``extra_info`` dict plus ``"row_index"``, the
            row's 0-based position among the loaded rows (before filtering).
    """

    index: int
    prompt_ids: list[int]
    prompt_text: str
    ground_truth: str | None
    data_source: str
    extra_info: dict = field(default_factory=dict)


class PromptDataset(Sequence[PromptItem]):
    """Tokenised prompts built from rows (see module docstring).

    Args:
        rows: row dicts, e.g. from :func:`gspo.data.load_rows`.
        tokenizer: a Hugging Face tokenizer.
        prompt_key: row key holding the prompt.
        max_prompt_length: limit in tokens; longer prompts are dropped or rejected, never cut.
        filter_overlong_prompts: drop overlong prompts (with a logged warning) instead of raising.
        apply_chat_template: "auto" (use the tokenizer's chat template if it has one),
            "always" (require one) or "never" (plain text; messages joined by newlines).
        sources: optional provenance per row (parallel to ``rows``) used in error messages.

    Attributes:
        items: the kept :class:`PromptItem` objects, in row order.
        num_dropped: how many overlong prompts were filtered out.
        uses_chat_template: whether prompts were rendered with the chat template.

    Raises:
        DataError: a row without a usable prompt, an overlong prompt (when not
            filtering), a missing chat template under "always", or no prompt left.
    """

    def __init__(
        self,
        rows: Sequence[dict],
        tokenizer: Any,
        *,
        prompt_key: str = "prompt",
        max_prompt_length: int,
        filter_overlong_prompts: bool = False,
        apply_chat_template: str = "auto",
        sources: Sequence[RowSource | str] | None = None,
    ) -> None:
        if apply_chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(
                f"apply_chat_template must be one of {CHAT_TEMPLATE_MODES}, got {apply_chat_template!r}"
            )
        if isinstance(max_prompt_length, bool) or not isinstance(max_prompt_length, int) or max_prompt_length <= 0:
            raise ValueError(f"max_prompt_length must be a positive int, got {max_prompt_length!r}")
        if sources is not None and len(sources) != len(rows):
            raise ValueError(f"sources has {len(sources)} entries but there are {len(rows)} rows")
        if not rows:
            raise DataError("no rows to build prompts from")

        has_template = bool(getattr(tokenizer, "chat_template", None))
        if apply_chat_template == "always" and not has_template:
            raise DataError(
                "apply_chat_template='always' but the tokenizer has no chat_template; "
                "set one on the tokenizer or use 'auto'/'never'"
            )
        self.uses_chat_template = apply_chat_template == "always" or (
            apply_chat_template == "auto" and has_template
        )

        def where(i: int) -> str:
            return str(sources[i]) if sources is not None else f"row {i}"

        texts: list[str] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(f"{where(i)}: row must be a dict, got {type(row).__name__}")
            prompt = row.get(prompt_key)
            if prompt is None:
                raise DataError(f"{where(i)}: {_missing_prompt_hint(row, prompt_key)}")
            texts.append(self._render(prompt, tokenizer, where(i)))

        # The chat template already contains the special tokens (BOS etc.); adding them again would duplicate.
        add_special = not self.uses_chat_template
        all_ids: list[list[int]] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = texts[start : start + _TOKENIZE_CHUNK]
            all_ids.extend(list(ids) for ids in tokenizer(chunk, add_special_tokens=add_special)["input_ids"])

        self.items: list[PromptItem] = []
        self.where: list[str] = []  # per item: the file:line (or row) it came from, for later error messages
        self.num_dropped = 0
        for i, (row, text, ids) in enumerate(zip(rows, texts, all_ids)):
            if not ids:
                raise DataError(f"{where(i)}: prompt renders to zero tokens")
            if len(ids) > max_prompt_length:
                if filter_overlong_prompts:
                    self.num_dropped += 1
                    continue
                raise DataError(
                    f"{where(i)}: prompt is {len(ids)} tokens, longer than max_prompt_length={max_prompt_length}; "
                    "prompts are never truncated: raise max_prompt_length or set filter_overlong_prompts=True"
                )
            extra_info = _extra_info(row, where(i))
            extra_info["row_index"] = i
            self.where.append(where(i))
            self.items.append(
                PromptItem(
                    index=len(self.items),
                    prompt_ids=ids,
                    prompt_text=text,
                    ground_truth=_ground_truth(row, where(i)),
                    data_source=str(row.get("data_source") or "unknown"),
                    extra_info=extra_info,
                )
            )
        if self.num_dropped:
            logger.warning(
                "dropped %d of %d prompts longer than max_prompt_length=%d tokens",
                self.num_dropped,
                len(rows),
                max_prompt_length,
            )
        if not self.items:
            raise DataError(
                f"all {len(rows)} prompts are longer than max_prompt_length={max_prompt_length} tokens; nothing left"
            )

    @classmethod
    def from_files(cls, paths: PathLike | Sequence[PathLike], tokenizer: Any, **kwargs: Any) -> PromptDataset:
        """Load rows with :func:`gspo.data.load_rows_with_sources` and build the dataset (errors cite file:line)."""
        rows, sources = load_rows_with_sources(paths)
        return cls(rows, tokenizer, sources=sources, **kwargs)

    def _render(self, prompt: Any, tokenizer: Any, where: str) -> str:
        messages = _as_messages(prompt, where)
        if not self.uses_chat_template:
            return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in messages)
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # jinja templates raise arbitrary exceptions (e.g. unsupported roles)
            raise DataError(f"{where}: chat template failed: {type(e).__name__}: {e}") from e
        if not isinstance(text, str):
            raise DataError(f"{where}: chat template returned {type(text).__name__}, expected str")
        return text

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PromptItem:  # type: ignore[override]
        return self.items[index]

    def __iter__(self) -> Iterator[PromptItem]:
        return iter(self.items)


def _missing_prompt_hint(row: dict, prompt_key: str) -> str:
    """Why a row has no prompt, and what to do: the original GSM8K JSONL needs preparing; else name the key."""
    keys = sorted(map(str, row))
    if {"question", "answer"} <= set(row):
        return (f"row has no {prompt_key!r} column but has 'question' and 'answer': this looks like the original "
                f"GSM8K JSONL; prepare it with `gspo data gsm8k --input DIR --output DIR` and use DIR/train.parquet")
    return (f"row has no prompt under key {prompt_key!r}; row keys: {keys}; set the prompt column with "
            f"data.prompt_key=<one of them>")


def _as_messages(prompt: Any, where: str) -> list[dict]:
    """The prompt as chat messages; plain text becomes a single user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise DataError(
            f"{where}: prompt must be a string or a non-empty list of chat messages, got {type(prompt).__name__}"
        )
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(
                f"{where}: message {j} must be an object with string 'role' and 'content', got {m!r:.200}"
            )
    return list(prompt)


def _ground_truth(row: dict, where: str) -> str | None:
    gt = row.get("ground_truth")
    if gt is None:
        reward_model = row.get("reward_model")
        if isinstance(reward_model, dict):
            gt = reward_model.get("ground_truth")
        elif reward_model is not None:
            raise DataError(f"{where}: 'reward_model' must be an object, got {type(reward_model).__name__}")
    if gt is None or isinstance(gt, str):
        return gt
    if isinstance(gt, bool) or not isinstance(gt, numbers.Real):
        raise DataError(f"{where}: ground_truth must be a string or a number, got {type(gt).__name__}")
    if isinstance(gt, numbers.Integral):
        return str(int(gt))
    value = float(gt)
    if not math.isfinite(value):
        raise DataError(f"{where}: ground_truth is {value}")
    # Integer-valued floats (e.g. ints promoted by pandas) compare as "72", not "72.0".
    return str(int(value)) if value.is_integer() else repr(value)


def _extra_info(row: dict, where: str) -> dict:
    extra = row.get("extra_info")
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise DataError(f"{where}: 'extra_info' must be an object, got {type(extra).__name__}")
    return dict(extra)
