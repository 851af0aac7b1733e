"""The error of configuration problems, and the two checks that raise it.

It lives below every layer (no imports), so the config package, the rollout engines, data and rewards can all raise
it without importing each other.
"""

from __future__ import annotations

import difflib
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the key and, for YAML input, the file and line."""


def require(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("key: message")`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def require_one_of(value: Any, choices: tuple | list, key: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` and the choices (with a "did you mean") unless ``value`` is one."""
    if value in choices:
        return
    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    hint = f"; did you mean {key}={near[0]}?" if near else ""
    raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
