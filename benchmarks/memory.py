"""Peak memory of one update step as the response length doubles (256 -> 512 -> 1024 tokens), on this machine's CPU.

One update = the old-policy log-prob forward (``compute_log_probs``) + ``update_policy`` (one AdamW step), on a
small random Qwen2 (hidden 256, 4 layers, vocab 1536, float32) and a RolloutBatch of random token ids built
directly (no generation, no tokenizer: nothing is decoded). Response lengths are ragged, uniform in [R/4, R] with
one row at R; prompts are left-padded, uniform in [P/2, P]. Each length runs in a fresh subprocess that reports
its peak RSS (``resource.getrusage``) minus the peak right after the model and optimizer are built; the delta
includes the gradients and AdamW state (3x the parameter bytes, ``param_mib``) as well as the activations.
Children run with ``MALLOC_MMAP_THRESHOLD_=65536`` (``--mmap-threshold``): with glibc's adaptive threshold, freed
tensors stay in the heap and peak RSS measures heap reuse more than live memory (+-100 MiB run to run).

Prints one JSON line per mode: the peak deltas, their growth ratios (2.0 = linear in R), update wall times and
micro-batch counts.

    python benchmarks/memory.py                                 # use_dynamic_bsz off and on, one line each
    python benchmarks/memory.py --dynamic-bsz on --max-tokens 4096 --logits-chunk-size 256

``--max-tokens`` defaults to ``micro-batch-size x (P + R)``: the same worst-case rectangle as a fixed micro-batch,
so on vs off isolates packing and padding trimming. A fixed ``--max-tokens`` bounds the micro-batch whatever R.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from gspo.config import ActorConfig
    from gspo.trainer.actor import compute_log_probs, update_policy
    from gspo.trainer.batch import RolloutBatch
    from gspo.trainer.update_context import UpdateContext

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prompt_len, response_len, rows = args.prompt_length, args.response_length, args.prompts * args.n
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=prompt_len + response_len, pad_token_id=0, eos_token_id=1,
                         bos_token_id=1)
    model = Qwen2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    gen = torch.Generator().manual_seed(args.seed)
    prompt_lengths = torch.randint(prompt_len // 2, prompt_len + 1, (args.prompts,), generator=gen)
    prompt_mask = (torch.arange(prompt_len) >= prompt_len - prompt_lengths[:, None]).long()
    prompt_mask = prompt_mask.repeat_interleave(args.n, dim=0)  # the n samples of a prompt share it
    response_lengths = torch.randint(max(response_len // 4, 1), response_len + 1, (rows,), generator=gen)
    response_lengths[0] = response_len
    response_mask = (torch.arange(response_len) < response_lengths[:, None]).float()
    batch = RolloutBatch(
        prompt_ids=torch.randint(2, args.vocab, (rows, prompt_len), generator=gen) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=(torch.randint(2, args.vocab, (rows, response_len), generator=gen) * response_mask).long(),
        response_mask=response_mask, group_ids=torch.arange(args.prompts).repeat_interleave(args.n),
        prompt_index=torch.arange(args.prompts).repeat_interleave(args.n),
        advantages=torch.randn(rows, generator=gen))
    max_tokens = args.max_tokens or args.micro_batch_size * (prompt_len + response_len)
    dynamic = args.dynamic_bsz == "on"
    cfg = ActorConfig(ppo_mini_batch_size=args.prompts, ppo_micro_batch_size_per_gpu=args.micro_batch_size,
                      use_dynamic_bsz=dynamic, ppo_max_token_len_per_gpu=max_tokens,
                      logits_chunk_size=args.logits_chunk_size, clip_ratio_low=0.2, clip_ratio_high=0.2)
    baseline = _peak_rss_mib()

    start = time.perf_counter()
    batch.old_log_probs = compute_log_probs(model, batch, micro_batch_size=args.micro_batch_size, temperature=1.0,
                                            autocast_dtype=None, max_token_len=max_tokens if dynamic else None,
                                            logits_chunk_size=args.logits_chunk_size)
    context = UpdateContext(model=model, optimizer=optimizer, actor=cfg, responses_per_prompt=args.n, temperature=1.0,
                            max_response_length=response_len)
    metrics = update_policy(batch, context)
    wall = time.perf_counter() - start
    if dynamic:
        from gspo.trainer.packing import pack_by_tokens, sequence_lengths
        num_micro = len(pack_by_tokens(sequence_lengths(batch), max_tokens))
    else:
        num_micro = -(-rows // args.micro_batch_size)
    return {"response_length": response_len, "peak_delta_mib": round(_peak_rss_mib() - baseline, 1),
            "baseline_mib": round(baseline, 1), "param_mib": round(param_mib, 1), "update_s": round(wall, 2),
            "micro_batches": num_micro, "max_tokens": max_tokens if dynamic else None,
            "real_tokens": int(prompt_mask.sum() + response_mask.sum()),
            "finite": all(v == v for v in metrics.values())}


def main(args: argparse.Namespace) -> list[dict]:
    modes = ["off", "on"] if args.dynamic_bsz == "both" else [args.dynamic_bsz]
    env = dict(os.environ)
    if args.mmap_threshold > 0:  # freed tensors go back to the OS at once: peak RSS then tracks peak live memory
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    results = []
    for mode in modes:
        runs = []
        for length in args.lengths:
            cmd = [sys.executable, os.path.abspath(__file__), "--_child", "--response-length", str(length),
                   "--dynamic-bsz", mode, *_shared_flags(args)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"child for response length {length} failed with exit code {proc.returncode}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        peaks = [run["peak_delta_mib"] for run in runs]
        result = {
            "benchmark": "memory", "use_dynamic_bsz": mode == "on",
            "response_lengths": args.lengths, "peak_delta_mib": peaks,
            "growth": [round(b / a, 2) if a > 0 else None for a, b in zip(peaks, peaks[1:])],
            "update_s": [run["update_s"] for run in runs], "micro_batches": [run["micro_batches"] for run in runs],
            "max_tokens": [run["max_tokens"] for run in runs], "real_tokens": [run["real_tokens"] for run in runs],
            "param_mib": runs[0]["param_mib"], "baseline_mib": [run["baseline_mib"] for run in runs],
            "sequences": args.prompts * args.n, "prompt_length": args.prompt_length,
            "micro_batch_size": args.micro_batch_size, "logits_chunk_size": args.logits_chunk_size,
            "model": f"qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab} float32",
            "threads": args.threads, "malloc_mmap_threshold": args.mmap_threshold or None,
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


_SHARED = ("prompts", "n", "prompt_length", "micro_batch_size", "max_tokens", "logits_chunk_size", "hidden",
           "layers", "vocab", "threads", "seed")


def _shared_flags(args: argparse.Namespace) -> list[str]:
    return [arg for name in _SHARED for arg in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024], help="response lengths R")
    parser.add_argument("--dynamic-bsz", choices=["off", "on", "both"], default="both")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--prompt-length", type=int, default=64, help="P, the padded prompt width")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="sequences per micro-batch when off")
    parser.add_argument("--max-tokens", type=int, default=0, help="token budget when on; 0: micro-batch-size x (P+R)")
    parser.add_argument("--logits-chunk-size", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mmap-threshold", type=int, default=65536,
                        help="MALLOC_MMAP_THRESHOLD_ for the children (0: glibc's default, whose heap reuse makes "
                             "peak RSS vary by +-100 MiB from run to run)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: a tiny model, R = 8")
    parser.add_argument("--response-length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.prompts, args.n, args.prompt_length, args.micro_batch_size = [8], 1, 2, 8, 2
        args.hidden, args.layers, args.vocab, args.threads = 32, 1, 64, 1
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments._child:
        print(json.dumps(child(arguments)), flush=True)
    else:
        main(arguments)
