"""mode=sync in one process on 2 threads against a rollout pool (mode=async, k=1): one trainer rank and one rollout
rank at 1 thread each, on the embedded default (or the sums task), the same steps and seeds.

Prints one JSON line per run and a summary line: wall time, seconds per step (the training loop's timing/step),
final validation accuracy, and for async each side's share of the loop spent waiting for the other
(async/trainer_wait_s, async/rollout_wait_s summed over the steps, over the loop's time).

    python benchmarks/async_rollout.py                 # embedded default, 150 steps, seeds 1 2 3
    python benchmarks/async_rollout.py --task sums --seeds 1
    python benchmarks/async_rollout.py --quick         # 2 tiny steps each: a smoke run
    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/async_rollout.py --engine vllm --seeds 1   # vLLM (CPU build)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _quick import tiny_val_file  # noqa: E402
from _runner import gspo_train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"addition": None, "sums": ROOT / "recipe" / "gspo" / "config" / "sums.yaml"}
ASYNC = ["actor_rollout_ref.rollout.mode=async", "actor_rollout_ref.rollout.n_gpus_per_node=1",
         "async_training.staleness_threshold=1", "trainer.cpu_threads=1"]
SYNC = ["trainer.cpu_threads=2"]


def run(mode: str, seed: int, steps: int, task: str, folder: Path, quick: bool, engine: str = "hf") -> dict:
    overrides = [f"trainer.seed={seed}", f"trainer.total_training_steps={steps}", "trainer.logger=[]",
                 "trainer.device=cpu", f"actor_rollout_ref.rollout.name={engine}",
                 *(ASYNC if mode == "async" else SYNC)]
    if quick:  # 2 prompts x 2 responses per step, 4 validation prompts
        overrides += ["data.train_batch_size=2", "data.gen_batch_size=2", "actor_rollout_ref.rollout.n=2",
                      "actor_rollout_ref.actor.ppo_mini_batch_size=2", "algorithm.filter_groups.enable=false",
                      f"data.val_files=[{tiny_val_file(folder)}]"]
    rows, wall = gspo_train(folder / f"{task}-{engine}-{mode}-{seed}", overrides, TASKS[task])
    trained = [r for r in rows if r["step"] > 0]
    loop = sum(r["timing/step"] for r in trained)
    curve = [r["val/acc_mean"] for r in rows if "val/acc_mean" in r]
    result = {"task": task, "engine": engine, "mode": mode, "seed": seed, "steps": len(trained),
              "wall_s": round(wall, 2), "sec_per_step": round(loop / len(trained), 4),
              "start_val_acc": curve[0], "final_val_acc": curve[-1]}
    if mode == "async":
        result["trainer_wait_share"] = round(sum(r["async/trainer_wait_s"] for r in trained) / loop, 3)
        result["rollout_wait_share"] = round(sum(r.get("async/rollout_wait_s", 0.0) for r in trained) / loop, 3)
        result["weight_sync_s_mean"] = round(statistics.mean(
            [r["timing/weight_sync"] for r in trained if "timing/weight_sync" in r] or [0.0]), 5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="addition")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="vllm: run with .venv-vllm's python")
    parser.add_argument("--quick", action="store_true", help="2 tiny steps per run, seed 1")
    args = parser.parse_args()
    steps, seeds = (2, [1]) if args.quick else (args.steps, args.seeds)
    results: dict[str, list[dict]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for mode in ("sync", "async"):
                result = run(mode, seed, steps, args.task, Path(tmp), args.quick, args.engine)
                results[mode].append(result)
                print(json.dumps(result), flush=True)
    per_step = {mode: statistics.mean(r["sec_per_step"] for r in rows) for mode, rows in results.items()}
    print(json.dumps({"summary": True, "task": args.task, "engine": args.engine, "steps": steps, "seeds": seeds,
                      "quick": args.quick,
                      "sync_sec_per_step": round(per_step["sync"], 4),
                      "async_sec_per_step": round(per_step["async"], 4),
                      "speedup_per_step": round(per_step["sync"] / per_step["async"], 3),
                      "sync_final_val_acc": [r["final_val_acc"] for r in results["sync"]],
                      "async_final_val_acc": [r["final_val_acc"] for r in results["async"]]}))


if __name__ == "__main__":
    main()
