"""Cost of the hf engine's seeded sampler per decoding step, at a real vocabulary, on this machine's CPU.

One decoding step draws the next token for every row: ``draw_tokens`` on (rows, vocab) float32 logits (Qwen2.5's
152,064 tokens, temperature 1, no top-k / top-p, as the GPU recipes sample), seeded Gumbel-max with one key per
row. Two implementations:

- ``float64``: the sampler as it was, reproduced here: the 32-bit hashes computed out of place in int64 (a fresh
  (rows, vocab) tensor per operation), turned into Gumbel noise in float64, then cast to float32.
- ``float32_in_place``: ``gspo.rollout.seeded``: the same hashes computed in place in int64 buffers, the noise in
  float32 in place, the buffers allocated once per decode by a :class:`GumbelNoise` (its bytes are reported
  apart, as ``workspace_bytes``; the decode loop pays them once per generate call, not per token).

Each is timed as the median of ``--repeats`` steps after one warm-up (``ms_per_step``: one token for each row;
``us_per_row_token``: the same divided by the rows), once with the noise alone and once with the whole draw
(noise + argmax + the drawn tokens' log-probs). ``bytes_allocated_per_step`` is the sum of every allocation
torch's profiler records during one step (``profile_memory``; freed memory is not subtracted). Prints one JSON line.

    python benchmarks/sampler_cost.py                               # 64 rows x 152,064 tokens
    python benchmarks/sampler_cost.py --rows 8 --vocab 32000 --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gspo.rollout.seeded import GumbelNoise, draw_tokens, group_keys, mix32, response_keys


def float64_gumbel_noise(keys: torch.Tensor, position: int, vocab_size: int) -> torch.Tensor:
    """The previous sampler's noise: out-of-place int64 hashing, float64 Gumbel transform."""
    row = mix32(keys ^ mix32(torch.tensor(position, device=keys.device) + 0x632BE5AB))
    token = mix32(torch.arange(vocab_size, device=keys.device) + 0x5BD1E995)
    bits = mix32(row[:, None] ^ token[None, :])
    tail = (bits.double() + 0.5) * 2.0 ** -32
    return (-torch.log(-torch.log1p(-tail))).float()


def float64_draw(logits: torch.Tensor, keys: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous ``draw_tokens`` at temperature 1 without top-k / top-p."""
    scaled = logits.float() / 1.0
    tokens = (scaled + float64_gumbel_noise(keys, position, logits.shape[-1])).argmax(-1)
    return tokens, scaled.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scaled, -1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def median_ms(step: Callable[[int], object], repeats: int) -> float:
    step(0)  # warm-up
    times = []
    for position in range(1, repeats + 1):
        start = time.perf_counter()
        step(position)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bytes_allocated(step: Callable[[int], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(0)
    return int(sum(max(event.self_cpu_memory_usage, 0) for event in prof.events()))


def measure(name: str, step: Callable[[int], object], rows: int, repeats: int, **extra: int) -> dict:
    ms = median_ms(step, repeats)
    return {"name": name, "ms_per_step": round(ms, 2), "us_per_row_token": round(ms * 1e3 / rows, 1),
            "bytes_allocated_per_step": bytes_allocated(step), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows decoded at once (prompts x n)")
    parser.add_argument("--vocab", type=int, default=152064, help="vocabulary size (Qwen2.5: 152,064)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (4 rows, vocabulary 1,000)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.vocab, args.repeats = 4, 1000, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    logits = torch.randn(args.rows, args.vocab, generator=torch.Generator().manual_seed(0)) * 3
    keys = response_keys(group_keys(0, torch.arange(args.rows)), 1)
    noise = GumbelNoise(args.vocab, args.rows)
    workspace = noise.nbytes
    draw = dict(temperature=1.0, top_k=-1, top_p=1.0, do_sample=True, keys=keys)
    same_tokens = torch.equal(float64_draw(logits, keys, 3)[0], draw_tokens(logits, position=3, noise=noise, **draw)[0])

    results = [
        measure("noise/float64", lambda p: float64_gumbel_noise(keys, p, args.vocab), args.rows, args.repeats),
        measure("noise/float32_in_place", lambda p: noise(keys, p), args.rows, args.repeats,
                workspace_bytes=workspace),
        measure("draw/float64", lambda p: float64_draw(logits, keys, p), args.rows, args.repeats),
        measure("draw/float32_in_place", lambda p: draw_tokens(logits, position=p, noise=noise, **draw), args.rows,
                args.repeats, workspace_bytes=workspace),
    ]
    old, new = results[2], results[3]
    print(json.dumps({
        "rows": args.rows, "vocab": args.vocab, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "same_tokens": same_tokens, "draw_speedup": round(old["ms_per_step"] / new["ms_per_step"], 2),
        "draw_bytes_ratio": round(old["bytes_allocated_per_step"] / max(new["bytes_allocated_per_step"], 1), 1),
        "results": results,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__},
    }))


if __name__ == "__main__":
    main()
