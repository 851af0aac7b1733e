"""How much generation dynamic sampling wastes: verl's rule vs keep_surplus / adaptive sizing / prefilter.

Runs the embedded addition task for the same number of training steps under each variant and seed, and prints
one JSON line per variant: generated response tokens per trained prompt group, wall time, final validation
accuracy (mean and per seed), and the saving against the verl-style rule.

    python benchmarks/dynamic_sampling.py [--steps 60] [--seeds 1 2 3] [--train-prompts N] [key=value ...]

``--train-prompts N`` trains on the first N embedded training prompts only, so prompts come back every
N / gen_batch_size steps (several epochs, as on GSM8K's 7.5k prompts): that is where solved prompts keep being
regenerated under verl's rule and where the prefilter can act (on the full 6,144 prompts a 150-step run sees each
prompt about once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "algorithm.filter_groups."
VARIANTS = {
    "verl": [],
    "keep_surplus": [f"{PREFIX}keep_surplus=true"],
    "adaptive_gen_batch_size": [f"{PREFIX}adaptive_gen_batch_size=true"],
    "prefilter": [f"{PREFIX}prefilter.enable=true"],
    "all": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true", f"{PREFIX}prefilter.enable=true"],
}


def run_once(overrides: list[str], steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gspo", "train", f"trainer.default_local_dir={tmp}", f"trainer.seed={seed}",
               f"trainer.total_training_steps={steps}", f"trainer.test_freq={steps}", "trainer.logger=[]",
               f"{PREFIX}max_num_gen_batches=0", *overrides]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/generated_tokens" in r]
    trained_groups = len(train_rows) * _train_batch_size(overrides)
    return {"tokens_per_group": sum(r["train/generated_tokens"] for r in train_rows) / trained_groups,
            "val_acc": [r["val/acc_mean"] for r in rows if "val/acc_mean" in r][-1],
            "gen_batches_per_step": statistics.mean(r["train/num_gen_batches"] for r in train_rows),
            "wall_s": wall}


def _train_batch_size(overrides: list[str]) -> int:
    from gspo.config import load_config

    return load_config(None, [o for o in overrides if not o.startswith("trainer.default_local_dir")]).data.train_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-prompts", type=int, default=0, help="first N embedded training prompts (0: all)")
    parser.add_argument("overrides", nargs="*", help="extra key=value applied to every run")
    args = parser.parse_args()
    subset_dir = tempfile.TemporaryDirectory()
    if args.train_prompts > 0:
        from gspo.resources import resolve_path

        lines = resolve_path("embedded://addition/train.jsonl").read_text().splitlines()[:args.train_prompts]
        subset = Path(subset_dir.name) / "train.jsonl"
        subset.write_text("\n".join(lines) + "\n")
        args.overrides = [f"data.train_files=[{subset}]", *args.overrides]
    baseline = None
    for name in args.variants:
        runs = [run_once(VARIANTS[name] + args.overrides, args.steps, seed) for seed in args.seeds]
        tokens = statistics.mean(r["tokens_per_group"] for r in runs)
        baseline = tokens if name == "verl" else baseline
        print(json.dumps({
            "benchmark": "dynamic_sampling", "variant": name, "steps": args.steps, "seeds": args.seeds,
            "train_prompts": args.train_prompts or "all",
            "generated_tokens_per_trained_group": round(tokens, 2),
            "saving_vs_verl": round(baseline / tokens, 3) if baseline else None,
            "gen_batches_per_step": round(statistics.mean(r["gen_batches_per_step"] for r in runs), 3),
            "final_val_acc_mean": round(statistics.mean(r["val_acc"] for r in runs), 4),
            "final_val_acc": [round(r["val_acc"], 4) for r in runs],
            "wall_s_mean": round(statistics.mean(r["wall_s"] for r in runs), 1),
        }), flush=True)


if __name__ == "__main__":
    main()
