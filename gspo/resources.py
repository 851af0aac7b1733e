"""Paths that may point into the package's embedded assets (``embedded://addition/train.jsonl``)."""

from __future__ import annotations

from pathlib import Path

EMBEDDED_PREFIX = "embedded://"
ASSET_ROOT = Path(__file__).resolve().parent / "assets"


def resolve_path(path: str | Path) -> Path:
    """Map ``embedded://NAME/...`` to the packaged asset folder; any other path is returned as given.

    >>> resolve_path("embedded://addition").name
    'addition'
    >>> str(resolve_path("data/train.jsonl"))
    'data/train.jsonl'
    """
    text = str(path)
    if text.startswith(EMBEDDED_PREFIX):
        return ASSET_ROOT / text[len(EMBEDDED_PREFIX):]
    return Path(text).expanduser()
