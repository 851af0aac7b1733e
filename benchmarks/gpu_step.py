"""One training step on one CUDA device, per rollout engine: a Qwen2-shaped random model of ~0.5B parameters
(Qwen2.5-0.5B's shape), GSM8K-length prompts, 256 sequences (32 prompts x 8) of exactly 512 response tokens
(EOS ignored). Prints one JSON line per engine: generated tokens/s, the step-time split, the update's model FLOPs
utilisation (MFU), peak memory.

    python benchmarks/gpu_step.py                      # hf, then vllm (pip install -e '.[vllm]')
    python benchmarks/gpu_step.py --engines hf --steps 2
    python benchmarks/gpu_step.py --quick --engines hf # seconds: a tiny model, 2 prompts x 2; CPU without CUDA

Each engine runs in its own process (its own CUDA context, so peak memory is its own); the first step (allocator
and kernel warm-up, vLLM's first push) is reported apart from the mean of the following ones. MFU is
6 x parameters x tokens trained per second of ``timing/update`` / the device's dense bf16 peak (``--peak-tflops``,
else looked up by device name; null where neither says). An engine that fails prints a JSON line with its error
and the exit code is 1. Without CUDA it refuses with exit code 2 (the CPU comparison is
benchmarks/rollout_engines.py), except under ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHASES = ("timing/gen", "timing/reward", "timing/old_log_prob", "timing/update", "timing/step")
# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, matched as substrings of
# torch.cuda.get_device_name() in this order (so "H100 PCIe" before "H100", "L40S" before "L40" before "L4").
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("H100", 989.0),
                    ("H200", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0))
# The measured shape (Qwen2.5-0.5B: ~494M parameters) and --quick's (~0.1M parameters, seconds on a CPU).
MODEL_SHAPES = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, prompt_tokens=(80, 200)),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, prompt_tokens=(4, 8)),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated registered engine names")
    parser.add_argument("--steps", type=int, default=3, help="training steps per engine (the first is warm-up)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step (x --n sequences)")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=512)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.35, help="vllm's share of the device")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s for MFU (default: looked up by device name)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model, 1 step of 2 prompts x 2 responses of 4 tokens; runs on CPU without CUDA")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one engine in this process
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.prompts, args.n, args.response_length = 1, 2, 2, 4
    if args.steps < 1 or args.prompts < 1 or args.n < 1 or args.response_length < 1:
        parser.error("--steps, --prompts, --n and --response-length must be >= 1")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be > 0")
    args.shape = "tiny" if args.quick else "qwen2.5-0.5b"
    return args


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU known by name (TFLOP/s), None for one not in ``PEAK_BF16_TFLOPS``.

    >>> peak_bf16_tflops("NVIDIA H100 PCIe"), peak_bf16_tflops("NVIDIA H200"), peak_bf16_tflops("NVIDIA L40S")
    (756.0, 989.0, 362.0)
    >>> peak_bf16_tflops("cpu") is None
    True
    """
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def model_flops_utilisation(num_params: int, tokens_per_s: float, peak_tflops: float | None) -> float | None:
    """MFU of a training update: 6 FLOPs per parameter per token (forward 2, backward 4) over the peak.

    >>> round(model_flops_utilisation(500_000_000, 100_000, 1000.0), 3)  # 3e17 FLOP/s of 1e18
    0.3
    """
    if peak_tflops is None:
        return None
    return 6 * num_params * tokens_per_s / (peak_tflops * 1e12)


def write_assets(folder: Path, num_prompts: int, shape: str = "qwen2.5-0.5b") -> None:
    """The random model (``MODEL_SHAPES[shape]``; by default Qwen2.5-0.5B's: ~494M parameters), a byte-level
    tokenizer, prompts of one token per letter (GSM8K-length by default: 80-200 tokens) and a reward that splits
    groups (parity of the response text's length)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dims = dict(MODEL_SHAPES[shape])
    shortest, longest = dims.pop("prompt_tokens")
    config = Qwen2Config(**dims, max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=1e6,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    byte_level_tokenizer().save_pretrained(folder / "model")
    rng = random.Random(0)
    with open(folder / "train.jsonl", "w") as sink:
        for _ in range(num_prompts * 4):
            prompt = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(shortest, longest)))
            sink.write(json.dumps({"prompt": prompt, "ground_truth": "0", "data_source": "bench"}) + "\n")
    (folder / "reward.py").write_text("def compute_score(response_text, ground_truth, extra_info):\n"
                                      "    return float(len(response_text) % 2)\n")


def byte_level_tokenizer():
    """<pad> (0), <eos> (1) and the 256 byte-level symbols, no merges: a run of letters is one token per letter.

    transformers loads any tokenizer saved beside a Qwen2 model as Qwen2's byte-level BPE, which keeps this one
    as it is (a word-level vocabulary would encode to nothing). The model's larger vocabulary samples ids past
    these 258, which decode to no text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={"<pad>": 0, "<eos>": 1, **{s: i + 2 for i, s in enumerate(symbols)}},
                                   merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                  model_max_length=4096)


def overrides(folder: Path, engine: str, args: argparse.Namespace, device: str = "cuda") -> list[str]:
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
             "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.logger=[]", f"trainer.device={device}",
             "trainer.resume_mode=disable", f"trainer.default_local_dir={folder / ('run_' + engine)}"]
    if engine == "vllm":
        items.append(f"actor_rollout_ref.rollout.gpu_memory_utilization={args.gpu_memory_utilization}")
    return items


def run_child(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps with one engine in this process; timings per phase, tokens/s, MFU, peak memory."""
    import torch

    from gspo.config import load_config
    from gspo.trainer import Trainer

    on_cuda = torch.cuda.is_available()
    folder = Path(args.folder)
    start = time.perf_counter()
    trainer = Trainer(load_config(None, overrides(folder, args.child, args, "cuda" if on_cuda else "cpu"),
                                  preset="addition"))  # the embedded task's settings under the overrides
    build_s = time.perf_counter() - start
    steps, device_used = [], []
    for _ in range(args.steps):
        steps.append(trainer.train_step())
        trainer.global_step += 1
        if on_cuda:
            free, total = torch.cuda.mem_get_info()
            device_used.append((total - free) / 2**30)
    later = steps[1:] or steps
    mean = {key: sum(s.get(key, 0.0) for s in later) / len(later) for key in (*PHASES, "perf/gen_tokens_per_s")}
    # Tokens the update trains (prompt + response) per second of update, over the timed steps.
    train_tokens_per_s = sum(s["train/trained_tokens"] for s in later) / sum(s["timing/update"] for s in later)
    num_params = sum(p.numel() for p in trainer.model.parameters())
    device = torch.cuda.get_device_name() if on_cuda else "cpu"
    peak = args.peak_tflops or (peak_bf16_tflops(device) if on_cuda else None)
    mfu = model_flops_utilisation(num_params, train_tokens_per_s, peak)
    return {"engine": args.child, "device": device, "steps": args.steps,
            "sequences_per_step": args.prompts * args.n, "response_tokens": args.response_length,
            "params_m": round(num_params / 1e6, 1), "autocast": str(trainer.policy_update.context.autocast_dtype),
            "build_s": round(build_s, 1), "first_step_s": round(steps[0]["timing/step"], 2),
            "gen_tokens_per_s": round(mean["perf/gen_tokens_per_s"], 1),
            "step_split_s": {key.split("/")[1]: round(mean[key], 3) for key in PHASES},
            "train_tokens_per_s": round(train_tokens_per_s, 1), "peak_tflops": peak,
            "mfu": None if mfu is None else round(mfu, 4),
            "pg_loss": steps[-1]["actor/pg_loss"], "grad_norm": steps[-1]["actor/grad_norm"],
            "peak_torch_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_cuda else None,
            "peak_device_used_gib": round(max(device_used), 2) if on_cuda else None}


def run_engine(engine: str, folder: str, args: argparse.Namespace) -> dict:
    """One engine's JSON line, from its own process; ``{"engine", "error"}`` when that process failed."""
    command = [sys.executable, __file__, "--child", engine, "--folder", folder, "--steps", str(args.steps),
               "--prompts", str(args.prompts), "--n", str(args.n), "--response-length", str(args.response_length),
               "--gpu-memory-utilization", str(args.gpu_memory_utilization),
               *(["--quick"] if args.quick else []),
               *(["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else [])]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"engine": engine, "error": proc.stderr.strip().splitlines()[-1:],
                "exit_code": proc.returncode}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    """0 when every engine ran; 1 when any failed (its JSON line says why); 2 without CUDA or on bad arguments."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.quick:
        print("gpu_step.py: needs one CUDA device (torch.cuda.is_available() is False); on CPU compare the engines "
              "with benchmarks/rollout_engines.py", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return 0
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        write_assets(Path(tmp), args.prompts, args.shape)
        for engine in [e for e in args.engines.split(",") if e]:
            row = run_engine(engine, tmp, args)
            failed += "error" in row
            print(json.dumps(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":  # vLLM's engine may start helper processes that re-import this file
    sys.exit(main())
