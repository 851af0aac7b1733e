"""How much generation dynamic sampling wastes: verl's rule vs keep_surplus / adaptive sizing / prefilter.

Runs the embedded addition task for the same number of training steps under each variant and seed, and prints
one JSON line per variant: generated response tokens per trained prompt group, wall time, final validation
accuracy (mean and per seed), and the saving against the verl-style rule.

    python benchmarks/dynamic_sampling.py [--task addition|sums] [--steps 60] [--seeds 1 2 3] [--train-prompts N]
        [--verl-gen-batch-sizes 32 48 96] [key=value ...]

Variants: ``verl`` (the rule alone), each switch alone, ``all`` three at their defaults, ``greso``: all three with
the prefilter acting after one all-equal visit and backing off on re-admissions (``readmit_decay``, GRESO,
arXiv 2506.02177), ``greso_split``: the same with failed prompts re-admitted at a constant 0.3
(``prefilter.failed_readmit_prob``), and ``skip_once``: the prefilter acting after one visit, re-admitting 30 %
of skips; ``probe`` / ``probe2``: the prefilter acting after one visit, every skip probed with 1 / 2 responses
(``prefilter.probe_responses``) and completed when the probe scores unlike the prompt's last all-equal group.

``--task sums`` runs the second embedded task (``recipe/gspo/config/sums.yaml``: 1,024 training prompts, about
half the groups all-right or all-wrong at the warm start), where prompts recur every few dozen steps.

How much verl's rule wastes depends on ``data.gen_batch_size``: verl's default (unset = ``train_batch_size``)
often needs a second batch and trims its surplus; the DAPO recipe's 3 x ``train_batch_size`` fills the train
batch at once and drops two thirds of what it generated; a size tuned to the task's keep ratio wastes least.
``--verl-gen-batch-sizes`` runs verl's rule at each given size (default: the config's ``data.gen_batch_size``)
and reports every other variant's saving against each. The other variants use the config's size for their first
generation batch (the adaptive sizing takes over from the second).

``--train-prompts N`` trains on the first N embedded training prompts only, so prompts come back every
N / gen_batch_size steps (several epochs, as on GSM8K's 7.5k prompts): that is where solved prompts keep being
regenerated under verl's rule and where the prefilter can act (on the full 6,144 prompts a 150-step run sees each
prompt about once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import quick_overrides  # noqa: E402
from _runner import gspo_train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TASK_CONFIGS = {"addition": None, "sums": REPO / "recipe" / "gspo" / "config" / "sums.yaml"}
PREFIX = "algorithm.filter_groups."
VARIANTS = {
    "verl": [],
    "keep_surplus": [f"{PREFIX}keep_surplus=true"],
    "adaptive_gen_batch_size": [f"{PREFIX}adaptive_gen_batch_size=true"],
    "prefilter": [f"{PREFIX}prefilter.enable=true"],
    "all": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true", f"{PREFIX}prefilter.enable=true"],
    # all three, the prefilter acting after one all-equal visit and backing off GRESO-style on re-admissions
    "greso": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true", f"{PREFIX}prefilter.enable=true",
              f"{PREFIX}prefilter.min_constant_visits=1", f"{PREFIX}prefilter.readmit_decay=true"],
    # greso, but prompts whose last group all failed come back at 0.3 without back-off (GRESO's separate rates)
    "greso_split": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true",
                    f"{PREFIX}prefilter.enable=true", f"{PREFIX}prefilter.min_constant_visits=1",
                    f"{PREFIX}prefilter.readmit_decay=true", f"{PREFIX}prefilter.failed_readmit_prob=0.3"],
    # all three, the prefilter acting after one all-equal visit but re-admitting 3 in 10 skips whatever the streak:
    # failed prompts that turn learnable come back sooner (sums: accuracy level with verl's rule, 1.6x fewer tokens)
    "skip_once": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true",
                  f"{PREFIX}prefilter.enable=true", f"{PREFIX}prefilter.min_constant_visits=1",
                  f"{PREFIX}prefilter.readmit_prob=0.3"],
    # greso's skip after one all-equal visit, but every skip is probed with one response (two for probe2) and the
    # group completed when the probe scores unlike the last one: learnable failed prompts are caught cheaply
    "probe": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true", f"{PREFIX}prefilter.enable=true",
              f"{PREFIX}prefilter.min_constant_visits=1", f"{PREFIX}prefilter.readmit_prob=0.0",
              f"{PREFIX}prefilter.probe_responses=1"],
    "probe2": [f"{PREFIX}keep_surplus=true", f"{PREFIX}adaptive_gen_batch_size=true", f"{PREFIX}prefilter.enable=true",
               f"{PREFIX}prefilter.min_constant_visits=1", f"{PREFIX}prefilter.readmit_prob=0.0",
               f"{PREFIX}prefilter.probe_responses=2"],
}


def run_once(config_file: Path | None, overrides: list[str], steps: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rows, wall = gspo_train(Path(tmp), [f"trainer.seed={seed}", f"trainer.total_training_steps={steps}",
                                            f"trainer.test_freq={steps}", "trainer.logger=[]",
                                            f"{PREFIX}max_num_gen_batches=0", *overrides], config_file)
    train_rows = [r for r in rows if "train/generated_tokens" in r]
    trained_groups = len(train_rows) * _config(config_file, overrides).data.train_batch_size
    return {"tokens_per_group": sum(r["train/generated_tokens"] for r in train_rows) / trained_groups,
            "val_acc": [r["val/acc_mean"] for r in rows if "val/acc_mean" in r][-1],
            "gen_batches_per_step": statistics.mean(r["train/num_gen_batches"] for r in train_rows),
            # dropped / generated groups over the run (steps filled from surplus alone generated none)
            "filtered_ratio": sum(r.get("train/filtered_prompts_ratio", 0.0) * r["train/generated_prompts"]
                                  for r in train_rows) / max(sum(r["train/generated_prompts"] for r in train_rows), 1),
            "wall_s": wall}


def _config(config_file: Path | None, overrides: list[str]):
    from gspo.config import load_config

    return load_config(config_file, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="addition", choices=list(TASK_CONFIGS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--train-prompts", type=int, default=0, help="first N embedded training prompts (0: all)")
    parser.add_argument("--verl-gen-batch-sizes", type=int, nargs="+", default=None, metavar="G",
                        help="data.gen_batch_size values for verl's rule (default: the config's)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run: 1 step, 1 seed, verl vs all, 16 prompts, tiny batches")
    parser.add_argument("overrides", nargs="*", help="extra key=value applied to every run")
    argv = sys.argv[1:]
    # key=value anywhere on the line (after --variants too, which would otherwise take it as a variant name)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides and a != "--"])
    args.overrides = overrides
    config_file = TASK_CONFIGS[args.task]
    subset_dir = tempfile.TemporaryDirectory()
    if args.quick:
        args.steps, args.seeds, args.variants, args.train_prompts = 1, [1], ["verl", "all"], 16
        args.overrides = [*quick_overrides(Path(subset_dir.name)), "algorithm.filter_groups.enable=true",
                          "actor_rollout_ref.rollout.n=4", f"{PREFIX}max_num_gen_batches=20", *args.overrides]
    if args.train_prompts > 0:
        from gspo.resources import resolve_path

        train_file = _config(config_file, args.overrides).data.train_files[0]
        lines = resolve_path(train_file).read_text().splitlines()[:args.train_prompts]
        subset = Path(subset_dir.name) / "train.jsonl"
        subset.write_text("\n".join(lines) + "\n")
        args.overrides = [f"data.train_files=[{subset}]", *args.overrides]
    baselines: dict[str, float] = {}  # "gen_batch_size=G" -> verl's tokens per trained group
    for name in args.variants:
        sizes = (args.verl_gen_batch_sizes or [None]) if name == "verl" else [None]
        for size in sizes:
            overrides = VARIANTS[name] + args.overrides + ([f"data.gen_batch_size={size}"] if size else [])
            runs = [run_once(config_file, overrides, args.steps, seed) for seed in args.seeds]
            tokens = statistics.mean(r["tokens_per_group"] for r in runs)
            gen_batch_size = _config(config_file, overrides).data.gen_batch_size or _config(
                config_file, overrides).data.train_batch_size
            if name == "verl":
                baselines[f"gen_batch_size={gen_batch_size}"] = tokens
            print(json.dumps({
                "benchmark": "dynamic_sampling", "task": args.task, "variant": name, "gen_batch_size": gen_batch_size,
                "steps": args.steps, "seeds": args.seeds, "train_prompts": args.train_prompts or "all",
                "generated_tokens_per_trained_group": round(tokens, 2),
                "saving_vs_verl": {k: round(v / tokens, 3) for k, v in baselines.items()} or None,
                "gen_batches_per_step": round(statistics.mean(r["gen_batches_per_step"] for r in runs), 3),
                "filtered_prompts_ratio": round(statistics.mean(r["filtered_ratio"] for r in runs), 3),
                "final_val_acc_mean": round(statistics.mean(r["val_acc"] for r in runs), 4),
                "final_val_acc": [round(r["val_acc"], 4) for r in runs],
                "wall_s_mean": round(statistics.mean(r["wall_s"] for r in runs), 1),
            }), flush=True)

if __name__ == "__main__":
    main()
