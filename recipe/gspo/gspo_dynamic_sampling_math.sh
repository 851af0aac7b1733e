#!/usr/bin/env bash
# GSPO + DAPO dynamic sampling on competition math with a local Qwen2.5-Math-1.5B or -7B base checkpoint, rewards
# verified by math-verify (gspo/rewards/math), on every visible GPU of one or more nodes through torchrun + FSDP2.
# Train on DAPO-Math-17k (default) or MATH; validate on MATH-500.
#
#   bash recipe/gspo/gspo_dynamic_sampling_math.sh [key=value ...]         # overrides are applied last
#   MODEL_PATH=~/models/Qwen2.5-Math-7B NGPUS=8 bash recipe/gspo/gspo_dynamic_sampling_math.sh
#   NNODES=2 NGPUS=8 MASTER_ADDR=node0 NODE_RANK=0 bash recipe/gspo/gspo_dynamic_sampling_math.sh   # on each node
#
# Environment:
#   MODEL_PATH    local HF checkpoint (default ~/models/Qwen2.5-Math-1.5B; nothing is downloaded)
#   TRAIN_FILE    the training set as published (default ./data/raw/dapo-math-17k.parquet, from
#                 https://huggingface.co/datasets/BytedTsinghua-SIA/DAPO-Math-17k, data/dapo-math-17k.parquet)
#   TRAIN_FORMAT  dapo17k (default) | math (lighteval/MATH layout: problem, solution) | math500
#   VAL_FILE      MATH-500 as published (default ./data/raw/math500_test.jsonl, the test.jsonl of
#                 https://huggingface.co/datasets/HuggingFaceH4/MATH-500)
#   DATA_DIR      prepared train.parquet / test.parquet (default ./data/math; written by `gspo data math`);
#                 TRAIN_FILE / VAL_FILE are only read while DATA_DIR lacks them
#   OUTPUT_DIR    run folder (default ./outputs/gspo-dynamic-sampling-math)
#   PYTHON        interpreter with gspo[math] installed (default python)
#   NGPUS, NNODES processes per node (default: all visible GPUs) and nodes (default 1), as the 3B GSM8K recipe
#   (math-verify's settings are config keys: reward_model.math_workers=N verifier processes per rank, default
#   cores / local ranks, at most 8; reward_model.math_timeout_s=S CPU seconds per answer, default 2; a timed-out
#   answer scores 0 and counts in reward/errors, as this recipe sets reward_model.on_error=zero)
#   ROLLOUT_ENGINE  vllm (default; pip install -e '.[vllm]') or hf (transformers' decode loop, no extra install)
#   GSPO_ALLOW_CPU=1  skip the GPU check (the tiny CPU recipe, gspo_dynamic_sampling_tiny_math.sh, reuses this
#                 with ROLLOUT_ENGINE=hf)
#
# Generation: one in-process vLLM engine per GPU (bf16, 128 sequences decoded at once, up to half of the GPU's
# memory: vLLM's default gpu_memory_utilization=0.5), asleep during the update (KV cache freed, weights on the
# host). Its log-probs differ from the trainer's, so the old log-probs are recomputed and the loss is weighted by
# GSPO's rollout correction: the geometric mean of pi_old / pi_rollout over each response, truncated at 2
# (algorithm.rollout_correction.rollout_is=geometric); over 3,072-token responses the product of the token ratios
# (level sequence) sits at the threshold or near 0.
# Lengths: Qwen2.5-Math has a 4,096-token context, so prompts get 1,024 tokens and responses 3,072, the last 512
# of them under DAPO's soft overlong penalty. Memory: fp32 weights + gradients + AdamW states are 16 bytes per
# parameter: ~25 GB for 1.5B (one 80 GB GPU holds it with the bf16 generation copy and a 128-sequence KV cache
# of ~15 GB), ~122 GB for 7B (shard it over >= 4 GPUs, 31 GB each, or add
# actor_rollout_ref.actor.fsdp_config.param_offload=true). Logits are computed in chunks of 1,024 positions.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen2.5-Math-1.5B}
TRAIN_FILE=${TRAIN_FILE:-./data/raw/dapo-math-17k.parquet}
TRAIN_FORMAT=${TRAIN_FORMAT:-dapo17k}
VAL_FILE=${VAL_FILE:-./data/raw/math500_test.jsonl}
DATA_DIR=${DATA_DIR:-./data/math}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/gspo-dynamic-sampling-math}
NNODES=${NNODES:-1}
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-vllm}
if [[ -z "${NGPUS:-}" ]]; then
  NGPUS=$("$PYTHON" -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)
fi

# Everything that is missing is reported at once, before any work starts.
problems=()
has_gpu() { "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; }
if [[ "${GSPO_ALLOW_CPU:-0}" != 1 ]] && ! has_gpu; then
  problems+=("no CUDA GPU: torch.cuda.is_available() is False (this recipe needs GPUs: one 80 GB GPU for 1.5B, four
  for 7B; set GSPO_ALLOW_CPU=1 to run on CPU anyway, or use gspo_dynamic_sampling_tiny_math.sh)")
fi
if [[ ! -f "$MODEL_PATH/config.json" ]]; then
  problems+=("no model folder at MODEL_PATH=$MODEL_PATH (expected a local HF checkpoint with config.json, e.g.
  Qwen2.5-Math-1.5B or Qwen2.5-Math-7B saved with save_pretrained; set MODEL_PATH)")
fi
if ! "$PYTHON" -c 'import math_verify' 2>/dev/null; then
  problems+=("math-verify is not installed for $PYTHON: pip install 'gspo[math]'")
fi
case "$ROLLOUT_ENGINE" in
  vllm)
    engine_args=(actor_rollout_ref.rollout.name=vllm)
    if ! "$PYTHON" -c 'import vllm' 2>/dev/null; then
      problems+=("vLLM is not installed for $PYTHON (ROLLOUT_ENGINE=vllm): pip install -e '.[vllm]', or set
  ROLLOUT_ENGINE=hf to generate with transformers")
    fi ;;
  hf) engine_args=(actor_rollout_ref.rollout.name=hf) ;;
  *) problems+=("ROLLOUT_ENGINE=$ROLLOUT_ENGINE: use vllm or hf") ;;
esac
if [[ ! -f "$DATA_DIR/train.parquet" && ! -f "$TRAIN_FILE" ]]; then
  problems+=("no training data: DATA_DIR=$DATA_DIR has no train.parquet and TRAIN_FILE=$TRAIN_FILE does not exist;
  get data/dapo-math-17k.parquet from https://huggingface.co/datasets/BytedTsinghua-SIA/DAPO-Math-17k (or MATH
  with TRAIN_FORMAT=math) and set TRAIN_FILE")
fi
if [[ ! -f "$DATA_DIR/test.parquet" && ! -f "$VAL_FILE" ]]; then
  problems+=("no validation data: DATA_DIR=$DATA_DIR has no test.parquet and VAL_FILE=$VAL_FILE does not exist; get
  test.jsonl from https://huggingface.co/datasets/HuggingFaceH4/MATH-500 and set VAL_FILE")
fi
if (( ${#problems[@]} )); then
  for problem in "${problems[@]}"; do echo "error: $problem" >&2; done
  exit 1
fi

if [[ ! -f "$DATA_DIR/train.parquet" ]]; then
  "$PYTHON" -m gspo data math --input "$TRAIN_FILE" --format "$TRAIN_FORMAT" --output "$DATA_DIR" --split train
fi
if [[ ! -f "$DATA_DIR/test.parquet" ]]; then
  "$PYTHON" -m gspo data math --input "$VAL_FILE" --format math500 --output "$DATA_DIR" --split test
fi

# gspo train re-launches itself through torchrun when trainer.nnodes x trainer.n_gpus_per_node > 1.
"$PYTHON" -m gspo train --config "$REPO_DIR/recipe/gspo/config/gspo_dynamic_sampling.yaml" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="[$DATA_DIR/train.parquet]" \
  data.val_files="[$DATA_DIR/test.parquet]" \
  data.apply_chat_template=auto \
  data.max_prompt_length=1024 \
  data.max_response_length=3072 \
  data.filter_overlong_prompts=true \
  data.train_batch_size=64 \
  data.gen_batch_size=96 \
  actor_rollout_ref.actor.policy_loss.loss_mode=gspo \
  actor_rollout_ref.actor.clip_ratio_low=0.0003 \
  actor_rollout_ref.actor.clip_ratio_high=0.0004 \
  actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
  actor_rollout_ref.actor.ppo_mini_batch_size=16 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.actor.logits_chunk_size=1024 \
  actor_rollout_ref.actor.ppo_epochs=1 \
  actor_rollout_ref.actor.grad_clip=1.0 \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.05 \
  actor_rollout_ref.rollout.n=16 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.top_p=1.0 \
  actor_rollout_ref.rollout.micro_batch_size=128 \
  "${engine_args[@]}" \
  actor_rollout_ref.rollout.val_kwargs.n=1 \
  actor_rollout_ref.rollout.val_kwargs.do_sample=false \
  actor_rollout_ref.rollout.val_kwargs.temperature=0 \
  algorithm.adv_estimator=grpo \
  algorithm.filter_groups.enable=true \
  algorithm.filter_groups.metric=acc \
  algorithm.filter_groups.max_num_gen_batches=10 \
  algorithm.rollout_correction.rollout_is=geometric \
  algorithm.rollout_correction.rollout_is_threshold=2.0 \
  reward_model.overlong_buffer.enable=true \
  reward_model.overlong_buffer.len=512 \
  reward_model.overlong_buffer.penalty_factor=1.0 \
  reward_model.on_error=zero \
  trainer.total_epochs=1 \
  trainer.total_training_steps=null \
  trainer.test_freq=10 \
  trainer.save_freq=20 \
  trainer.val_before_train=true \
  trainer.default_local_dir="$OUTPUT_DIR" \
  trainer.device=auto \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$NGPUS" \
  "$@"
