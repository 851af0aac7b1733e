"""Benchmark the embedded default: `gspo train` with no arguments, on this machine's CPU.

Prints one JSON line: start / end validation accuracy (greedy, held-out prompts), the gain, the accuracy curve,
wall time, peak RSS of the training process, and the machine.

    python benchmarks/default_run.py [key=value ...]   # extra overrides are passed to `gspo train`
    python benchmarks/default_run.py --quick           # 1 tiny step: checks that the script runs (no figures)
    python benchmarks/default_run.py --contended [key=value ...]

``--contended`` runs the default twice: alone, then with two busy-loop processes on the same cores (what other
work on a shared laptop does), and reports both wall times and their ratio (3x would be the fair share of 2 cores
among 3 busy processes). ``gspo train`` picks its threads itself; set OMP_WAIT_POLICY / GSPO_NUM_THREADS in
the environment to measure other choices (e.g. OMP_WAIT_POLICY=ACTIVE GSPO_NUM_THREADS=2: the old behaviour).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import quick_overrides  # noqa: E402
from _runner import gspo_train  # noqa: E402

BUSY_LOOPS = 2


def main(argv: list[str]) -> dict:
    quick = "--quick" in argv
    overrides = [arg for arg in argv if arg != "--quick"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        if quick:
            overrides = quick_overrides(Path(tmp)) + overrides
        rows, wall = gspo_train(out, overrides)
    val = [(row["step"], row["val/acc_mean"]) for row in rows if "val/acc_mean" in row]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    result = {
        "benchmark": "default_run",
        "start_val_acc": val[0][1],
        "end_val_acc": val[-1][1],
        "val_acc_gain": val[-1][1] - val[0][1],
        "val_acc_curve": val,
        "steps": max(row["step"] for row in rows),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "cpu_threads": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    if quick:
        result["quick"] = True  # a smoke run: its figures say nothing about the default run
    return result


def busy_loops(count: int) -> list[subprocess.Popen]:
    """``count`` processes spinning in pure Python (one core each) until killed, or until this process is gone
    (each checks its parent every ~10 M iterations, so none outlives a benchmark that was itself killed)."""
    spin = f"import os\nwhile os.getppid() == {os.getpid()}:\n    for _ in range(10_000_000): pass"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


def contended(overrides: list[str]) -> dict:
    idle = main(overrides)
    loops = busy_loops(BUSY_LOOPS)
    try:
        busy = main(overrides)
    finally:
        for loop in loops:
            loop.kill()  # not SIGTERM: a loop started by a process that ignores it would ignore it too
            loop.wait()
    ratio = busy["wall_s"] / idle["wall_s"]
    return {"benchmark": "default_run_contended", "busy_loops": BUSY_LOOPS, "idle_wall_s": idle["wall_s"],
            "contended_wall_s": busy["wall_s"], "ratio": round(ratio, 2), "idle": idle, "contended": busy,
            "load_average_at_end": os.getloadavg()[0]}


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--contended" in args:
        print(json.dumps(contended([a for a in args if a != "--contended"])))
    else:
        print(json.dumps(main(args)))
