#!/usr/bin/env python
"""Build the warm-started checkpoint shipped in ``gspo/assets/sums`` (the second embedded task).

Same recipe as ``scripts/build_addition_checkpoint.py`` (whose model, warm-up loop, accuracy check and folder writer it reuses): the
character-level tokenizer and tiny Qwen2 model of :mod:`gspo.tasks.addition`, a short supervised warm-up on sums of
2-3 numbers of 1-3 digits (:mod:`gspo.tasks.sums`), stopped at a fixed step count chosen so that at ``n = 8``
samples (T = 1) about half of the training prompts' groups are all-right or all-wrong, as in math RL.

    python scripts/build_sums_checkpoint.py [--out DIR] [--seed S] [--sft-steps N] [--eval-every N]

Writes ``model.safetensors``, ``config.json``, ``generation_config.json``, tokenizer files, ``train.jsonl``,
``val.jsonl`` and ``README.md`` into ``--out`` (default: the package folder ``gspo/assets/sums``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_addition_checkpoint import (  # noqa: E402
    new_model,
    save_asset_folder,
    supervised_warm_start,
    val_accuracy,
)

from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer  # noqa: E402
from gspo.tasks.sums import (  # noqa: E402
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    MAX_RESPONSE_TOKENS,
    SUMS_ASSET_DIR,
    make_sums_splits,
)

DEFAULT_SFT_STEPS = 600  # greedy val acc 0.20, ~52 % of groups all-equal at n = 8 (seed 0, 1 thread)
DEFAULT_SFT_POOL = 65536  # SFT rows; the shipped train.jsonl is their first --num-train rows
GROUP_SIZE = 8


@torch.no_grad()
def group_stats(model, tok, rows: list[dict], *, n: int = GROUP_SIZE, seed: int = 0) -> dict[str, float]:
    """Sampled (T = 1) pass rate per prompt over ``n`` samples: fractions of all-right / all-wrong groups."""
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    enc = tok([r["prompt"] for r in rows for _ in range(n)], padding=True, padding_side="left", return_tensors="pt")
    out = model.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=MAX_RESPONSE_TOKENS,
                         do_sample=True, temperature=1.0, top_k=None, top_p=None,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.train(was_training)
    correct = []
    for i, resp in enumerate(out[:, enc.input_ids.shape[1]:].tolist()):
        text = tok.decode(resp[: resp.index(tok.eos_token_id)], skip_special_tokens=True) \
            if tok.eos_token_id in resp else None
        correct.append(text == rows[i // n]["ground_truth"])
    rates = [sum(correct[i * n:(i + 1) * n]) / n for i in range(len(rows))]
    return {"all_right": sum(r == 1.0 for r in rates) / len(rates), "all_wrong": sum(r == 0.0 for r in rates) / len(rates),
            "sampled_acc": sum(rates) / len(rates)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=SUMS_ASSET_DIR, help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--sft-steps", type=int, default=DEFAULT_SFT_STEPS)
    ap.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    ap.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="rows written to train.jsonl")
    ap.add_argument("--sft-pool", type=int, default=DEFAULT_SFT_POOL, help="train rows the SFT samples from")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fixed for reproducibility)")
    ap.add_argument("--eval-every", type=int, default=0, help="print accuracy and group stats every N steps")
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    tok = build_addition_tokenizer()
    pool, val = make_sums_splits(seed=args.seed, num_val=args.num_val, num_train=max(args.sft_pool, args.num_train))
    train = pool[: args.num_train]
    assert not {r["prompt"] for r in pool} & {r["prompt"] for r in val}

    config = build_addition_model_config(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = new_model(config, tok, MAX_RESPONSE_TOKENS)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} params; sft pool {len(pool)}, train {len(train)}, val {len(val)}", flush=True)
    def report(step: int, loss: float) -> None:
        if args.eval_every and step % args.eval_every == 0:
            stats = group_stats(model, tok, train[:256], seed=args.seed)
            print(f"step {step:4d} loss {loss:.4f} greedy val "
                  f"{val_accuracy(model, tok, val, MAX_RESPONSE_TOKENS):.3f} groups {stats} "
                  f"({time.time() - t0:.0f}s)", flush=True)

    supervised_warm_start(model, tok, pool, steps=args.sft_steps, batch_size=args.batch_size, lr=args.lr,
                          warmup=args.warmup, seed=args.seed, on_step=report)

    greedy = val_accuracy(model, tok, val, MAX_RESPONSE_TOKENS)
    stats = group_stats(model, tok, train[:512], seed=args.seed)
    print(f"final: greedy val acc {greedy:.3f}, groups {stats}", flush=True)

    out_dir: Path = args.out
    save_asset_folder(out_dir, model, tok, train, val)
    cmd = " ".join(["python scripts/build_sums_checkpoint.py", *(argv if argv is not None else sys.argv[1:])])
    dropped = stats["all_right"] + stats["all_wrong"]
    (out_dir / "README.md").write_text(f"""# Sums warm-start checkpoint

Second embedded task (`gspo train --config recipe/gspo/config/sums.yaml`): prompt `7+316+45=`, response `368` then
`<eos>`, reward 1 for the exact sum. 2 to 3 terms, each with a digit count uniform in 1..3, so difficulty spreads
from prompt to prompt and many groups are all-right or all-wrong, as in math RL. Same tokenizer and architecture as
the addition task ({n_params:,} parameters, fp32); SFT stopped early on purpose.

Built with:

    {cmd.strip()}

| | |
|---|---|
| seed | {args.seed} |
| SFT | {args.sft_steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g} (warmup {args.warmup}), loss on answer + `<eos>`, {args.threads} torch thread(s) |
| SFT rows | sampled from {len(pool)} rows (`train.jsonl` holds the first {len(train)}) |
| greedy val accuracy | {greedy:.3f} ({len(val)} prompts in `val.jsonl`, none in `train.jsonl` or the SFT rows) |
| sampled accuracy (T=1, n=8) | {stats['sampled_acc']:.3f} (first 512 prompts of `train.jsonl`) |
| groups all-right / all-wrong at n=8 | {stats['all_right']:.3f} / {stats['all_wrong']:.3f} (dropped by dynamic sampling: {dropped:.3f}) |

Deterministic for a given seed and thread count.
""", encoding="utf-8")
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"wrote {out_dir} ({total / 1e6:.2f} MB) in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
