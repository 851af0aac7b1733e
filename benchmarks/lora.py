"""Full fine-tuning vs LoRA: trainable parameters, optimizer state, peak RSS and seconds per step; and whether
the embedded default learns with LoRA. Prints one JSON object.

    python benchmarks/lora.py                      # embedded default (0.59M) and ~20M model, full vs LoRA r=8,
                                                   # then `gspo train` with LoRA (accuracy curve, wall time)
    python benchmarks/lora.py --quick              # the 0.59M model, 2 small steps each, no learning run (tested)
    python benchmarks/lora.py --rank 16 --alpha 32 --lr 2e-3 --sizes medium
    python benchmarks/lora.py --sizes              # the learning run alone

Each (model, mode) runs in a fresh process, so peak RSS is that configuration's own. Steps are timed with dynamic
sampling off (a random-init 20M model earns no reward, so every group would be filtered) and the embedded
default's batch shape otherwise (32 prompts x 8 responses, 2 mini-batches, at most 6 response tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import gspo_train  # noqa: E402

# The learning run reports the training time at which validation accuracy first rose by this much.
GAIN_MARK = 0.15
# The lr the README gives for LoRA on the embedded default (full fine-tuning uses 1e-4); see --lr.
DEFAULT_LORA_LR = 1e-3


def child(spec: dict) -> dict:
    """Build a trainer for ``spec`` and time ``spec['steps']`` training steps in this process."""
    import torch

    from gspo.config import load_config
    from gspo.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    overrides = [f"actor_rollout_ref.model.path={spec['model']}", f"trainer.default_local_dir={spec['out']}",
                 "algorithm.filter_groups.enable=false", "trainer.val_before_train=false", "trainer.test_freq=-1",
                 "trainer.logger=[]", "trainer.device=cpu", f"trainer.total_training_steps={spec['steps']}",
                 f"actor_rollout_ref.actor.optim.lr={spec['lr']}", "trainer.resume_mode=disable", *spec["extra"]]
    if spec["mode"] == "lora":
        overrides += [f"actor_rollout_ref.model.lora_rank={spec['rank']}",
                      f"actor_rollout_ref.model.lora_alpha={spec['alpha']}"]
    trainer = Trainer(load_config(None, overrides, preset="addition"))  # the embedded task's settings
    steps = []
    for _ in range(spec["steps"]):
        metrics = trainer.train_step()
        trainer.global_step += 1
        steps.append(metrics)
    timed = steps[spec["warmup"]:]
    optimizer_bytes = sum(value.numel() * value.element_size() for state in trainer.optimizer.state.values()
                          for value in state.values() if torch.is_tensor(value))
    return {
        "base_params": sum(p.numel() for p in trainer.model.parameters() if not _is_adapter(p, trainer)),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "optimizer_state_bytes": optimizer_bytes,
        "s_per_step": round(statistics.median(m["timing/step"] for m in timed), 4),
        "s_per_update": round(statistics.median(m["timing/update"] for m in timed), 4),
        "s_per_gen": round(statistics.median(m["timing/gen"] for m in timed), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "timed_steps": len(timed),
    }


def _is_adapter(param, trainer) -> bool:
    return trainer.lora is not None and param.requires_grad


def run_child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark child {spec['size']}/{spec['mode']} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def learning_run(opts: argparse.Namespace) -> dict:
    """`gspo train` (the embedded default) with LoRA: validation accuracy over training, the wall time, and the
    training time at which the gain first reached ``GAIN_MARK`` (steps + validations, from metrics.jsonl)."""
    overrides = [f"actor_rollout_ref.model.lora_rank={opts.rank}", f"actor_rollout_ref.model.lora_alpha={opts.alpha}",
                 f"actor_rollout_ref.actor.optim.lr={opts.lr}"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        rows, wall = gspo_train(out, overrides)
    elapsed, curve = 0.0, []
    for row in rows:
        elapsed += row.get("timing/step", 0.0) + row.get("timing/val", 0.0)
        if "val/acc_mean" in row:
            curve.append((row["step"], round(elapsed, 1), row["val/acc_mean"]))
    start_acc = curve[0][2]
    reached = next((t for _, t, acc in curve if acc - start_acc >= GAIN_MARK), None)
    gain = curve[-1][2] - start_acc
    return {"overrides": overrides, "start_val_acc": start_acc, "end_val_acc": curve[-1][2],
            "val_acc_gain": round(gain, 4), "val_curve_step_s_acc": curve, "wall_s": round(wall, 1),
            "gain_mark": GAIN_MARK, "train_s_to_gain_mark": reached}


def main(opts: argparse.Namespace) -> dict:
    from vs_trl import build_model_folder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in opts.sizes:
            model = build_model_folder(size, Path(tmp) / f"model_{size}", seed=0, max_len=32)
            for mode in ("full", "lora"):
                spec = dict(size=size, mode=mode, model=model, out=str(Path(tmp) / f"{size}_{mode}"),
                            steps=opts.steps, warmup=opts.warmup, threads=opts.threads, rank=opts.rank,
                            alpha=opts.alpha, lr=opts.lr if mode == "lora" else 1e-4, extra=opts.extra)
                rows.append({"size": size, "mode": mode, **run_child(spec)})
    result = {"benchmark": "lora", "quick": opts.quick, "rank": opts.rank, "alpha": opts.alpha, "lora_lr": opts.lr,
              "rows": rows, "ratios_lora_over_full": _ratios(rows),
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "threads": opts.threads}
    if not opts.quick and not opts.skip_learning:
        result["learning"] = learning_run(opts)
    return result


def _ratios(rows: list[dict]) -> dict:
    by = {(r["size"], r["mode"]): r for r in rows}
    out = {}
    for size in {r["size"] for r in rows}:
        full, lora = by[(size, "full")], by[(size, "lora")]
        out[size] = {name: round(lora[name] / full[name], 4) for name in
                     ("trainable_params", "optimizer_state_bytes", "peak_rss_mib", "s_per_step", "s_per_update")}
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", choices=("small", "medium"), default=["small", "medium"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (1: no OpenMP spin-waiting on a shared machine)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=DEFAULT_LORA_LR, help="LoRA learning rate")
    parser.add_argument("--skip-learning", action="store_true", help="no `gspo train` learning run")
    parser.add_argument("--quick", action="store_true", help="0.59M model, 2 steps each, no learning run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    opts.extra = []
    if opts.quick:  # a smoke test of the benchmark itself: numbers of parameters and state exact, timings not
        opts.sizes, opts.steps, opts.warmup, opts.threads = ["small"], 2, 1, 1
        opts.extra = ["data.train_batch_size=2", "data.gen_batch_size=2", "actor_rollout_ref.rollout.n=2",
                      "actor_rollout_ref.actor.ppo_mini_batch_size=2"]  # benchmarks/_quick.py's batch
    return opts


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    if options.child:
        print(json.dumps(child(json.loads(options.child))))
    else:
        print(json.dumps(main(options)))
