"""Data parallel on CPU: the embedded default task on 1 process and on N gloo processes (torchrun + FSDP2).

Prints one JSON line per process count: seconds per training step (mean after warm-up steps) and its split,
and whether the N-process run kept the same groups and reached the same rewards, losses and parameters as the
single-process run (sampling is seeded per response, so it should, to float32 reduction-order noise).

    python benchmarks/data_parallel.py [--steps 10] [--warmup 2] [--nproc 1 2] [key=value ...]

On a 2-core machine expect no speed-up: each process gets one core, and FSDP adds all-gathers, reduce-scatters
and the rollout-weight refresh. The point here is correctness; speed-ups need one device per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import quick_overrides  # noqa: E402

SPLIT = ("timing/gen", "timing/reward", "timing/old_log_prob", "timing/update")
COMPARED = ("train/kept_prompts", "reward/all/score_mean", "reward/kept/score_mean", "actor/pg_loss",
            "actor/grad_norm", "actor/pg_clipfrac")


def run(nproc: int, steps: int, out: Path, overrides: list[str]) -> tuple[list[dict], float]:
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "gspo"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "gspo"]
    command = [*launcher, "train", f"trainer.default_local_dir={out}", f"trainer.total_training_steps={steps}",
               "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.logger=[]",
               "trainer.device=cpu", "trainer.resume_mode=disable", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{nproc} process(es): gspo train failed with exit code {proc.returncode}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], wall


def max_param_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    # k_proj biases have an identically zero gradient (softmax shift invariance); AdamW turns their float noise
    # into lr-sized steps, so they are not comparable across reduction orders.
    return max((first[k] - second[k]).abs().max().item() for k in first if not k.endswith("k_proj.bias"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: 1 tiny step on 1 and 2 processes")
    opts, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        if opts.quick:
            opts.steps, opts.warmup = 1, 0
            overrides = [*quick_overrides(Path(tmp)), *overrides]
        runs = {}
        for nproc in opts.nproc:
            out = Path(tmp) / f"np{nproc}"
            rows, wall = run(nproc, opts.steps, out, overrides)
            timed = [r for r in rows if r["step"] > opts.warmup]
            runs[nproc] = (rows, out)
            result = {"benchmark": "data_parallel", "nproc": nproc, "steps": opts.steps,
                      "s_per_step": round(statistics.mean(r["timing/step"] for r in timed), 4),
                      "split_s": {k.split("/")[1]: round(statistics.mean(r.get(k, 0.0) for r in timed), 4)
                                  for k in SPLIT},
                      "wall_s": round(wall, 1), "threads_per_process": max(1, (os.cpu_count() or 1) // nproc),
                      "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
            base_rows, base_out = runs[opts.nproc[0]]
            if nproc != opts.nproc[0]:
                result["same_kept_and_rewards_as_nproc_%d" % opts.nproc[0]] = all(
                    a.get(k) == b.get(k) for a, b in zip(base_rows, rows) for k in COMPARED[:3])
                result["max_abs_metric_diff"] = max(abs(a[k] - b[k]) for a, b in zip(base_rows, rows)
                                                    for k in COMPARED if k in a and k in b)
                result["max_abs_param_diff"] = max_param_diff(base_out / "final_model", out / "final_model")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
