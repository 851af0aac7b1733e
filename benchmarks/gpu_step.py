"""One training step on one CUDA device, per rollout engine: a Qwen2-shaped random model of ~0.5B parameters
(Qwen2.5-0.5B's shape), GSM8K-length prompts, 256 sequences (32 prompts x 8) of exactly 512 response tokens
(EOS ignored). Prints one JSON line per engine: generated tokens/s, the step-time split, peak memory.

    python benchmarks/gpu_step.py                      # hf, then vllm (pip install -e '.[vllm]')
    python benchmarks/gpu_step.py --engines hf --steps 2

Each engine runs in its own process (its own CUDA context, so peak memory is its own); the first step (allocator
and kernel warm-up, vLLM's first push) is reported apart from the mean of the following ones. Without CUDA it
refuses with exit code 2 (the CPU comparison is benchmarks/rollout_engines.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHASES = ("timing/gen", "timing/reward", "timing/old_log_prob", "timing/update", "timing/step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated registered engine names")
    parser.add_argument("--steps", type=int, default=3, help="training steps per engine (the first is warm-up)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step (x --n sequences)")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=512)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.35, help="vllm's share of the device")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one engine in this process
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.n < 1 or args.response_length < 1:
        parser.error("--steps, --prompts, --n and --response-length must be >= 1")
    return args


def write_assets(folder: Path, num_prompts: int) -> None:
    """The random model (Qwen2.5-0.5B's shape: ~494M parameters), a word-level tokenizer over its 151,936 ids,
    GSM8K-length prompts (80-200 words of one token each) and a reward that splits groups (response parity)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = 151936
    config = Qwen2Config(vocab_size=vocab, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, rope_theta=1e6, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    words = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, vocab)}}
    backend = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                            model_max_length=4096).save_pretrained(folder / "model")
    rng = random.Random(0)
    with open(folder / "train.jsonl", "w") as sink:
        for _ in range(num_prompts * 4):
            prompt = " ".join(f"w{rng.randrange(2, vocab)}" for _ in range(rng.randint(80, 200)))
            sink.write(json.dumps({"prompt": prompt, "ground_truth": "0", "data_source": "bench"}) + "\n")
    (folder / "reward.py").write_text("def compute_score(response_text, ground_truth, extra_info):\n"
                                      "    return float(len(response_text.split()) % 2)\n")


def overrides(folder: Path, engine: str, args: argparse.Namespace) -> list[str]:
    items = [f"actor_rollout_ref.model.path={folder / 'model'}", f"data.train_files=[{folder / 'train.jsonl'}]",
             "data.val_files=[]", "data.apply_chat_template=never", "data.max_prompt_length=256",
             f"data.max_response_length={args.response_length}", f"data.train_batch_size={args.prompts}",
             f"data.gen_batch_size={args.prompts}", f"actor_rollout_ref.rollout.n={args.n}",
             f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
             "actor_rollout_ref.actor.logits_chunk_size=1024",
             "actor_rollout_ref.actor.use_rollout_log_probs=false", "actor_rollout_ref.rollout.ignore_eos=true",
             f"actor_rollout_ref.rollout.name={engine}", "algorithm.filter_groups.enable=false",
             f"custom_reward_function.path={folder / 'reward.py'}", f"trainer.total_training_steps={args.steps}",
             "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.logger=[]", "trainer.device=cuda",
             "trainer.resume_mode=disable", f"trainer.default_local_dir={folder / ('run_' + engine)}"]
    if engine == "vllm":
        items.append(f"actor_rollout_ref.rollout.gpu_memory_utilization={args.gpu_memory_utilization}")
    return items


def run_child(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps with one engine in this process; timings per phase, tokens/s, peak memory."""
    import torch

    from gspo.config import load_config
    from gspo.trainer import Trainer

    folder = Path(args.folder)
    start = time.perf_counter()
    trainer = Trainer(load_config(None, overrides(folder, args.child, args)))
    build_s = time.perf_counter() - start
    steps, device_used = [], []
    for _ in range(args.steps):
        steps.append(trainer.train_step())
        trainer.global_step += 1
        free, total = torch.cuda.mem_get_info()
        device_used.append((total - free) / 2**30)
    later = steps[1:] or steps
    mean = {key: sum(s.get(key, 0.0) for s in later) / len(later) for key in (*PHASES, "perf/gen_tokens_per_s")}
    return {"engine": args.child, "device": torch.cuda.get_device_name(), "steps": args.steps,
            "sequences_per_step": args.prompts * args.n, "response_tokens": args.response_length,
            "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 1),
            "build_s": round(build_s, 1), "first_step_s": round(steps[0]["timing/step"], 2),
            "gen_tokens_per_s": round(mean["perf/gen_tokens_per_s"], 1),
            "step_split_s": {key.split("/")[1]: round(mean[key], 3) for key in PHASES},
            "peak_torch_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_device_used_gib": round(max(device_used), 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_step.py: needs one CUDA device (torch.cuda.is_available() is False); on CPU compare the engines "
              "with benchmarks/rollout_engines.py", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_assets(Path(tmp), args.prompts)
        for engine in [e for e in args.engines.split(",") if e]:
            command = [sys.executable, __file__, "--child", engine, "--folder", tmp, "--steps", str(args.steps),
                       "--prompts", str(args.prompts), "--n", str(args.n), "--response-length",
                       str(args.response_length), "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
            proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(json.dumps({"engine": engine, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":  # vLLM's engine may start helper processes that re-import this file
    sys.exit(main())
