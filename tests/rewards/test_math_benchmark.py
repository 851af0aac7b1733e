"""benchmarks/math_reward.py --quick runs and reports what it promises (the numbers themselves are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "math_reward.py"


def test_quick_benchmark_prints_one_json_line_per_mix():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, *rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert head["workers"] >= 1 and head["timeout_s"] == 1.0 and head["pool_start_s"] > 0
    by_mix = {row["mix"]: row for row in rows}
    assert set(by_mix) == {"math", "dapo", "distinct", "pathological"}
    for mix, row in by_mix.items():
        assert row["responses"] == 32 and row["answers_per_s"] > 0, row
        assert row["errors"] == ([1] if mix == "pathological" else [0]), row  # the one answer past its deadline
    assert 0 < by_mix["math"]["acc_mean"] < 1 and by_mix["distinct"]["acc_mean"] == 0
