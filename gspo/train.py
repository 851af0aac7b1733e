"""``python -m gspo.train [--config FILE] [key=value ...]``: the same as ``gspo train``."""

import sys

from gspo.cli import main


def run(argv: list[str] | None = None) -> int:
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(run())
