"""Validate the GSPO recipe as ``gspo validate`` does for a run: its config, its scripts and every key they set.

    python recipe/gspo/validate_implementation.py                       # config + scripts, no model or data needed
    python recipe/gspo/validate_implementation.py --model DIR --data DIR  # + the full preflight of the 3B command

Checks, each printed as one ``ok`` / ``error`` line (exit 2 on any error):

1. ``config/gspo_dynamic_sampling.yaml`` resolves under the schema and sets GSPO's algorithm: loss_mode=gspo,
   sequence-level clip ranges 3e-4 / 4e-4, seq-mean-token-mean aggregation, DAPO group filtering on.
2. Both shell scripts parse (``bash -n``).
3. Every ``key=value`` the scripts pass to ``gspo train`` (the engine's too, ``engine_args=(...)`` for each
   ``ROLLOUT_ENGINE``) is a schema key or a verl key we handle (:mod:`gspo.verl_compat`), and the 3B command line
   resolves with the recipe config: with the vllm engine where vLLM is installed, else with the hf one.
4. With ``--model`` and ``--data`` (prepared ``train.parquet`` / ``test.parquet``): ``gspo validate`` on that
   command line (model loads as a causal LM, data, reward, output folder, device).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config" / "gspo_dynamic_sampling.yaml"
SCRIPTS = (HERE / "gspo_dynamic_sampling_3b_math.sh", HERE / "gspo_dynamic_sampling_tiny_gsm8k.sh")
OVERRIDE = re.compile(r"^\s+([A-Za-z_+][\w.+]*)=(\S*?)\s*\\?$")  # a `  key=value \` line of a script
TRAIN_COMMAND = re.compile(r"^[^#]*(-m gspo train|gspo_dynamic_sampling_3b_math\.sh\")")  # starts a training command
ENGINE_ARGS = re.compile(r"^\s*(?:(\w+)\)\s*)?engine_args=\(([^)]*)\)")  # `[hf) ]engine_args=(key=value ...)`


def script_overrides(script: Path) -> list[tuple[str, str]]:
    """The ``key=value`` lines a recipe script passes to ``gspo train`` (shell variables left as written)."""
    found, in_command = [], False
    for line in script.read_text().splitlines():
        if TRAIN_COMMAND.match(line):
            in_command = True
        elif in_command and (match := OVERRIDE.match(line)):
            found.append(match.groups())
        if not line.rstrip().endswith("\\"):
            in_command = False
    return found


def engine_overrides(script: Path) -> dict[str, list[tuple[str, str]]]:
    """ROLLOUT_ENGINE -> the ``key=value`` pairs of its ``engine_args=(...)`` in a recipe script."""
    engines, engine = {}, None
    for line in script.read_text().splitlines():
        if re.match(r"^\s*(\w+)\)\s*$", line):  # a `vllm)` case label on its own line
            engine = line.strip()[:-1]
        if match := ENGINE_ARGS.match(line):
            name = match.group(1) or engine
            engines[name] = [tuple(arg.split("=", 1)) for arg in match.group(2).split()]
    return engines


def check_config() -> str:
    from gspo.config import load_config

    cfg = load_config(CONFIG, [])
    actor = cfg.actor_rollout_ref.actor
    expected = {"loss_mode": (actor.policy_loss.loss_mode, "gspo"), "clip_ratio_low": (actor.clip_ratio_low, 3e-4),
                "clip_ratio_high": (actor.clip_ratio_high, 4e-4),
                "loss_agg_mode": (actor.loss_agg_mode, "seq-mean-token-mean"),
                "filter_groups.enable": (cfg.algorithm.filter_groups.enable, True)}
    wrong = [f"{key}={got!r} (GSPO: {want!r})" for key, (got, want) in expected.items() if got != want]
    if wrong:
        raise ValueError(f"{CONFIG.name}: " + ", ".join(wrong))
    return f"{CONFIG.name} resolves: GSPO loss, clip 3e-4 / 4e-4, seq-mean-token-mean, dynamic sampling on"


def check_script_syntax(script: Path) -> str:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"{script.name}: {proc.stderr.strip()}")
    return f"{script.name} parses"


def check_script_keys(script: Path) -> str:
    from gspo.config import field_type
    from gspo.verl_compat import find

    engine_keys = [key for pairs in engine_overrides(script).values() for key, _ in pairs]
    keys = [key.lstrip("+") for key, _ in script_overrides(script)] + engine_keys
    unknown = [key for key in keys if field_type(key) is None and find(key) is None]
    if unknown:
        raise ValueError(f"{script.name}: unknown keys {unknown} (gspo config lists the keys)")
    return f"{script.name}: {len(keys)} keys, all known"


def check_3b_command_line(model: str = "embedded://addition", data: str | None = None) -> list[str]:
    """The 3B script's overrides with its shell variables filled in (and its engine's: vllm where vLLM is
    installed, else hf), resolved with the recipe config."""
    import importlib.util

    from gspo.config import load_config

    values = {"$MODEL_PATH": model, "$DATA_DIR": data or "/data/gsm8k", "$OUTPUT_DIR": "outputs/recipe-check",
              "$NNODES": "1", "$NGPUS": "1"}
    overrides = []
    for key, value in script_overrides(SCRIPTS[0]):
        for name, filled in values.items():
            value = value.replace(f'"{name}"', filled).replace(name, filled)
        overrides.append(f"{key}={value}")
    engine = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    overrides += [f"{key}={value}" for key, value in engine_overrides(SCRIPTS[0])[engine]]
    load_config(CONFIG, overrides)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local model folder: also run gspo validate on the 3B command line")
    parser.add_argument("--data", help="folder with the prepared train.parquet / test.parquet (with --model)")
    args = parser.parse_args(argv)
    checks = [check_config, *[lambda s=s: check_script_syntax(s) for s in SCRIPTS],
              *[lambda s=s: check_script_keys(s) for s in SCRIPTS],
              lambda: f"{SCRIPTS[0].name}: {len(check_3b_command_line())} overrides resolve with the recipe config"]
    failed = 0
    for check in checks:
        try:
            print(f"ok: {check()}")
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"error: {exc}")
    if args.model:
        from gspo.cli import main as gspo_main

        overrides = check_3b_command_line(args.model, args.data)
        failed += gspo_main(["validate", "--config", str(CONFIG), *overrides]) != 0
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
