"""Ablation: {GSPO, token-level GRPO} x {no dynamic sampling, verl's rule, our switches} x seeds, on both tasks.

Every run trains until it has generated the same budget of response tokens (``--budget``, per task), so a variant
that throws generated groups away pays for them with fewer updates. Validation (greedy, held-out prompts) runs
every ``budget / --evals`` generated tokens, so curves share their x-axis.

    python benchmarks/ablation.py [--tasks addition sums] [--seeds 1 2 3] [--budget-steps 150]
        [--out benchmarks/results/ablation.json] [--plot docs/ablation.png] [--quick]

Losses: ``gspo`` is the library default (sequence-level ratio, clip 3e-4 / 4e-4, seq-mean-token-mean);
``grpo`` is vanilla token-level PPO/GRPO with DAPO's clip-higher (0.2 / 0.28) and token-mean aggregation.
Dynamic sampling: ``off`` trains on every group (all-equal ones have zero advantage); ``verl`` drops all-equal
groups and regenerates until the train batch is full, with verl's default generation batch
(``gen_batch_size = train_batch_size``), trimming what is left over; ``ours`` adds keep_surplus, the adaptive
generation batch and the history-based prefilter (skip after one all-equal visit, GRESO back-off on
re-admission): the ``greso`` variant of benchmarks/dynamic_sampling.py.

The budget is ``--budget-steps`` steps of the ``off`` variant: ``train_batch_size x n x`` the warm start's mean
response length (measured by a first ``off`` step). Per run the JSON holds the curve (generated tokens, val acc),
the final val acc, the steps taken, mean clip fractions and the mean per-step spread (max - min) of the
sequence-level importance ratio (both losses log it) and of the token-level ratio (GRPO only). The summary rows
give the seed mean and standard deviation. ``--quick`` runs a tiny budget on a slice of the validation set, so
that a test can run the whole pipeline in seconds.
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

REPO = Path(__file__).resolve().parent.parent
TASK_CONFIGS = {"addition": None, "sums": REPO / "recipe" / "gspo" / "config" / "sums.yaml"}
ACTOR = "actor_rollout_ref.actor."
FILTER = "algorithm.filter_groups."
LOSSES = {
    "gspo": [f"{ACTOR}policy_loss.loss_mode=gspo", f"{ACTOR}clip_ratio_low=0.0003", f"{ACTOR}clip_ratio_high=0.0004",
             f"{ACTOR}loss_agg_mode=seq-mean-token-mean"],
    "grpo": [f"{ACTOR}policy_loss.loss_mode=vanilla", f"{ACTOR}clip_ratio_low=0.2", f"{ACTOR}clip_ratio_high=0.28",
             f"{ACTOR}loss_agg_mode=token-mean"],
}
SAMPLING = {
    "off": [f"{FILTER}enable=false", "data.gen_batch_size=null"],
    "verl": [f"{FILTER}enable=true", "data.gen_batch_size=null", f"{FILTER}max_num_gen_batches=0"],
    "ours": [f"{FILTER}enable=true", "data.gen_batch_size=null", f"{FILTER}max_num_gen_batches=0",
             f"{FILTER}keep_surplus=true", f"{FILTER}adaptive_gen_batch_size=true", f"{FILTER}prefilter.enable=true",
             f"{FILTER}prefilter.min_constant_visits=1", f"{FILTER}prefilter.readmit_decay=true"],
}
STEP_METRICS = ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/pg_clipfrac_upper")


def build_trainer(task: str, overrides: list[str], out_dir: str, val_limit: int):
    from gspo.config import load_config
    from gspo.trainer.trainer import Trainer

    config = load_config(TASK_CONFIGS[task], [f"trainer.default_local_dir={out_dir}", "trainer.logger=[]", *overrides])
    trainer = Trainer(config)
    if val_limit and trainer.val_data is not None:
        trainer.val_data = list(trainer.val_data)[:val_limit]
    return trainer


def run(task: str, loss: str, sampling: str, seed: int, budget: int, evals: int, val_limit: int,
        extra: list[str]) -> dict:
    """Train until ``budget`` response tokens are generated; validate every ``budget / evals`` tokens."""
    overrides = [*LOSSES[loss], *SAMPLING[sampling], f"trainer.seed={seed}", *extra]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(task, overrides, tmp, val_limit)
        curve = [(0, trainer.validate()["val/acc_mean"])]
        tokens, next_eval, per_step = 0, budget / evals, []
        while tokens < budget:
            metrics = trainer.train_step()
            trainer.global_step += 1
            tokens += int(metrics["train/generated_tokens"])
            per_step.append(metrics)
            if tokens >= next_eval or tokens >= budget:
                curve.append((tokens, trainer.validate()["val/acc_mean"]))
                while next_eval <= tokens:
                    next_eval += budget / evals
    seq_spread = [m["actor/seq_importance_ratio_max"] - m["actor/seq_importance_ratio_min"] for m in per_step
                  if "actor/seq_importance_ratio_max" in m]
    tok_spread = [m["actor/token_importance_ratio_max"] - m["actor/token_importance_ratio_min"] for m in per_step
                  if "actor/token_importance_ratio_max" in m]
    return {"task": task, "loss": loss, "sampling": sampling, "seed": seed, "budget_tokens": budget,
            "generated_tokens": tokens, "steps": len(per_step), "curve": curve, "final_val_acc": curve[-1][1],
            **{f"{name}_mean": _mean(m.get(name) for m in per_step) for name in STEP_METRICS},
            "seq_ratio_spread_mean": _mean(seq_spread), "token_ratio_spread_mean": _mean(tok_spread),
            "filtered_prompts_ratio_mean": _mean(m.get("train/filtered_prompts_ratio") for m in per_step),
            "wall_s": round(time.perf_counter() - start, 1)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def measure_budget(task: str, steps: int, val_limit: int, extra: list[str]) -> int:
    """Response tokens of ``steps`` steps without filtering, from one step at the warm start."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(task, [*LOSSES["gspo"], *SAMPLING["off"], *extra], tmp, val_limit)
        tokens = trainer.train_step()["train/generated_tokens"]
    return int(tokens * steps)


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(r["task"], r["loss"], r["sampling"]) for r in runs},
                  key=lambda k: (k[0], list(LOSSES).index(k[1]), list(SAMPLING).index(k[2])))
    for task, loss, sampling in keys:
        group = [r for r in runs if (r["task"], r["loss"], r["sampling"]) == (task, loss, sampling)]
        acc = [r["final_val_acc"] for r in group]
        row = {"task": task, "loss": loss, "sampling": sampling, "seeds": len(group),
               "start_val_acc": round(statistics.mean(r["curve"][0][1] for r in group), 4),
               "final_val_acc_mean": round(statistics.mean(acc), 4),
               "final_val_acc_std": round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0,
               "steps_mean": round(statistics.mean(r["steps"] for r in group), 1)}
        for name in ("actor/pg_clipfrac_mean", "seq_ratio_spread_mean", "token_ratio_spread_mean",
                     "filtered_prompts_ratio_mean"):
            values = [r[name] for r in group if r[name] is not None]
            row[name.split("/")[-1]] = round(statistics.mean(values), 5) if values else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| task | loss | dynamic sampling | steps | val acc start -> final (mean ± sd) | clip frac | "
             "seq-ratio spread | token-ratio spread | dropped |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = (lambda v, f=".4f": "-" if v is None else format(v, f))
        lines.append(f"| {r['task']} | {r['loss']} | {r['sampling']} | {r['steps_mean']:.0f} | {r['start_val_acc']:.3f}"
                     f" -> {r['final_val_acc_mean']:.3f} ± {r['final_val_acc_std']:.3f} | "
                     f"{fmt(r['pg_clipfrac_mean'])} | {fmt(r['seq_ratio_spread_mean'])} | "
                     f"{fmt(r['token_ratio_spread_mean'])} | {fmt(r['filtered_prompts_ratio_mean'], '.2f')} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs}, key=list(TASK_CONFIGS).index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    colors = {"off": "tab:gray", "verl": "tab:blue", "ours": "tab:green"}
    styles = {"gspo": "-", "grpo": "--"}
    for ax, task in zip(axes[0], tasks):
        for loss in LOSSES:
            for sampling in SAMPLING:
                group = [r for r in runs if (r["task"], r["loss"], r["sampling"]) == (task, loss, sampling)]
                if not group:
                    continue
                for i, r in enumerate(group):
                    xs, ys = zip(*r["curve"])
                    ax.plot([x / 1e3 for x in xs], ys, styles[loss], color=colors[sampling], alpha=0.9 if i == 0
                            else 0.35, label=f"{loss}, {sampling}" if i == 0 else None, linewidth=1.4)
        ax.set_title(f"{task}: greedy val accuracy (lines = seeds)")
        ax.set_xlabel("generated response tokens (thousands)")
        ax.set_ylabel("val accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_CONFIGS), choices=list(TASK_CONFIGS))
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--sampling", nargs="+", default=list(SAMPLING), choices=list(SAMPLING))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--budget-steps", type=float, default=150, help="budget = this many steps without filtering")
    parser.add_argument("--evals", type=int, default=6, help="validation points along the budget")
    parser.add_argument("--val-limit", type=int, default=0, help="first N validation prompts only (0: all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ablation.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "ablation.png")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1.5 steps of budget, 32 val prompts")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="train nothing: summarise and plot the runs of earlier --out files together")
    parser.add_argument("overrides", nargs="*", help="extra key=value applied to every run")
    argv = sys.argv[1:] if argv is None else argv
    # key=value anywhere on the line (after --seeds too, which would otherwise take it as a seed)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides and a != "--"])
    args.overrides = overrides
    if args.quick:
        args.seeds, args.budget_steps, args.evals, args.val_limit = args.seeds[:1], 1.5, 1, args.val_limit or 32
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    runs = [run for path in args.merge or () for run in json.loads(path.read_text())["runs"]]
    for task in [] if args.merge else args.tasks:
        budget = measure_budget(task, args.budget_steps, args.val_limit, args.overrides)
        for loss in args.losses:
            for sampling in args.sampling:
                for seed in args.seeds:
                    result = run(task, loss, sampling, seed, budget, args.evals, args.val_limit, args.overrides)
                    runs.append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), file=sys.stderr, flush=True)
    summary = summarise(runs)
    report = {"benchmark": "ablation", "argv": argv, "summary": summary,
              "runs": runs, "table": markdown_table(summary)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(runs, args.plot)
    print(json.dumps({"benchmark": "ablation", "summary": summary, "json": str(args.out), "plot": str(args.plot)}))
    return report


if __name__ == "__main__":
    main()
