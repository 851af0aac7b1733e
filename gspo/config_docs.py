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
from gspo.config.verl_defaults import show_value


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
    return show_value(value, list_separator=", ")


def preset_values(name: str) -> dict[str, Any]:
    """Dotted key -> value of the preset ``name`` (gspo/presets/NAME.yaml)."""
    import yaml

    from gspo.config.presets import preset_path

    def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            out.update(flatten(value, dotted + ".") if isinstance(value, dict) else {dotted: value})
        return out

    return flatten(yaml.safe_load(preset_path(name).read_text()) or {})


def format_keys(pattern: str = "", preset: str | None = None) -> str:
    """The listing printed by ``gspo config [PATTERN] [--preset NAME]``: keys containing ``pattern`` (each default
    that differs from verl's marked with verl's value and the reason; with a preset, its value beside), then the
    matching verl keys outside the schema."""
    from gspo.config.verl_defaults import mark
    from gspo.verl_compat import VERL_KEYS

    rows = [d for d in describe_schema() if pattern in d.key]
    width = max((len(d.key) for d in rows), default=0)
    values = preset_values(preset) if preset else {}
    out = []
    for d in rows:
        shown = _show(d.default) + (f"  [preset {preset}: {_show(values[d.key])}]" if d.key in values else "")
        note = " ".join(part for part in (d.doc, mark(d.key)) if part)
        out.append(f"{d.key:<{width}}  {d.type} = {shown}\n{'':<{width}}  {note}")
    verl = [v for v in VERL_KEYS if pattern in v.key]
    if verl:
        out.append("\nverl keys outside the schema (accepted as written below, anything else is refused):")
        out += [f"{v.key}  {v.doc}" for v in verl]
    return "\n".join(out) if out else f"no key contains {pattern!r}"
