"""Saving and restoring random-number-generator states: Python's, NumPy's and torch's (CPU and this process's CUDA
device). Imports nothing from ``gspo``, so any layer may use it.

Python states travel as JSON (``trainer_state.json``, the dynamic-sampling state); the NumPy key (624 words) and the
torch states travel as tensors (``torch.save`` with ``weights_only=True`` loads them).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "numpy_rng_state",
    "python_rng_from_json",
    "python_rng_to_json",
    "restore_numpy_rng_state",
    "restore_torch_rng_state",
    "torch_rng_state",
]


def python_rng_to_json(state: tuple) -> list:
    """A ``random.Random().getstate()`` tuple as JSON-able lists (and back with :func:`python_rng_from_json`)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(state: list) -> tuple:
    """The ``setstate`` tuple of a :func:`python_rng_to_json` list."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def torch_rng_state() -> dict[str, torch.Tensor | None]:
    """``{"torch_rng": CPU state, "cuda_rng": the current CUDA device's state or None}`` (uint8 tensors). Only this
    process's device, so a run can resume on another number of GPUs."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def restore_torch_rng_state(state: dict[str, torch.Tensor | None]) -> None:
    """Set what :func:`torch_rng_state` returned (a CUDA state only where CUDA is available)."""
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"])


def numpy_rng_state() -> tuple[torch.Tensor, list]:
    """NumPy's global MT19937 state as ``(key, [pos, has_gauss, cached_gaussian])``: the (624,) int64 key for a
    tensor file, the rest for JSON."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    return torch.from_numpy(key.astype(np.int64)), [int(pos), int(has_gauss), float(gauss)]


def restore_numpy_rng_state(key: torch.Tensor, rest: list) -> None:
    """Set NumPy's global RNG to what :func:`numpy_rng_state` returned."""
    pos, has_gauss, gauss = rest
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, gauss))
