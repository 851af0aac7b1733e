"""Atomic checkpoints: written to a temporary folder, flushed, then renamed; ``latest`` is updated last.

Layout of ``<default_local_dir>/checkpoints/global_step_<N>/``: ``model/`` (HF folder, safetensors + tokenizer),
``optimizer.pt`` (optimizer + LR scheduler + RNG tensors + surplus groups, loaded with ``weights_only=True``),
``trainer_state.json`` (step, data order, dynamic-sampling state, Python / NumPy RNG) and ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"
STEP_PREFIX = "global_step_"


@dataclass
class CheckpointState:
    step: int
    trainer_state: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def save_checkpoint(root: Path, step: int, *, model, tokenizer, optimizer, scheduler,
                    trainer_state: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None,
                    config_yaml: str = "", max_to_keep: int | None = None) -> Path:
    """Write ``root/global_step_<step>`` atomically and point ``root/latest`` at it.

    A crash at any moment leaves either the previous checkpoint or the new one complete: files are written into a
    hidden temporary folder, fsynced, and only then renamed into place; ``latest`` is replaced last.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step}"
    for stale in root.glob(f".tmp_{STEP_PREFIX}*"):  # left behind by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp_{STEP_PREFIX}{step}"
    tmp.mkdir()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "tensors": tensors or {}},
               tmp / "optimizer.pt")
    _, _, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {"step": step, "python_rng": _python_rng_to_json(random.getstate()),
             "numpy_rng": [int(numpy_pos), int(numpy_has_gauss), float(numpy_gauss)], **trainer_state}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    (tmp / "config.yaml").write_text(config_yaml)
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(root, final.name)
    if max_to_keep is not None and max_to_keep > 0:
        _prune(root, max_to_keep)
    return final


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, root / LATEST)


def _prune(root: Path, max_to_keep: int) -> None:
    steps = sorted((int(p.name[len(STEP_PREFIX):]), p) for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir())
    for _, path in steps[:-max_to_keep]:
        shutil.rmtree(path, ignore_errors=True)


def find_latest(root: Path) -> Path | None:
    """The checkpoint ``latest`` points at, if it is complete; else the newest complete one; else None."""
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if _is_complete(candidate):
            return candidate
    complete = [p for p in root.glob(f"{STEP_PREFIX}*") if _is_complete(p)]
    return max(complete, key=lambda p: int(p.name[len(STEP_PREFIX):]), default=None)


def _is_complete(path: Path) -> bool:
    return (path / "trainer_state.json").is_file() and (path / "optimizer.pt").is_file() \
        and (path / "model" / "config.json").is_file()


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> CheckpointState:
    """Restore model, optimizer, scheduler and RNGs in place; return the step and the trainer state."""
    from safetensors.torch import load_file

    if not _is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete gspo checkpoint")
    weights = {}
    for shard in sorted((path / "model").glob("*.safetensors")):
        weights.update(load_file(shard))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied embeddings are saved once; anything else missing means a different architecture.
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    blob = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    state = json.loads((path / "trainer_state.json").read_text())
    random.setstate(_python_rng_from_json(state.pop("python_rng")))
    pos, has_gauss, gauss = state.pop("numpy_rng")
    np.random.set_state(("MT19937", blob["numpy_rng"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    return CheckpointState(step=int(state.pop("step")), trainer_state=state, tensors=blob.get("tensors", {}))


def _python_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
