"""Embedded presets: the settings of a shipped task (``gspo/presets/NAME.yaml``), applied between the schema's
defaults (verl's) and the user's YAML file and overrides.

``--preset auto`` (the default) picks the preset of the model: no model path given, or
``actor_rollout_ref.model.path=embedded://NAME``, selects preset NAME (the embedded default run is ``addition``);
any other model path gets none, so a verl command line means what it means in verl. ``--preset none`` never applies
one; ``--preset NAME`` always applies NAME.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gspo.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
EMBEDDED_PREFIX = "embedded://"
AUTO, NONE = "auto", "none"
DEFAULT_PRESET = "addition"  # the embedded default run: `gspo train` with no model path


def preset_names() -> list[str]:
    """The shipped presets, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """``gspo/presets/NAME.yaml``; ConfigError naming ``--preset`` and the choices when there is none."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"--preset {name}: no such preset; choose one of {', '.join(preset_names())}, "
                          f"{AUTO} (the model's own) or {NONE} (verl's defaults)")
    return path


def choose_preset(requested: str, model_path: Any) -> str | None:
    """The preset to apply, or None.

    ``requested``: a preset name, ``none`` or ``auto``; ``model_path``: the actor_rollout_ref.model.path that the
    YAML file or overrides set (None when neither did). ``auto`` -> the default preset when no path was given, NAME
    for ``embedded://NAME`` when NAME is a preset, else None.
    """
    if requested == NONE:
        return None
    if requested != AUTO:
        preset_path(requested)  # an unknown name fails here, naming the choices
        return requested
    if model_path is None:
        return DEFAULT_PRESET
    if isinstance(model_path, str) and model_path.startswith(EMBEDDED_PREFIX):
        name = model_path[len(EMBEDDED_PREFIX):].strip("/")
        return name if name in preset_names() else None
    return None


def describe_preset(name: str | None) -> str:
    """The line ``gspo train`` prints first (``gspo validate`` as a YAML comment)."""
    if name is None:
        return "preset: none (verl's defaults for every key not given; gspo config lists them)"
    return f"preset: {name} (gspo/presets/{name}.yaml under the YAML file and overrides; --preset none for verl's " \
           f"defaults)"
