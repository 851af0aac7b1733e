#!/usr/bin/env bash
# The 3B GSM8K pipeline end to end on CPU in a few minutes, with a tiny random-initialised Qwen2:
#   prepare GSM8K -> build tiny model + tokenizer -> gspo train (gspo_dynamic_sampling_3b_math.sh) -> gspo eval
#   -> gspo report.
# A smoke test of the plumbing, not of learning: a random 2-layer model never writes "#### <right number>", so every
# reward is 0, every group's advantages are 0 and the update changes nothing.
#
#   bash recipe/gspo/gspo_dynamic_sampling_tiny_gsm8k.sh [key=value ...]     # train overrides, applied last
#
# Environment: GSM8K_DIR, DATA_DIR, PYTHON as in gspo_dynamic_sampling_3b_math.sh; OUTPUT_DIR (default
# ./outputs/gspo-tiny-gsm8k) receives tiny_model/, run/ (the training run, with eval/ and report.*).
# TINY_STEPS (default 4) training steps, TINY_EVAL_PROMPTS (default 32) prompts for gspo eval.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
DATA_DIR=${DATA_DIR:-./data/gsm8k}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/gspo-tiny-gsm8k}
MODEL_DIR=$OUTPUT_DIR/tiny_model
RUN_DIR=$OUTPUT_DIR/run
if [[ -z "${GSM8K_DIR:-}" && -d "$REPO_DIR/../shared/data/gsm8k" ]]; then
  GSM8K_DIR=$REPO_DIR/../shared/data/gsm8k
fi
# Tiny matrices gain nothing from threads, and OpenMP's spin-waiting slows a busy CPU down many times.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# The tokenizer is trained on the prepared prompts, so the data comes first.
if [[ ! -f "$DATA_DIR/train.parquet" || ! -f "$DATA_DIR/test.parquet" ]]; then
  if [[ -z "${GSM8K_DIR:-}" || ! -f "$GSM8K_DIR/train.jsonl" || ! -f "$GSM8K_DIR/test.jsonl" ]]; then
    echo "error: no GSM8K data: DATA_DIR=$DATA_DIR has no train.parquet/test.parquet and" \
         "GSM8K_DIR=${GSM8K_DIR:-(unset)} has no train.jsonl/test.jsonl; get GSM8K from" \
         "https://github.com/openai/grade-school-math (grade_school_math/data) and set GSM8K_DIR" >&2
    exit 1
  fi
  "$PYTHON" -m gspo data gsm8k --input "$GSM8K_DIR" --output "$DATA_DIR"
fi

if [[ ! -f "$MODEL_DIR/config.json" ]]; then
  # A random tiny Qwen2 and a byte-level BPE tokenizer trained on the GSM8K prompts (ChatML template, so
  # data.apply_chat_template=auto renders prompts as it does for Qwen2.5-Instruct); no supervised fitting.
  "$PYTHON" "$REPO_DIR/recipe/gspo/build_tiny_model.py" "$DATA_DIR/train.parquet" "$MODEL_DIR" 0
fi

# Random model -> accuracy 0 on every response -> every group is all-equal: dynamic sampling would drop them all and
# stop at max_num_gen_batches, so it is off here (the 3B run keeps it on).
# transformers' decode loop generates on the CPU (the GPU run's vLLM engine is not needed); the geometric
# rollout correction stays on, as in the GPU run.
MODEL_PATH=$MODEL_DIR DATA_DIR=$DATA_DIR OUTPUT_DIR=$RUN_DIR PYTHON=$PYTHON GSPO_ALLOW_CPU=1 ROLLOUT_ENGINE=hf \
  bash "$REPO_DIR/recipe/gspo/gspo_dynamic_sampling_3b_math.sh" \
  trainer.device=cpu \
  trainer.total_training_steps="${TINY_STEPS:-4}" \
  trainer.test_freq=2 \
  trainer.save_freq=-1 \
  data.train_batch_size=4 \
  data.gen_batch_size=8 \
  data.max_response_length=32 \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.actor.ppo_mini_batch_size=2 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.actor.optim.lr=1e-3 \
  actor_rollout_ref.rollout.micro_batch_size=512 \
  algorithm.filter_groups.enable=false \
  "$@"

"$PYTHON" -m gspo eval --model "$RUN_DIR/final_model" --data "$DATA_DIR/test.parquet" \
  limit="${TINY_EVAL_PROMPTS:-32}" n=4 k=4 temperature=1.0 max_response_length=32 device=cpu \
  output_dir="$RUN_DIR/eval"

if "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  "$PYTHON" -m gspo report "$RUN_DIR"
else
  echo "skipping gspo report: matplotlib is not installed (pip install 'gspo[report]')"
fi
