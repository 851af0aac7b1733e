"""Command line: ``gspo train|validate [--config FILE] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import sys

from gspo.config import ConfigError, GSPOConfig, load_config, to_yaml

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gspo", description="GSPO + dynamic sampling RL post-training.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "train a policy (no arguments: the embedded addition task on CPU)"),
                       ("validate", "resolve and check config, data, model and reward without training")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", help="YAML file with config groups (data, actor_rollout_ref, ...)")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, applied last")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        if args.command == "validate":
            return validate(config)
        return train(config)
    except (ConfigError, FileNotFoundError, PermissionError, ValueError) as exc:
        print(f"gspo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def validate(config: GSPOConfig) -> int:
    """Check everything a run needs up front (data files, model path, reward function); train nothing."""
    from gspo.trainer.setup import preflight

    report = preflight(config)
    print(to_yaml(config))
    print(report)
    return 0


def train(config: GSPOConfig) -> int:
    from gspo.trainer import Trainer

    metrics = Trainer(config).fit()
    if "val/acc_mean" in metrics:
        print(f"final val/acc_mean={metrics['val/acc_mean']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
