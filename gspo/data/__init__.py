"""Prompt data: file loading, tokenised prompt datasets, resumable index sampling."""

from gspo.data.dataset import CHAT_TEMPLATE_MODES, PromptDataset, PromptItem
from gspo.data.errors import DataError
from gspo.data.loading import RowSource, load_rows, load_rows_with_sources
from gspo.data.sampler import PromptSampler

__all__ = [
    "CHAT_TEMPLATE_MODES",
    "DataError",
    "PromptDataset",
    "PromptItem",
    "PromptSampler",
    "RowSource",
    "load_rows",
    "load_rows_with_sources",
]
