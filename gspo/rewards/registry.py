"""Reward functions by data source, and loading a user's reward from a file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gspo.plugins import load_function_from_file
from gspo.rewards.base import RewardError, RewardFn

_REGISTRY: dict[str, RewardFn] = {}
_PREFIXES: dict[str, RewardFn] = {}  # data_source prefix -> reward, for families like verl's "aime*"

DEFAULT_CUSTOM_REWARD_NAME = "compute_score"  # verl's default name for a custom reward function


def _same_function(a: RewardFn, b: RewardFn) -> bool:
    # A module re-imported under another name (reload, pytest importlib mode) re-creates its functions.
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return a is b or (
        code_a is not None
        and code_b is not None
        and a.__qualname__ == b.__qualname__
        and code_a.co_filename == code_b.co_filename
    )


def register_reward(*names: str, override: bool = False) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering a reward function under one or more data_source names.

    Registering a different function under a taken name raises
    :class:`RewardError` unless ``override=True``.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"register_reward needs one or more non-empty names, got {names!r}")

    def decorator(fn: RewardFn) -> RewardFn:
        if not callable(fn):
            raise TypeError(f"register_reward: {fn!r} is not callable")
        for name in names:
            existing = _REGISTRY.get(name)
            if existing is not None and not override and not _same_function(existing, fn):
                raise RewardError(
                    f"reward name {name!r} is already registered to {_describe(existing)}; "
                    "pass override=True to replace it"
                )
        for name in names:
            _REGISTRY[name] = fn
        return fn

    return decorator


def register_reward_prefix(prefix: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering a reward function for every data_source starting with ``prefix`` (an exact name
    registered with :func:`register_reward` wins; of several matching prefixes, the longest)."""
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"register_reward_prefix needs a non-empty prefix, got {prefix!r}")

    def decorator(fn: RewardFn) -> RewardFn:
        existing = _PREFIXES.get(prefix)
        if existing is not None and not _same_function(existing, fn):
            raise RewardError(f"reward prefix {prefix!r} is already registered to {_describe(existing)}")
        _PREFIXES[prefix] = fn
        return fn

    return decorator


def registered_rewards() -> list[str]:
    """Sorted names of all registered reward functions; a prefix registration shows as ``prefix*``."""
    return sorted([*_REGISTRY, *(f"{prefix}*" for prefix in _PREFIXES)])


def get_reward_fn(data_source: str) -> RewardFn:
    """The reward function registered for ``data_source``; RewardError (listing the names) if none."""
    if data_source in _REGISTRY:
        return _REGISTRY[data_source]
    matching = [prefix for prefix in _PREFIXES if data_source.startswith(prefix)]
    if matching:
        return _PREFIXES[max(matching, key=len)]
    raise RewardError(
        f"no reward function registered for data_source {data_source!r}; registered: "
        f"{registered_rewards()}; register one with @register_reward or pass a custom reward function"
    )


@dataclass(frozen=True)
class CustomReward:
    """A reward function loaded from a file: calls and attributes go to ``fn``; it pickles as ``(path, name)``, so a
    reward worker process loads the same function from the same file (nothing of the trainer is forked)."""

    path: str  # absolute
    name: str
    fn: RewardFn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # __qualname__, preflight, score_batch ...
        if attr == "fn":
            raise AttributeError(attr)
        return getattr(self.fn, attr)

    def __reduce__(self):
        return load_custom_reward, (self.path, self.name)


def load_custom_reward(path: str | os.PathLike, name: str = DEFAULT_CUSTOM_REWARD_NAME) -> CustomReward:
    """Import the Python file at ``path`` and return its attribute ``name`` (a reward function) as a
    :class:`CustomReward`.

    The file is imported as a fresh module (registered in ``sys.modules`` under a
    name derived from its absolute path, so dataclasses and pickling work).

    Raises:
        RewardError: the file is missing, importing it raises (the exception is
            shown and chained), it has no ``name`` (its callables are listed), or
            ``name`` is not callable.
    """
    fn = load_function_from_file(path, name, what="custom reward", error=RewardError)
    return CustomReward(os.path.abspath(os.fspath(path)), name, fn)


def _describe(fn: RewardFn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
