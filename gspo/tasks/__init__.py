"""Built-in tasks. ``addition`` is the embedded default task of ``gspo train``; ``sums`` is shaped like math RL."""

from gspo.tasks.addition import (
    ADDITION_ASSET_DIR,
    build_addition_model_config,
    build_addition_tokenizer,
    load_addition_rows,
    make_addition_rows,
    make_addition_splits,
    max_response_tokens,
)

__all__ = [
    "ADDITION_ASSET_DIR",
    "build_addition_model_config",
    "build_addition_tokenizer",
    "load_addition_rows",
    "make_addition_rows",
    "make_addition_splits",
    "max_response_tokens",
]
