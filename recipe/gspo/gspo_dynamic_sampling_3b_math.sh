#!/usr/bin/env bash
# GSPO + DAPO dynamic sampling on GSM8K with Qwen2.5-3B-Instruct (the seed design's 3B math run), on every visible
# GPU of one or more nodes through torchrun + FSDP2.
#
#   bash recipe/gspo/gspo_dynamic_sampling_3b_math.sh [key=value ...]      # overrides are applied last
#   NGPUS=4 bash recipe/gspo/gspo_dynamic_sampling_3b_math.sh              # 4 of this node's GPUs
#   # two nodes of 8 GPUs: run on each node, NODE_RANK=0 on the node named by MASTER_ADDR, 1 on the other
#   NNODES=2 NGPUS=8 MASTER_ADDR=node0 MASTER_PORT=29500 NODE_RANK=0 bash recipe/gspo/gspo_dynamic_sampling_3b_math.sh
#
# Environment:
#   MODEL_PATH   local HF checkpoint (default ~/models/Qwen2.5-3B-Instruct; nothing is downloaded)
#   GSM8K_DIR    folder with the original GSM8K train.jsonl / test.jsonl (https://github.com/openai/grade-school-math,
#                grade_school_math/data); default ../shared/data/gsm8k next to the repository, if it exists.
#                Only read when DATA_DIR has no prepared Parquet files yet.
#   DATA_DIR     prepared train.parquet / test.parquet (default ./data/gsm8k; written by `gspo data gsm8k`)
#   OUTPUT_DIR   run folder: metrics.jsonl, checkpoints, final_model (default ./outputs/gspo-dynamic-sampling-3b-gsm8k)
#   PYTHON       interpreter with gspo installed (default python)
#   NGPUS        processes per node (default: all visible GPUs; 1 without a GPU)
#   NNODES       nodes (default 1); more than one needs MASTER_ADDR, NODE_RANK (and MASTER_PORT) on every node
#   ROLLOUT_ENGINE  vllm (default; pip install -e '.[vllm]') or hf (transformers' decode loop, no extra install)
#   GSPO_ALLOW_CPU=1  skip the GPU check (the tiny CPU recipe reuses this script, with ROLLOUT_ENGINE=hf)
#
# Generation: one in-process vLLM engine per GPU (bf16, 128 sequences decoded at once), asleep during the update.
# Its log-probs differ from the trainer's (bf16 kernels), so the old log-probs are recomputed and the loss is
# weighted by GSPO's rollout correction: the geometric mean of pi_old / pi_rollout over each response, truncated at
# 2 (algorithm.rollout_correction.rollout_is=geometric; the product of a long response's token ratios, level
# sequence, sits at the threshold or near 0).
# Memory: fp32 weights + gradients + AdamW states are ~48 GB for 3B parameters; on one 80 GB GPU they fit whole,
# on N GPUs FSDP2 shards them (48/N GB each). vLLM may take 30 % of each GPU (gpu_memory_utilization=0.3, 24 GB
# of 80: 6 GB of bf16 weights and the KV cache, 7 GB for 128 sequences of 1536 tokens); asleep, it frees the KV
# cache and moves its weights to the host. bf16 compute for every forward; micro-batches of 4 sequences keep the
# (4, 1536, 151936) logits small.
# Tight on memory: actor_rollout_ref.actor.fsdp_config.param_offload=true (slower steps, state on the CPU).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python}
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen2.5-3B-Instruct}
DATA_DIR=${DATA_DIR:-./data/gsm8k}
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/gspo-dynamic-sampling-3b-gsm8k}
NNODES=${NNODES:-1}
ROLLOUT_ENGINE=${ROLLOUT_ENGINE:-vllm}
if [[ -z "${NGPUS:-}" ]]; then
  NGPUS=$("$PYTHON" -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)
fi
if [[ -z "${GSM8K_DIR:-}" && -d "$REPO_DIR/../shared/data/gsm8k" ]]; then
  GSM8K_DIR=$REPO_DIR/../shared/data/gsm8k
fi

# Everything that is missing is reported at once, before any work starts.
problems=()
has_gpu() { "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; }
if [[ "${GSPO_ALLOW_CPU:-0}" != 1 ]] && ! has_gpu; then
  problems+=("no CUDA GPU: torch.cuda.is_available() is False (this recipe needs one GPU with ~80 GB; set
  GSPO_ALLOW_CPU=1 to run on CPU anyway, or use gspo_dynamic_sampling_tiny_gsm8k.sh)")
fi
if [[ ! -f "$MODEL_PATH/config.json" ]]; then
  problems+=("no model folder at MODEL_PATH=$MODEL_PATH (expected a local HF checkpoint with config.json, e.g.
  Qwen2.5-3B-Instruct saved with save_pretrained; set MODEL_PATH)")
fi
case "$ROLLOUT_ENGINE" in
  vllm)
    engine_args=(actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.gpu_memory_utilization=0.3)
    if ! "$PYTHON" -c 'import vllm' 2>/dev/null; then
      problems+=("vLLM is not installed for $PYTHON (ROLLOUT_ENGINE=vllm): pip install -e '.[vllm]', or set
  ROLLOUT_ENGINE=hf to generate with transformers")
    fi ;;
  hf) engine_args=(actor_rollout_ref.rollout.name=hf) ;;
  *) problems+=("ROLLOUT_ENGINE=$ROLLOUT_ENGINE: use vllm or hf") ;;
esac
if [[ ! -f "$DATA_DIR/train.parquet" || ! -f "$DATA_DIR/test.parquet" ]]; then
  if [[ -z "${GSM8K_DIR:-}" || ! -f "$GSM8K_DIR/train.jsonl" || ! -f "$GSM8K_DIR/test.jsonl" ]]; then
    problems+=("no GSM8K data: DATA_DIR=$DATA_DIR has no train.parquet/test.parquet and GSM8K_DIR=${GSM8K_DIR:-(unset)}
  has no train.jsonl/test.jsonl; get GSM8K from https://github.com/openai/grade-school-math (grade_school_math/data)
  and set GSM8K_DIR to that folder")
  fi
fi
if (( ${#problems[@]} )); then
  for problem in "${problems[@]}"; do echo "error: $problem" >&2; done
  exit 1
fi

if [[ ! -f "$DATA_DIR/train.parquet" || ! -f "$DATA_DIR/test.parquet" ]]; then
  "$PYTHON" -m gspo data gsm8k --input "$GSM8K_DIR" --output "$DATA_DIR"
fi

# gspo train re-launches itself through torchrun when trainer.nnodes x trainer.n_gpus_per_node > 1.
"$PYTHON" -m gspo train --config "$REPO_DIR/recipe/gspo/config/gspo_dynamic_sampling.yaml" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="[$DATA_DIR/train.parquet]" \
  data.val_files="[$DATA_DIR/test.parquet]" \
  data.apply_chat_template=auto \
  data.max_prompt_length=512 \
  data.max_response_length=1024 \
  data.filter_overlong_prompts=true \
  data.train_batch_size=32 \
  data.gen_batch_size=48 \
  actor_rollout_ref.actor.policy_loss.loss_mode=gspo \
  actor_rollout_ref.actor.clip_ratio_low=0.0003 \
  actor_rollout_ref.actor.clip_ratio_high=0.0004 \
  actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
  actor_rollout_ref.actor.ppo_mini_batch_size=8 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
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
  algorithm.filter_groups.max_num_gen_batches=5 \
  algorithm.rollout_correction.rollout_is=geometric \
  algorithm.rollout_correction.rollout_is_threshold=2.0 \
  reward_model.overlong_buffer.enable=false \
  trainer.total_epochs=1 \
  trainer.total_training_steps=null \
  trainer.test_freq=5 \
  trainer.save_freq=20 \
  trainer.val_before_train=true \
  trainer.default_local_dir="$OUTPUT_DIR" \
  trainer.device=auto \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$NGPUS" \
  "$@"
