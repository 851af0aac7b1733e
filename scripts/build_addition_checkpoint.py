#!/usr/bin/env python
"""Build the warm-started checkpoint shipped in ``gspo/assets/addition``.

Builds the character-level tokenizer and a tiny Qwen2 model from
:mod:`gspo.tasks.addition`, runs a short supervised warm-up (teacher forcing, loss
on the response tokens incl. EOS only) and stops at a fixed step count chosen so
that greedy accuracy on the held-out validation set is ~30%: partly right, so that
RL has something to climb. Deterministic for a given seed and thread count.

    python scripts/build_addition_checkpoint.py [--out DIR] [--seed S] [--sft-steps N]

Writes ``model.safetensors``, ``config.json``, ``generation_config.json``,
tokenizer files, ``train.jsonl`` (RL prompts), ``val.jsonl`` (held-out prompts) and
``README.md`` into ``--out`` (default: the package folder ``gspo/assets/addition``).
Takes ~1.5 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from gspo.tasks.addition import (
    ADDITION_ASSET_DIR,
    DEFAULT_NUM_DIGITS,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    build_addition_model_config,
    build_addition_tokenizer,
    make_addition_splits,
    max_response_tokens,
    write_jsonl,
)

DEFAULT_SFT_STEPS = 690  # lands greedy val acc at ~0.33 for seed 0 (mid phase transition)
DEFAULT_SFT_POOL = 65536  # SFT rows; the shipped train.jsonl is their first --num-train rows
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3
DEFAULT_WARMUP = 50


def encode_sft_batch(tok, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + answer + <eos>``; labels are -100 except on answer + EOS."""
    seqs, labels = [], []
    for r in rows:
        p = tok(r["prompt"]).input_ids
        a = tok(r["ground_truth"]).input_ids + [tok.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(s)] = 1
    return ids, mask, lab


@torch.no_grad()
def val_accuracy(
    model,
    tok,
    rows: list[dict],
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
) -> float:
    """Exact-match accuracy: the response must be the sum followed by EOS."""
    was_training = model.training
    model.eval()
    if do_sample:
        torch.manual_seed(seed)
    correct = 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tok([r["prompt"] for r in chunk], padding=True, padding_side="left", return_tensors="pt")
        out = model.generate(
            enc.input_ids,
            attention_mask=enc.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_k=None,
            top_p=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        for r, resp in zip(chunk, out[:, enc.input_ids.shape[1] :].tolist()):
            if tok.eos_token_id in resp:
                text = tok.decode(resp[: resp.index(tok.eos_token_id)], skip_special_tokens=True)
                correct += int(text == r["ground_truth"])
    model.train(was_training)
    return correct / len(rows)


def new_model(config, tok, max_new_tokens: int):
    """A freshly initialised Qwen2 for ``config`` whose generation config is greedy up to ``max_new_tokens``."""
    from transformers import GenerationConfig, Qwen2ForCausalLM

    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, do_sample=False,
                                               max_new_tokens=max_new_tokens)
    return model


def supervised_warm_start(model, tok, pool: list[dict], *, steps: int, batch_size: int, lr: float, warmup: int,
                          seed: int, on_step=None) -> float:
    """``steps`` AdamW steps on random batches of ``pool`` (loss on answer + EOS); ``on_step(step, loss)`` after
    each. Returns the last loss. Deterministic for a given seed and thread count."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    rng = random.Random(seed)
    model.train()
    loss = float("nan")
    for step in range(1, steps + 1):
        ids, mask, labels = encode_sft_batch(tok, rng.sample(pool, batch_size))
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
        if on_step is not None:
            on_step(step, loss)
    return loss


def save_asset_folder(out_dir: Path, model, tok, train: list[dict], val: list[dict]) -> None:
    """Model (safetensors, 0644), tokenizer, train.jsonl and val.jsonl into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "model.safetensors").chmod(0o644)  # safetensors writes 0600
    tok.save_pretrained(out_dir)
    # transformers 5 writes "TokenizersBackend"; the classic name loads in 4.x and 5.x alike.
    tok_cfg_path = out_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "val.jsonl", val)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ADDITION_ASSET_DIR, help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--sft-steps", type=int, default=DEFAULT_SFT_STEPS)
    ap.add_argument("--num-digits", type=int, default=DEFAULT_NUM_DIGITS)
    ap.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    ap.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="rows written to train.jsonl")
    ap.add_argument("--sft-pool", type=int, default=DEFAULT_SFT_POOL, help="train rows the SFT samples from")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (fixed for reproducibility)")
    ap.add_argument("--eval-every", type=int, default=0, help="print val accuracy every N steps (tuning aid)")
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    tok = build_addition_tokenizer()
    pool, val = make_addition_splits(
        seed=args.seed,
        num_digits=args.num_digits,
        num_val=args.num_val,
        num_train=max(args.sft_pool, args.num_train),
    )
    train = pool[: args.num_train]  # == make_addition_splits(..., num_train=args.num_train)[0]
    assert not {r["prompt"] for r in pool} & {r["prompt"] for r in val}
    max_new = max_response_tokens(args.num_digits)

    config = build_addition_model_config(
        len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    model = new_model(config, tok, max_new)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 {config.num_hidden_layers}L h{config.hidden_size} i{config.intermediate_size}, "
          f"{n_params:,} params; train pool {len(pool)}, val {len(val)}", flush=True)

    def report(step: int, loss: float) -> None:
        if step % 50 == 0 or (args.eval_every and step % args.eval_every == 0):
            msg = f"step {step:4d} loss {loss:.4f} ({time.time() - t0:.0f}s)"
            if args.eval_every and step % args.eval_every == 0:
                msg += f" greedy val acc {val_accuracy(model, tok, val, max_new):.3f}"
            print(msg, flush=True)

    supervised_warm_start(model, tok, pool, steps=args.sft_steps, batch_size=args.batch_size, lr=args.lr,
                          warmup=args.warmup, seed=args.seed, on_step=report)

    greedy = val_accuracy(model, tok, val, max_new)
    sampled = val_accuracy(model, tok, val, max_new, do_sample=True, temperature=1.0, seed=args.seed)
    train_greedy = val_accuracy(model, tok, train[: len(val)], max_new)
    print(f"final: greedy val acc {greedy:.3f}, sampled (T=1) val acc {sampled:.3f}, "
          f"greedy train acc {train_greedy:.3f}", flush=True)

    out_dir: Path = args.out
    save_asset_folder(out_dir, model, tok, train, val)

    cmd = "python scripts/build_addition_checkpoint.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if a
    )
    readme = f"""# Addition warm-start checkpoint

Default task of `gspo train`: prompt `37+48=`, response `85` then `<eos>`, reward 1
for the exact sum. A tiny Qwen2 model (character-level tokenizer) warm-started with a
short SFT run that was stopped early on purpose, so that it is partly right and RL
does the climbing.

Built with:

    {cmd.strip()}

| | |
|---|---|
| seed | {args.seed} |
| operands | uniform in [0, {10**args.num_digits}) ({args.num_digits} digits max) |
| max response tokens | {max_new} (sum digits + `<eos>`) |
| model | Qwen2, {config.num_hidden_layers} layers, hidden {config.hidden_size}, intermediate {config.intermediate_size}, {config.num_attention_heads} heads / {config.num_key_value_heads} kv heads, tied embeddings |
| parameters | {n_params:,} (fp32) |
| tokenizer | `<pad>`=0, `<eos>`=1, `<unk>`=2, `0-9+=` = 3..14; no BOS, no chat template; left padding |
| SFT | {args.sft_steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g} (warmup {args.warmup}), loss on answer + `<eos>` only, {args.threads} torch threads |
| SFT rows | sampled from {len(pool)} train rows (`train.jsonl` holds the first {len(train)}) |
| greedy val accuracy | {greedy:.3f} ({len(val)} prompts in `val.jsonl`) |
| sampled val accuracy (T=1) | {sampled:.3f} |
| greedy train accuracy | {train_greedy:.3f} (first {len(val)} rows of `train.jsonl`) |

No prompt of `val.jsonl` appears in `train.jsonl` (or in the SFT rows). Rebuild with
the command above; results are deterministic for a given seed and thread count.

## Its RL run

`gspo train` with no arguments trains from this checkpoint; the measured run, with its command and machine, is in
the repository's README (section "The embedded default run, measured").
"""
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"wrote {out_dir} ({total / 1e6:.2f} MB) in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
