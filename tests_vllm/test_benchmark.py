"""benchmarks/rollout_engines.py --quick with both engines (the full run's figures are in benchmarks/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_rollout_engines_quick_runs_both_engines():
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "rollout_engines.py"), "--quick"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [row["engine"] for row in rows] == ["hf", "vllm"]
    assert all(row["tokens_per_s"] > 0 and row["sequences"] == 8 for row in rows)
