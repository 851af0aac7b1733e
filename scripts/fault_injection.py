"""Random ``kill -9`` campaign on a small `gspo train`: every killed-and-resumed run must equal an uninterrupted one.

``python scripts/fault_injection.py --seeds 10 [--kills 2] [--out /tmp/gspo-fi]`` runs the embedded addition task
(small batches, 8 steps, a checkpoint every 2 steps, validation before training and every 4 steps) once straight,
then per seed: starts it, SIGKILLs it at a random moment (after a random number of rows plus up to two steps'
time; up to ``--kills`` times, each time running the same command again), lets the last run finish, and compares
``metrics.jsonl`` (one row per step 0..8, every non-wall-clock value equal) and ``final_model`` weights
(bit-identical) with the straight run. Prints one JSON line per seed and a summary line; exit 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ARGS = ["data.train_batch_size=8", "data.gen_batch_size=12", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "trainer.total_training_steps=8", "trainer.save_freq=2",
        "trainer.test_freq=4", "trainer.val_before_train=true", "trainer.logger=[]", "trainer.device=cpu",
        "trainer.max_actor_ckpt_to_keep=2"]
VOLATILE = ("timing/", "perf/")


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "gspo", "train", f"trainer.default_local_dir={out}", *ARGS]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(VOLATILE)}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _wait_for_rows(proc: subprocess.Popen, out: Path, rows: int) -> None:
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and len(metrics.read_bytes().splitlines()) >= rows):
        time.sleep(0.01)


def _run_and_kill(out: Path, rng: random.Random, step_s: float) -> str | None:
    """Start the run; SIGKILL it a random moment after ``metrics.jsonl`` holds a random number of rows (at once
    for a resumed run that already has them: start-up is hit too). Returns what happened (None: it finished)."""
    rows = rng.randint(1, 9)
    proc = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    _wait_for_rows(proc, out, rows)
    delay = rng.uniform(0, 2 * step_s)
    deadline = time.time() + delay
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f"killed {delay:.2f} s after row {rows}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--kills", type=int, default=2, help="kills per seed before the run may finish")
    parser.add_argument("--out", default="/tmp/gspo-fault-injection")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    straight = root / "straight"
    proc = subprocess.Popen(_command(straight), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    _wait_for_rows(proc, straight, 1)
    start = time.time()
    assert proc.wait() == 0, "the uninterrupted run failed"
    window = (time.time() - start) / 8  # seconds per step, checkpoint and export included
    want_rows, want_weights = _rows(straight), load_file(straight / "final_model" / "model.safetensors")
    failures = 0
    for seed in range(args.seeds):
        rng = random.Random(seed)
        out = root / f"seed_{seed}"
        events = []
        for _ in range(rng.randint(1, args.kills)):
            events.append(_run_and_kill(out, rng, window))
            if events[-1] is None:
                break
        if events[-1] is None:  # the last start ran to the end
            done = subprocess.CompletedProcess([], 0, "", "")
            events[-1] = "finished before the kill"
        else:
            done = subprocess.run(_command(out), capture_output=True, text=True, env=_env())
        # A kill after the export, while the process exits, leaves a finished run: the rerun says so (exit 2).
        finished = done.returncode == 0 or (done.returncode == 2 and "final_model exported" in done.stderr)
        rows = _rows(out) if (out / "metrics.jsonl").is_file() else []
        weights = load_file(out / "final_model" / "model.safetensors") if finished else {}
        same = (finished and rows == want_rows and weights.keys() == want_weights.keys()
                and all(torch.equal(weights[k], want_weights[k]) for k in want_weights))
        failures += not same
        print(json.dumps({"seed": seed, "events": events, "final_rc": done.returncode,
                          "steps": [r["step"] for r in rows], "identical": same,
                          "stderr_tail": done.stderr.strip().splitlines()[-1:] if not same else []}), flush=True)
    print(json.dumps({"seeds": args.seeds, "failures": failures, "reference_steps": [r["step"] for r in want_rows]}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
