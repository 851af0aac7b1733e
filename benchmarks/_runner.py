"""Run `gspo train` in a child process, as a user would, and read back its metrics (shared by the benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
