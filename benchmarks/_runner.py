"""Run `gspo train` in a child process, as a user would, and read back its metrics (shared by the benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def gspo_train(out: Path, overrides: list[str], config_file: Path | None = None) -> tuple[list[dict], float]:
    """``gspo train [--config FILE] trainer.default_local_dir=OUT OVERRIDES...``: (metrics.jsonl rows, wall seconds).

    A failed run ends the benchmark with its exit code and the tail of its stderr."""
    cmd = [sys.executable, "-m", "gspo", "train", *(["--config", str(config_file)] if config_file else []),
           f"trainer.default_local_dir={out}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], wall


@dataclass
class TrainRun:
    """A finished ``gspo train``: its exit code, metrics.jsonl rows, wall seconds and the end of its stderr."""

    exit_code: int
    rows: list[dict]
    wall_s: float
    stderr_tail: str


def run_gspo_train(out: Path, overrides: list[str], *, timeout_s: float | None = None) -> TrainRun:
    """``gspo train trainer.default_local_dir=OUT OVERRIDES...`` like :func:`gspo_train`, but a failed run is
    returned to the caller (exit code and stderr tail), not raised; a run past ``timeout_s`` is killed (exit code
    -9)."""
    cmd = [sys.executable, "-m", "gspo", "train", f"trainer.default_local_dir={out}", *overrides]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        exit_code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:  # its captured output is bytes whatever text= says
        exit_code, stderr = -9, f"{(exc.stderr or b'').decode(errors='replace')}\ntimed out after {timeout_s} s"
    wall = time.perf_counter() - start
    metrics = out / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    return TrainRun(exit_code, rows, wall, stderr[-2000:])
