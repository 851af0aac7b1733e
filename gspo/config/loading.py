"""Resolving a config: the schema defaults -> an optional YAML file -> dotted ``key=value`` overrides, last wins.

Every error is a :class:`ConfigError` that names the key (with a "did you mean" for unknown keys), and the
file and line when the value came from a YAML file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from gspo.config.presets import choose_preset, preset_path
from gspo.config.rollout import RolloutConfig, rollout_config_class, validate_rollout
from gspo.config.schema import GSPOConfig, field_type
from gspo.config.validation import validate_config
from gspo.config.verl_defaults import apply_derived_defaults
from gspo.errors import ConfigError
from gspo.rollout.definition import EngineContext
from gspo.verl_compat import VerlKeys

MODEL_PATH_KEY = "actor_rollout_ref.model.path"


def load_config(config_file: str | Path | None = None, overrides: list[str] = (), preset: str = "auto") -> GSPOConfig:
    """Resolve defaults <- preset <- YAML file <- dotted overrides into a validated :class:`GSPOConfig` object.

    The defaults are verl's (:mod:`gspo.config.verl_defaults` lists where they are not); ``preset`` is a name,
    ``none`` or ``auto`` (:func:`gspo.config.presets.choose_preset`). verl keys outside the schema (see
    :mod:`gspo.verl_compat`) are mapped to ours, accepted as documented no-ops, or refused naming the key and what
    to do instead.
    """
    return resolve_config(config_file, overrides, preset)[0]


def resolve_config(config_file: str | Path | None = None, overrides: list[str] = (),
                   preset: str = "auto") -> tuple[GSPOConfig, str | None]:
    """:func:`load_config` and the name of the preset it applied (None for none)."""
    cfg = OmegaConf.structured(GSPOConfig)
    entries = _yaml_entries(Path(config_file)) if config_file is not None else []
    entries += [_parse_override(item) for item in overrides]
    model_paths = [value for key, value, _ in entries if key == MODEL_PATH_KEY]
    chosen = choose_preset(preset, model_paths[-1] if model_paths else None)
    preset_entries = _yaml_entries(preset_path(chosen)) if chosen else []
    verl = VerlKeys()
    explicit: set[str] = set()  # set by the YAML file or an override
    given: set[str] = set()  # set by any layer, the preset included
    for number, (key, value, where) in enumerate(preset_entries + entries):
        if field_type(key) is None:  # a schema key always wins over verl's table
            mapped = verl.translate(key, value, where)
            if mapped is None:  # a verl key checked once the whole config is known
                continue
            key, value = mapped
        cfg = _merge_one(cfg, key, value, where)
        given.add(key)
        if number >= len(preset_entries):
            explicit.add(key)
    config: GSPOConfig = OmegaConf.to_object(cfg)
    _derive_run_folder(config, explicit)
    apply_derived_defaults(config, given)
    validate_config(config)
    verl.check(config)
    return config, chosen


def load_rollout_config(values: dict[str, Any], context: EngineContext) -> RolloutConfig:
    """The rollout section at its defaults but for ``values`` (key -> value, keys of the section), type-checked
    and validated as in training; errors name ``context.key(key)`` (``gspo eval`` passes its bare keys)."""
    node = OmegaConf.structured(rollout_config_class())
    for key, value in values.items():
        try:
            OmegaConf.update(node, key, value, merge=False)
        except OmegaConfBaseException:
            kind = field_type(f"actor_rollout_ref.rollout.{key}")
            raise ConfigError(f"{context.key(key)}: cannot take {value!r}; expected {_describe_type(kind)}") from None
    rollout: RolloutConfig = OmegaConf.to_object(node)
    validate_rollout(rollout, context)
    return rollout


def _derive_run_folder(config: GSPOConfig, explicit: set[str]) -> None:
    """verl's layout: checkpoints/<project_name>/<experiment_name> when no folder is set, or when the YAML file or
    an override names the project or experiment and not the folder (a preset's folder gives way)."""
    trainer = config.trainer
    named = {"trainer.project_name", "trainer.experiment_name"} & explicit
    if trainer.default_local_dir is None or (named and "trainer.default_local_dir" not in explicit):
        trainer.default_local_dir = f"checkpoints/{trainer.project_name}/{trainer.experiment_name or 'default'}"


def to_yaml(config: GSPOConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _yaml_entries(path: Path) -> list[tuple[str, Any, str]]:
    """(dotted key, value, "file:line") for every leaf of a YAML config file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is None:
        return []
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config groups")
    # Leaf by leaf so an error can point at the YAML line that set the offending key.
    return [(key, value, f"{path}:{_yaml_line(text, key)}") for key, value in _flatten(loaded)]


def _parse_override(item: str) -> tuple[str, Any, str]:
    """``key=value``, ``+key=value`` / ``++key=value`` (Hydra's add / force-add: the same here) -> (key, value,
    where)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if key.startswith("~"):
        raise ConfigError(f"override {item!r}: Hydra's ~key (delete) is not supported; set the key to its default "
                          f"instead (gspo config lists every key with its default)")
    key = key.lstrip("+")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # e.g. an unbalanced quote in a name: keep the text as typed
    if isinstance(value, dict):
        raise ConfigError(f"{key}: override values must be scalars or lists, got a mapping (write one "
                          f"{key}.<name>=value per entry)")
    return key, value, f"command line ({item})"


def _merge_one(cfg: DictConfig, key: str, value: Any, where: str) -> DictConfig:
    _check_key_exists(cfg, key, where)
    kind = field_type(key)
    if isinstance(value, str) and getattr(kind, "__origin__", None) is list:
        value = [value]  # verl accepts data.train_files=path as well as [path]
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except OmegaConfBaseException:
        raise ConfigError(f"{key}: cannot take {value!r} ({where}); expected {_describe_type(kind)}, e.g. "
                          f"{key}={_example(key, kind)}") from None
    return cfg


def _check_key_exists(cfg: DictConfig, key: str, where: str) -> None:
    node: Any = cfg
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            choices = list(node.keys()) if isinstance(node, DictConfig) else []
            prefix = ".".join(walked)
            near = difflib.get_close_matches(part, [str(c) for c in choices], n=1)
            full_near = f"{prefix}.{near[0]}" if prefix and near else (near[0] if near else None)
            hint = f"; did you mean {full_near!r}?" if full_near else ""
            valid = f" Valid keys under {prefix or 'the top level'}: {', '.join(map(str, choices))}." if choices else ""
            raise ConfigError(f"unknown config key {key!r} ({where}){hint}{valid}")
        try:
            node = node[part]
        except (ConfigAttributeError, ConfigKeyError):
            node = None
        walked.append(part)



def _describe_type(kind: Any) -> str:
    """'an integer', 'a list of strings', 'a number or null', ... for a schema type."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if kind in names:
        return names[kind]
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    if getattr(kind, "__origin__", None) is list:
        return f"a list of {names.get(args[0], 'values').split(' ', 1)[1]}s" if args else "a list"
    if len(args) == 1 and type(None) in getattr(kind, "__args__", ()):
        return f"{_describe_type(args[0])} or null"
    return getattr(kind, "__name__", str(kind))


def _example(key: str, kind: Any) -> str:
    default = _default_of(key)
    if isinstance(default, list):
        return "[" + ", ".join(map(str, default)) + "]"
    if default is None:
        return {int: "1", float: "0.5", str: "text"}.get(next(
            (a for a in getattr(kind, "__args__", ()) if a is not type(None)), str), "null")
    return str(default).lower() if isinstance(default, bool) else str(default)


def _default_of(key: str) -> Any:
    node: Any = GSPOConfig()
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, dotted))
        else:
            items.append((dotted, value))
    return items


def _yaml_line(text: str, dotted_key: str) -> int | str:
    """1-based line of ``dotted_key`` in a YAML document, or '?' when it cannot be located."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return "?"
    for part in dotted_key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return "?"
        for key_node, value_node in node.value:
            if key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return "?"
    return line

