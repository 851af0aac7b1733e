"""``gspo config``: every key with its type, default and the schema's own description.

The description of a field is the comment right above it in :mod:`gspo.config.schema` (or the comment at the end of its
line): the schema file is the only place it is written. No torch import: this runs in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from typing import Any

from gspo import config as schema


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: Any
    doc: str


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (the lines right above it, joined, or the one at the end of its line)."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 0-based line -> comment text
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0] - 1] = token.string.lstrip("#").strip()
    names = {f.name for f in dataclasses.fields(cls)}
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        name = line.strip().split(":", 1)[0]
        if name not in names or not line.startswith("    ") or line.startswith("     "):
            continue
        above = []
        row = number - 1
        while row >= 0 and lines[row].strip().startswith("#"):
            above.insert(0, comments.get(row, ""))
            row -= 1
        text = " ".join(above) or comments.get(number, "")
        found[name] = text
    return found


def _type_name(kind: Any) -> str:
    text = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    return text.replace("Optional[", "").replace("]", " | None") if text.startswith("Optional[") else text


def schema_comments(cls: type) -> dict[str, str]:
    """:func:`field_comments` of a schema class. The rollout section's class is composed from the engines
    (:mod:`gspo.config.rollout`): its fields' comments are read from the classes that declare them, and each engine
    key's comment starts with the engines that read it, e.g. ``(vllm)``."""
    found: dict[str, str] = {}
    for source in getattr(cls, "DOC_SOURCES", (cls,)):
        found.update(field_comments(source))
    for key, engines in getattr(cls, "ENGINE_KEYS", {}).items():
        found[key] = f"({', '.join(engines)}) {found.get(key, '')}".rstrip()
    return found


def describe_schema(root: type = schema.GSPOConfig, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key of the schema, in declaration order."""
    docs: list[KeyDoc] = []
    comments = schema_comments(root)
    instance = root()
    for f in dataclasses.fields(root):
        key = f"{prefix}{f.name}"
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            docs.extend(describe_schema(type(value), key + "."))
        else:
            docs.append(KeyDoc(key, _type_name(f.type), value, comments.get(f.name, "")))
    return docs


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def format_keys(pattern: str = "") -> str:
    """The listing printed by ``gspo config [PATTERN]``: keys containing ``pattern``, then matching verl keys."""
    from gspo.verl_compat import VERL_KEYS

    rows = [d for d in describe_schema() if pattern in d.key]
    width = max((len(d.key) for d in rows), default=0)
    out = [f"{d.key:<{width}}  {d.type} = {_show(d.default)}\n{'':<{width}}  {d.doc}" for d in rows]
    verl = [v for v in VERL_KEYS if pattern in v.key]
    if verl:
        out.append("\nverl keys outside the schema (accepted as written below, anything else is refused):")
        out += [f"{v.key}  {v.doc}" for v in verl]
    return "\n".join(out) if out else f"no key contains {pattern!r}"
