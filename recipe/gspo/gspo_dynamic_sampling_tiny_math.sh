#!/usr/bin/env bash
# The math recipe end to end on CPU in a couple of minutes, with a tiny random-initialised Qwen2:
#   gspo data math (hand-written MATH / MATH-500 files) -> build tiny model + tokenizer
#   -> gspo train (gspo_dynamic_sampling_math.sh, math-verify rewards) -> gspo eval (pass@k, maj@k) -> gspo report.
# A smoke test of the plumbing, not of learning: the 2-layer model is fitted for a few seconds to answer in
# \boxed{} (TINY_SFT_STEPS, default 80), so its samples carry boxed answers, right on some training prompts and
# wrong elsewhere, which the math-verify workers check in training and in eval (maj@k by equivalence).
#
#   bash recipe/gspo/gspo_dynamic_sampling_tiny_math.sh [key=value ...]     # train overrides, applied last
#
# Environment: PYTHON as in gspo_dynamic_sampling_math.sh; TRAIN_FILE (default recipe/gspo/data/math_smoke_train.jsonl,
# lighteval/MATH layout) with TRAIN_FORMAT (default math), VAL_FILE (default recipe/gspo/data/math_smoke_test.jsonl,
# MATH-500 layout); OUTPUT_DIR (default ./outputs/gspo-tiny-math) receives data/, tiny_model/, run/ (the training
# run, with eval/ and report.*). TINY_STEPS (default 2) training steps, TINY_EVAL_PROMPTS (default 6) eval prompts.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
TRAIN_FILE=${TRAIN_FILE:-$REPO_DIR/recipe/gspo/data/math_smoke_train.jsonl}
TRAIN_FORMAT=${TRAIN_FORMAT:-math}
VAL_FILE=${VAL_FILE:-$REPO_DIR/recipe/gspo/data/math_smoke_test.jsonl}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/gspo-tiny-math}
DATA_DIR=$OUTPUT_DIR/data
MODEL_DIR=$OUTPUT_DIR/tiny_model
RUN_DIR=$OUTPUT_DIR/run
# Tiny matrices gain nothing from threads, and OpenMP's spin-waiting slows a busy CPU down many times.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# The tokenizer is trained on the prepared prompts, so the data comes first.
"$PYTHON" -m gspo data math --input "$TRAIN_FILE" --format "$TRAIN_FORMAT" --output "$DATA_DIR" --split train
"$PYTHON" -m gspo data math --input "$VAL_FILE" --format math500 --output "$DATA_DIR" --split test
if [[ ! -f "$MODEL_DIR/config.json" ]]; then
  # Fitted briefly to answer in \boxed{}, so samples carry answers (right and wrong) for math-verify to check.
  "$PYTHON" "$REPO_DIR/recipe/gspo/build_tiny_model.py" "$DATA_DIR/train.parquet" "$MODEL_DIR" "${TINY_SFT_STEPS:-80}"
fi

# Most groups of such a model are all right or all wrong: dynamic sampling would keep too few and stop at
# max_num_gen_batches, so it is off here (the GPU run keeps it on). The overlong buffer must fit the 32 tokens.
# transformers' decode loop generates on the CPU (the GPU run's vLLM engine is not needed); the geometric
# rollout correction stays on, as in the GPU run.
MODEL_PATH=$MODEL_DIR DATA_DIR=$DATA_DIR OUTPUT_DIR=$RUN_DIR PYTHON=$PYTHON GSPO_ALLOW_CPU=1 ROLLOUT_ENGINE=hf \
  bash "$REPO_DIR/recipe/gspo/gspo_dynamic_sampling_math.sh" \
  trainer.device=cpu \
  trainer.total_training_steps="${TINY_STEPS:-2}" \
  trainer.test_freq=2 \
  trainer.save_freq=-1 \
  trainer.nnodes=1 \
  trainer.n_gpus_per_node=1 \
  data.train_batch_size=4 \
  data.gen_batch_size=8 \
  data.max_response_length=32 \
  reward_model.overlong_buffer.len=8 \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.actor.ppo_mini_batch_size=2 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.actor.optim.lr=1e-3 \
  actor_rollout_ref.rollout.micro_batch_size=512 \
  algorithm.filter_groups.enable=false \
  "$@"

"$PYTHON" -m gspo eval --model "$RUN_DIR/final_model" --data "$DATA_DIR/test.parquet" \
  limit="${TINY_EVAL_PROMPTS:-6}" n=4 k=4 temperature=1.0 max_response_length=32 device=cpu \
  output_dir="$RUN_DIR/eval"

if "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  "$PYTHON" -m gspo report "$RUN_DIR"
else
  echo "skipping gspo report: matplotlib is not installed (pip install 'gspo[report]')"
fi
