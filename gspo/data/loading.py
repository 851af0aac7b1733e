"""Reading prompt rows from JSON-lines and Parquet files.

Rows are plain dicts, returned in file order, files concatenated in the order
given. Each row's provenance is available as a :class:`RowSource` (from
:func:`load_rows_with_sources`) so later validation errors can point at
``file:line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from gspo.data.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

_JSONL_SUFFIXES = (".jsonl", ".json")
_PARQUET_SUFFIXES = (".parquet",)


@dataclass(frozen=True)
class RowSource:
    """Where a row came from.

    ``line`` is the 1-based line number for JSON-lines files; ``row`` is the
    0-based row index for Parquet files. Exactly one of them is set.

    >>> str(RowSource("train.jsonl", line=3))
    'train.jsonl:3'
    >>> str(RowSource("train.parquet", row=0))
    'train.parquet[row 0]'
    """

    path: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}"
        return f"{self.path}[row {self.row}]"


def load_rows(paths: PathLike | Sequence[PathLike]) -> list[dict]:
    """Read all rows of one or more ``.jsonl``/``.json`` (JSON lines) or ``.parquet`` files.

    Raises :class:`DataError` for a missing, empty or unreadable file, a JSON
    line that does not parse or is not an object, or an unsupported extension.
    """
    rows, _ = load_rows_with_sources(paths)
    return rows


def load_rows_with_sources(
    paths: PathLike | Sequence[PathLike],
) -> tuple[list[dict], list[RowSource]]:
    """Like :func:`load_rows`, also returning one :class:`RowSource` per row (parallel list)."""
    path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not path_list:
        raise DataError("no data files given")
    rows: list[dict] = []
    sources: list[RowSource] = []
    for p in path_list:
        path = os.fspath(p)
        file_rows, file_sources = _read_file(path)
        rows.extend(file_rows)
        sources.extend(file_sources)
    return rows, sources


def _read_file(path: str) -> tuple[list[dict], list[RowSource]]:
    suffix = Path(path).suffix.lower()
    if suffix not in _JSONL_SUFFIXES + _PARQUET_SUFFIXES:
        supported = ", ".join(_JSONL_SUFFIXES + _PARQUET_SUFFIXES)
        raise DataError(f"{path}: unsupported file extension {suffix or '(none)'!r}; supported: {supported}")
    if not os.path.exists(path):
        raise DataError(f"{path}: data file not found")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a regular file")
    if suffix in _PARQUET_SUFFIXES:
        rows, sources = _read_parquet(path)
    else:
        rows, sources = _read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: file is empty (no rows)")
    return rows, sources


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` of each non-blank line of a JSON-lines file (1-based line numbers).

    Raises:
        DataError: ``file:line`` and the reason for a line that is not UTF-8 or not JSON.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: line is not valid UTF-8 ({e})") from e
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from e


def _read_jsonl(path: str) -> tuple[list[dict], list[RowSource]]:
    rows: list[dict] = []
    sources: list[RowSource] = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            hint = ""
            if isinstance(obj, list):
                hint = "; .json files are read as JSON lines (one object per line), not as one JSON array"
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}{hint}")
        rows.append(obj)
        sources.append(RowSource(path, line=lineno))
    return rows, sources


def _read_parquet(path: str) -> tuple[list[dict], list[RowSource]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"{path}: cannot read Parquet file ({type(e).__name__}: {e})") from e
    rows = table.to_pylist()
    return rows, [RowSource(path, row=i) for i in range(len(rows))]
