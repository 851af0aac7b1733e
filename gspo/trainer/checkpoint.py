"""Atomic, sharded checkpoints: written to a temporary folder, flushed, then renamed; ``latest`` is updated last.

Layout of ``<default_local_dir>/checkpoints/global_step_<N>/``:

- ``state/``: model and optimizer state in torch.distributed.checkpoint (DCP) format, one file per rank holding
  that rank's shards, keyed by parameter name, so a run resumes on any number of ranks (DCP reshards on load);
- ``model/``: the full model as a plain HF folder (safetensors + tokenizer; gathered to rank 0), for evaluation;
- ``extra.pt``: LR scheduler and the surplus groups of dynamic sampling (loaded with ``weights_only=True``);
- ``rng/rank_<r>.pt``: each rank's torch (and CUDA) RNG state;
- ``trainer_state.json``: step, data order, dynamic-sampling state, Python / NumPy RNG; ``config.yaml``;
- ``manifest.json``: every other file's size and CRC-32, written last (see :mod:`gspo.trainer.manifest`).

Every rank calls :func:`save_checkpoint` and :func:`load_checkpoint`; only rank 0 writes the files that are not
shards and renames the folder into place.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from gspo.distributed import SINGLE_PROCESS, DistContext
from gspo.rng_state import (
    numpy_rng_state,
    python_rng_from_json,
    python_rng_to_json,
    restore_numpy_rng_state,
    restore_torch_rng_state,
    torch_rng_state,
)
from gspo.trainer.manifest import CheckpointDamaged, verify, write_manifest
from gspo.trainer.run_folder import RunFolderError, StorageError, crash_point, remove_quietly, storage_error

log = logging.getLogger(__name__)
LATEST = "latest"
EXPORT_MARKER = "gspo_export.json"
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


def full_model_state_dict(model: torch.nn.Module, dist: DistContext) -> dict[str, torch.Tensor]:
    """The unsharded model state on rank 0 (on CPU under FSDP), empty on other ranks; every rank must call it."""
    if not dist.is_distributed:
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_hf_folder(folder: Path, *, hf_model, state_dict: dict[str, torch.Tensor], tokenizer,
                   dtype: torch.dtype | None = None) -> None:
    """A plain HF folder: ``hf_model`` supplies the class and config, ``state_dict`` the weights (floating
    tensors cast to ``dtype``, the input checkpoint's, when given). Files are readable by all (0644 under umask 022).

    A gathered state dict holds tied weights (e.g. ``lm_head.weight``) as separate copies; only the names
    ``hf_model`` owns a parameter or buffer under are written, as ``save_pretrained`` does for its own weights.
    """
    owned = {name for name, _ in hf_model.named_parameters()} | {name for name, _ in hf_model.named_buffers()}
    state_dict = {name: tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
                  for name, tensor in state_dict.items() if name in owned}
    config_dtype = hf_model.config.dtype  # the bf16 rollout copy must not label fp32 weights as bf16
    hf_model.config.dtype = next(iter(state_dict.values())).dtype
    try:
        hf_model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    finally:
        hf_model.config.dtype = config_dtype
    if dtype is not None:  # save_pretrained labels the weights with the model's own (fp32) parameter dtype
        config = json.loads((folder / "config.json").read_text())
        config["dtype"] = str(dtype).removeprefix("torch.")
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(folder)
    _readable_by_all(folder)


def _readable_by_all(folder: Path) -> None:
    """transformers writes model.safetensors through a private temporary file (mode 0600): give every file the
    mode a plain ``open`` would (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _state_options(model: torch.nn.Module) -> StateDictOptions:
    """Frozen parameters (a LoRA base) are not saved: they are re-read from the model path on resume."""
    frozen = any(not param.requires_grad for param in model.parameters())
    return StateDictOptions(ignore_frozen_params=frozen, strict=not frozen)


def _trainable_state(model: torch.nn.Module, model_state: dict) -> dict:
    """``model_state`` without frozen parameters under any of their names (``ignore_frozen_params`` keeps a tied
    alias such as ``lm_head.weight``, the size of the embedding)."""
    frozen = {name for name, param in model.named_parameters(remove_duplicate=False) if not param.requires_grad}
    return {name: value for name, value in model_state.items() if name not in frozen}


def save_checkpoint(root: Path, step: int, *, model, hf_model, tokenizer, optimizer, scheduler,
                    trainer_state: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None,
                    config_yaml: str = "", max_to_keep: int | None = None, dist: DistContext = SINGLE_PROCESS,
                    export: Callable[[Path], None] | None = None,
                    export_dtype: torch.dtype | None = None) -> Path:
    """Write ``root/global_step_<step>`` atomically and point ``root/latest`` at it (collective: all ranks call).

    A crash at any moment leaves either the previous checkpoint or the new one complete: files are written into a
    hidden temporary folder, their sizes and CRCs recorded in ``manifest.json`` last, fsynced, and only then renamed
    into place; ``latest`` is replaced last (the commit point). An OS error (disk full, ...) removes the temporary
    folder and raises :class:`~gspo.trainer.run_folder.StorageError` naming it and the path.
    ``hf_model`` is an unsharded model of the same architecture used to write ``model/`` (the policy itself on
    one process). ``export(folder)``, when given, writes the model's files into the checkpoint folder instead of
    ``model/`` (LoRA: the adapter); every rank calls it.
    """
    final = root / f"{STEP_PREFIX}{step}"
    tmp = root / f".tmp_{STEP_PREFIX}{step}"
    try:
        _write_checkpoint_files(tmp, root, step, model=model, hf_model=hf_model, tokenizer=tokenizer,
                                optimizer=optimizer, scheduler=scheduler, trainer_state=trainer_state,
                                tensors=tensors, config_yaml=config_yaml, dist=dist, export=export,
                                export_dtype=export_dtype)
        write_manifest(tmp, dist)
        dist.barrier()
        if dist.is_main:
            replace_folder(tmp, final)  # the same step may be saved again (a stop signal after the last step's save)
            crash_point("after_rename", step)
            _write_latest(root, final.name)
            crash_point("after_latest", step)
    except (Exception, CheckpointException) as exc:
        error = storage_error(exc, f"checkpoint of step {step}", tmp if tmp.exists() else root)
        if dist.is_main:
            remove_quietly(tmp)
        if error is None:
            raise
        raise error from exc
    if dist.is_main and max_to_keep is not None and max_to_keep > 0:
        _prune(root, max_to_keep, current_step=step)
    dist.barrier()
    return final


def _write_checkpoint_files(tmp: Path, root: Path, step: int, *, model, hf_model, tokenizer, optimizer, scheduler,
                            trainer_state: dict[str, Any], tensors: dict[str, torch.Tensor] | None,
                            config_yaml: str, dist: DistContext, export: Callable[[Path], None] | None,
                            export_dtype: torch.dtype | None = None) -> None:
    """Every file of the checkpoint but its manifest, into ``tmp`` (collective)."""
    token = None
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(f".tmp_{STEP_PREFIX}*"), *root.glob(f".old_{STEP_PREFIX}*")]:  # a killed write's
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        token = os.urandom(8).hex()
        (tmp / ".writer").write_text(token)
    # Every rank writes its shard into rank 0's folder: on several nodes that needs a filesystem they all share
    # (a fresh token, so a leftover folder on a node's own disk does not pass for rank 0's).
    token = dist.broadcast_object(token)
    writer = tmp / ".writer"
    if dist.all_reduce_max(int(not (writer.is_file() and writer.read_text() == token))):
        raise RunFolderError(f"trainer.default_local_dir: {root} written by rank 0 is not visible to every rank; with "
                           f"trainer.nnodes > 1 it must be on a filesystem all nodes share")
    if dist.is_main:  # every rank has read it (the all-reduce above)
        writer.unlink()
    (tmp / "rng").mkdir(exist_ok=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_state_options(model))
    model_state = _trainable_state(model, model_state)
    with _quiet_single_process():
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / "state",
                 no_dist=not dist.is_distributed, process_group=dist.group)
    torch.save(torch_rng_state(), tmp / "rng" / f"rank_{dist.rank}.pt")
    if export is not None:
        export(tmp)
    else:
        full_state = full_model_state_dict(model, dist)
        if dist.is_main:
            save_hf_folder(tmp / "model", hf_model=hf_model, state_dict=full_state, tokenizer=tokenizer,
                           dtype=export_dtype)
    if dist.is_main:
        numpy_key, numpy_rest = numpy_rng_state()
        torch.save({"scheduler": scheduler.state_dict(), "tensors": tensors or {}, "numpy_rng": numpy_key},
                   tmp / "extra.pt")
        state = {"step": step, "world_size": dist.world_size, "python_rng": python_rng_to_json(random.getstate()),
                 "numpy_rng": numpy_rest, **trainer_state}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        (tmp / "config.yaml").write_text(config_yaml)
    dist.barrier()


def replace_folder(tmp: Path, final: Path) -> None:
    """Fsync the complete folder ``tmp`` and rename it to ``final``; an existing ``final`` is replaced whole.

    A crash at any point leaves the old ``final`` (or, between the two renames, its copy ``.old_<name>``, which
    nothing reads) or the new one: never a partly written folder under ``final``'s name.
    """
    _fsync_tree(tmp)
    aside = final.with_name(f".old_{final.name}")
    shutil.rmtree(aside, ignore_errors=True)  # also what a crash between the renames below left behind
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def save_hf_folder_atomically(folder: Path, *, marker: dict | None = None, **kwargs) -> None:
    """:func:`save_hf_folder` into a temporary sibling, then :func:`replace_folder` onto ``folder``.

    ``marker`` (e.g. the step exported) is written inside as ``gspo_export.json`` before the rename, so its presence
    means the export is complete. An OS error removes the temporary folder and raises ``StorageError``.
    """
    tmp = folder.with_name(f".tmp_{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_hf_folder(tmp, **kwargs)
        if marker is not None:
            (tmp / EXPORT_MARKER).write_text(json.dumps(marker))
        crash_point("during_export", (marker or {}).get("step"))
        replace_folder(tmp, folder)
    except Exception as exc:
        error = storage_error(exc, "the final model export", tmp if tmp.exists() else folder.parent)
        remove_quietly(tmp)
        if error is None:
            raise
        raise error from exc


def exported_step(folder: Path) -> int | None:
    """The step a complete :func:`save_hf_folder_atomically` export of ``folder`` holds, if any."""
    try:
        return int(json.loads((folder / EXPORT_MARKER).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _quiet_single_process():
    """DCP warns on every single-process save / load that no process group exists; that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _write_latest(root: Path, name: str) -> None:
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, root / LATEST)


def _prune(root: Path, max_to_keep: int, current_step: int) -> None:
    """Keep the ``max_to_keep`` newest checkpoints of this run's history, the one just written included.

    Checkpoints of steps after ``current_step`` were left by a run this one resumed at an earlier step (an
    abandoned branch): they count as the oldest, so they go first and never outlive the checkpoint just written.
    """
    steps = [(int(p.name[len(STEP_PREFIX):]), p) for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir()]
    oldest_first = sorted(steps, key=lambda item: (item[0] <= current_step, item[0]))
    for _, path in oldest_first[:-max_to_keep]:
        shutil.rmtree(path, ignore_errors=True)


def _step_of(path: Path) -> int:
    try:
        return int(path.name[len(STEP_PREFIX):])
    except ValueError:
        return -1


def _candidates(root: Path) -> tuple[list[Path], list[str]]:
    """Checkpoints to try, best first: the one ``latest`` names, then the others newest first; and the warnings
    about a ``latest`` pointer that could not be read."""
    warnings_: list[str] = []
    folders = sorted((p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and _step_of(p) >= 0),
                     key=_step_of, reverse=True)
    pointer = root / LATEST
    if pointer.exists():
        try:
            name = pointer.read_bytes().decode("ascii").strip()
            target = root / name
            if not name.startswith(STEP_PREFIX) or not target.is_dir():
                raise ValueError(f"names {name!r}, which is not a checkpoint folder here")
            folders = [target, *[p for p in folders if p != target]]
        except (OSError, ValueError) as exc:
            warnings_.append(f"{pointer}: unreadable ({exc}); trying the newest checkpoint that verifies")
    return folders, warnings_


def select_checkpoint(root: Path, dist: DistContext = SINGLE_PROCESS) -> Path | None:
    """The checkpoint to resume: ``latest``'s if it verifies, else the newest one that does (a warning names each
    skipped one's bad file and why); None when ``root`` holds none. Raises ``RunFolderError`` when checkpoints
    exist but none verifies (collective: every rank reaches the same answer)."""
    folders, problems = _candidates(root)
    for message in problems:
        log.warning("%s", message)
    for folder in folders:
        try:
            verify(folder, dist)
            return folder
        except CheckpointDamaged as exc:
            log.warning("skipping checkpoint %s: %s", folder.name, exc)
            problems.append(str(exc))
    if folders:
        raise RunFolderError(f"trainer.default_local_dir: no checkpoint in {root} verifies ({len(folders)} tried; "
                             f"newest: {problems[-len(folders)]}). Resume from a copy of the run, or start over "
                             f"with trainer.resume_mode=disable")
    return None


def load_checkpoint(path: Path, *, model, optimizer, scheduler, dist: DistContext = SINGLE_PROCESS) -> CheckpointState:
    """Restore model, optimizer, scheduler and RNGs in place on every rank; return the step and trainer state.

    The sharded state is resharded to this run's number of ranks; a rank with no saved RNG state (the run now
    has more ranks than the one that wrote the checkpoint) keeps its seeded RNG.
    """
    options = _state_options(model)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    state = {"model": _trainable_state(model, model_state), "optimizer": optimizer_state}
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=path / "state", no_dist=not dist.is_distributed, process_group=dist.group)
    except (Exception, CheckpointException) as exc:  # DCP's is a BaseException; a missing key is a planner error
        raise load_error(path, exc) from exc
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=options)
    extra = torch.load(path / "extra.pt", weights_only=True, map_location="cpu")
    scheduler.load_state_dict(extra["scheduler"])
    rng_file = path / "rng" / f"rank_{dist.rank}.pt"
    if rng_file.is_file():
        restore_torch_rng_state(torch.load(rng_file, weights_only=True))
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    random.setstate(python_rng_from_json(trainer_state.pop("python_rng")))
    restore_numpy_rng_state(extra["numpy_rng"], trainer_state.pop("numpy_rng"))
    trainer_state.pop("world_size", None)
    return CheckpointState(step=int(trainer_state.pop("step")), trainer_state=trainer_state,
                           tensors=extra.get("tensors", {}))


def load_error(path: Path, exc: BaseException) -> Exception:
    """What failed while reading ``path``, said as such: out of memory (exit 1), an OS error (exit 74), or a
    checkpoint that does not match this model or optimizer (exit 2). DCP wraps a rank's error: the inner one
    decides."""
    inner = _inner_error(exc)
    if isinstance(inner, torch.OutOfMemoryError):
        return MemoryError(f"{path}: out of memory while loading the checkpoint: {_first_line(exc)}; free device "
                           f"memory (fewer processes per GPU, a smaller rollout gpu_memory_utilization) and resume")
    if isinstance(inner, OSError):
        return StorageError(f"{path}: could not read the checkpoint: {_first_line(exc)}")
    return RunFolderError(f"{path}: checkpoint does not match the model or optimizer: {_first_line(exc)}")


def _inner_error(exc: BaseException) -> BaseException:
    for failure in getattr(exc, "failures", {}).values():  # CheckpointException: {rank: (error, traceback)}
        return failure[0] if isinstance(failure, tuple) else failure
    return exc


def _first_line(exc: BaseException) -> str:
    for failure in getattr(exc, "failures", {}).values():  # CheckpointException: the rank's own error, not a trace
        inner = failure[0] if isinstance(failure, tuple) else failure
        return f"{type(inner).__name__}: {inner}".splitlines()[0]
    return (str(exc).splitlines() or [type(exc).__name__])[0]
