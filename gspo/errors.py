"""What a failure means to the caller: the error families, the exit codes of ``gspo`` commands, and the two checks
that raise configuration errors.

It lives below every layer (no gspo imports), so the config package, the rollout engines, data and rewards can all
raise these without importing each other.
"""

from __future__ import annotations

import difflib
from typing import Any

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_NO_PROGRESS = 3
EXIT_STORAGE = 74  # sysexits' EX_IOERR: the disk, not the input, is at fault

# The exit codes every command documents (README, "Exit codes"; a test keeps the two equal). 128+N is a signal.
EXIT_CODES: dict[str, str] = {
    str(EXIT_OK): "done, or the run in trainer.default_local_dir is already complete",
    str(EXIT_INTERNAL): "an unexpected error: the traceback is printed and kept in the run folder's error.log",
    str(EXIT_INPUT): "input the one-line message names (config key, data file and line, model or reward path, "
                     "run folder, missing optional package): fix it and run again",
    str(EXIT_NO_PROGRESS): "training cannot progress (dynamic sampling's max_num_gen_batches, "
                           "trainer.max_consecutive_skips non-finite updates)",
    str(EXIT_STORAGE): "an OS error writing or reading a checkpoint or the export (disk full, I/O)",
    "128+N": "stopped by signal N (130 Ctrl-C, 143 SIGTERM) after a checkpoint; run the same command to resume",
}


class InputError(ValueError):
    """Input the user can fix, named by the message (key, file and line, path) with the way out: exit 2."""


class ConfigError(InputError):
    """A configuration problem; the message names the key and, for YAML input, the file and line."""


class RunComplete(Exception):
    """The run folder already holds this run's last step and its export: nothing to do (exit 0)."""


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
