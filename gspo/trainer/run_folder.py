"""The run folder (``trainer.default_local_dir``) is one experiment: one writer, one history.

Commit order of a training step N (what makes ``metrics.jsonl`` exactly-once):

1. train step N, then validation if scheduled;
2. append row N to ``metrics.jsonl`` and fsync it;
3. if a checkpoint is scheduled: write ``checkpoints/.tmp_global_step_N``, its ``manifest.json`` last, rename it to
   ``global_step_N``, then replace ``checkpoints/latest`` (the commit point of the step);
4. after the last step: export ``final_model`` (written aside, renamed into place, ``gspo_export.json`` inside).

A resume starts from the checkpoint ``latest`` names (or, when that one fails verification, the newest one that
verifies) at step K and drops the rows after K: every row up to K was on disk before K's checkpoint committed, every
later row is redone. A folder with no usable checkpoint starts over and drops every row.

Fault-injection hook: ``GSPO_CRASH_AT=<point>[:<step>]`` makes the process ``os._exit(CRASH_EXIT_CODE)`` at the
named point (tests only; see :data:`CRASH_POINTS`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from gspo.errors import EXIT_STORAGE, InputError

log = logging.getLogger(__name__)

LOCK_FILE = ".gspo.lock"
CRASH_EXIT_CODE = 86
CRASH_POINTS = ("after_validation", "after_row", "after_rename", "after_latest", "during_export")
# Everything a run writes at the top of its folder; ``trainer.resume_mode=disable`` moves a previous run's aside.
RUN_ARTIFACTS = ("checkpoints", "metrics.jsonl", "config.yaml", "final_model", "final_adapter", "tensorboard")
PREVIOUS_RUNS = "previous_runs"

_held: dict[str, int] = {}  # realpath of a locked folder -> the open lock file's descriptor (this process)


EXIT_LAUNCHER_DIED = 1  # nobody waits for it: the launcher is gone


class RunFolderError(InputError):
    """The run folder cannot be used as asked (busy, damaged, or holding a different run): exit 2."""


class StorageError(Exception):
    """An OS error (disk full, permissions, I/O) while writing a checkpoint or the final export: exit 74.

    Raised after the partial folder was removed; the previous checkpoint is untouched.
    """

    exit_code = EXIT_STORAGE


def storage_error(exc: BaseException, what: str, path: Path) -> StorageError | None:
    """A :class:`StorageError` naming the OS error and ``path`` when ``exc`` was caused by one, else None.

    torch's writers report a full disk as ``RuntimeError: ... unexpected pos`` or a DCP ``CheckpointException``
    without the OS error; the free space left on ``path``'s filesystem then tells a full disk apart.
    """
    os_error = _find_os_error(exc)
    if os_error is None and _free_bytes(path) < (1 << 20):
        os_error = OSError(28, os.strerror(28))
    if os_error is None:
        return None
    reason = f"[Errno {os_error.errno}] {os_error.strerror}" if os_error.errno else str(os_error)
    return StorageError(f"{what} could not be written to {path}: {reason}; the partial files were removed and the "
                        f"previous checkpoint is intact. Free space (or fix the folder) and run the same command "
                        f"again to resume")


def _find_os_error(exc: BaseException | None, depth: int = 0) -> OSError | None:
    if exc is None or depth > 8:
        return None
    if isinstance(exc, OSError):
        return exc
    for inner in getattr(exc, "failures", {}).values():  # DCP's CheckpointException: {rank: (exception, trace)}
        found = _find_os_error(inner[0] if isinstance(inner, tuple) else inner, depth + 1)
        if found is not None:
            return found
    return _find_os_error(exc.__cause__ or exc.__context__, depth + 1)


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        try:
            stat = os.statvfs(folder)
            return stat.f_bavail * stat.f_frsize
        except OSError:
            continue
    return 1 << 62


def crash_point(name: str, step: int | None = None) -> None:
    """Test hook: die here like ``kill -9`` would (no cleanup, no flush) when ``GSPO_CRASH_AT`` names this point."""
    wanted = os.environ.get("GSPO_CRASH_AT")
    if not wanted:
        return
    point, _, at_step = wanted.partition(":")
    if point == name and (not at_step or step is None or int(at_step) == step):
        os._exit(CRASH_EXIT_CODE)


def acquire_lock(folder: Path) -> None:
    """Hold an exclusive ``flock`` on ``folder/.gspo.lock`` until :func:`release_lock` or process exit.

    The kernel drops the lock when its holder dies, however it dies, so a lock file left by a dead process is taken
    over (with a message naming that PID). Re-acquiring a folder this process already holds is a no-op.
    """
    key = os.path.realpath(folder)
    if key in _held:
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunFolderError(
            f"trainer.default_local_dir: {folder} is in use by another gspo train ({holder}); wait for it to end, "
            f"stop it, or choose another trainer.default_local_dir") from None
    previous = _read_holder(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    if previous != "unknown PID":
        log.warning("trainer.default_local_dir: took over the lock of %s left by %s, which is no longer running",
                    folder, previous)
    _held[key] = fd


def release_lock(folder: Path) -> None:
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.ftruncate(fd, 0)  # a clean end leaves no holder to report
        os.close(fd)  # closing the descriptor drops the flock


def _close_inherited_locks() -> None:
    """In a forked child (e.g. the reward worker): drop the copies of the lock descriptors, so a child that outlives
    the trainer (a hung reward call) never keeps the folder locked. The parent's lock is unaffected."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    return text or "unknown PID"


def set_aside_previous_run(folder: Path) -> Path | None:
    """Move a previous run's files to ``folder/previous_runs/<k>/`` so a fresh start never mixes with them."""
    present = [name for name in RUN_ARTIFACTS if (folder / name).exists()]
    if not present:
        return None
    k = 1
    while (folder / PREVIOUS_RUNS / str(k)).exists():
        k += 1
    target = folder / PREVIOUS_RUNS / str(k)
    target.mkdir(parents=True)
    for name in present:
        os.replace(folder / name, target / name)
    log.warning("trainer.resume_mode=disable: starting over in %s; the previous run's %s moved to %s",
                folder, ", ".join(present), target)
    return target


def remove_quietly(path: Path) -> None:
    """Remove a partial file or folder; never raises (used while reporting another error)."""
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    except OSError:
        pass


def start_launcher_watchdog(interval_s: float = 0.5) -> threading.Thread | None:
    """Under torchrun: stop this rank within ~``interval_s`` of its launcher's death (e.g. ``kill -9`` of torchrun).

    A rank whose parent died is re-parented (to init or a subreaper); it then exits at once, before writing anything
    more, instead of training on as an orphan. A polling thread rather than ``PR_SET_PDEATHSIG``, which fires when
    the parent *thread* that started the rank exits, not the launcher process.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None
    launcher = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != launcher:
                try:
                    print(f"gspo train: the launcher (PID {launcher}) died; rank {os.environ.get('RANK', '?')} "
                          f"stops now (resume with the same command)", file=sys.stderr, flush=True)
                finally:
                    os._exit(EXIT_LAUNCHER_DIED)

    thread = threading.Thread(target=watch, name="gspo-launcher-watchdog", daemon=True)
    thread.start()
    return thread



def open_run_folder(folder: Path, resume_mode: str, dist) -> None:
    """Before anything is read or written: watch the launcher, take the folder's lock (rank 0; every rank fails
    together when it is taken), and on ``resume_mode=disable`` set a previous run aside (collective)."""
    start_launcher_watchdog()
    error = None
    if dist.is_main:
        try:
            acquire_lock(folder)
            if resume_mode == "disable":
                set_aside_previous_run(folder)
        except RunFolderError as exc:
            error = str(exc)
    error = dist.broadcast_object(error)
    if error is not None:
        raise RunFolderError(error)
