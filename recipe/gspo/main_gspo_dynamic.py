"""Thin entry for the recipe: ``python recipe/gspo/main_gspo_dynamic.py [key=value ...]``.

Runs ``gspo train`` with ``config/gspo_dynamic_sampling.yaml``; every key can still be overridden.
"""

import sys
from pathlib import Path

from gspo.cli import main

if __name__ == "__main__":
    config = Path(__file__).resolve().parent / "config" / "gspo_dynamic_sampling.yaml"
    sys.exit(main(["train", "--config", str(config), *sys.argv[1:]]))
