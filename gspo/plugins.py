"""Loading a user's function from a Python file (custom reward functions, custom policy losses)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable


def load_function_from_file(path: str | os.PathLike, name: str, *, what: str,
                            error: type[Exception] = ValueError) -> Callable:
    """Import the Python file at ``path`` and return its attribute ``name``, a callable.

    The file is imported as a fresh module (registered in ``sys.modules`` under a name derived from its absolute
    path, so dataclasses and pickling work). ``what`` ("custom reward", "policy loss") names the file in errors.

    Raises:
        error: the file is missing, importing it raises (the exception is shown and chained), it has no ``name``
            (its callables are listed), or ``name`` is not callable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise error(f"{what} file not found: {path}")
    abspath = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(abspath))[0]
    digest = hashlib.sha1(abspath.encode()).hexdigest()[:12]
    prefix = "".join(c if c.isalnum() else "_" for c in what)
    module_name = f"gspo_{prefix}_{''.join(c if c.isalnum() else '_' for c in stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, abspath)
    if spec is None or spec.loader is None:
        raise error(f"cannot import {what} file {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise error(f"importing {what} file {path} failed: {type(e).__name__}: {e}") from e
    if not hasattr(module, name):
        callables = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise error(f"{what} file {path} has no function {name!r}; callables in it: {callables or 'none'}")
    fn = getattr(module, name)
    if not callable(fn):
        raise error(f"{name!r} in {what} file {path} is a {type(fn).__name__}, not a function")
    return fn
