#!/usr/bin/env bash
# The README's test command: install (CPU torch pinned first), lint, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install torch==2.13.0
pip install -e '.[test]'
ruff check .
python -m pytest -q
