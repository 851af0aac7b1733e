"""benchmarks/lora.py --quick runs and reports exact parameter and optimizer-state counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "lora.py"
# The shipped warm start (gspo/assets/addition): hidden 128, intermediate 384, 3 layers, 4 query / 2 key-value heads
# of size 32. Rank-8 adapters on its 7 linear layers per block hold 8 x (in + out) each: q, o 8(128+128)=2048,
# k, v 8(128+64)=1536, gate, up, down 8(128+384)=4096 -> 19456 per layer, 58368 in all.
FULL_PARAMS, LORA_PARAMS = 593408, 58368


def test_lora_benchmark_quick():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {row["mode"]: row for row in result["rows"]}
    assert rows["full"]["trainable_params"] == rows["full"]["base_params"] == FULL_PARAMS
    assert rows["lora"]["trainable_params"] == LORA_PARAMS and rows["lora"]["base_params"] == FULL_PARAMS
    for row in rows.values():  # AdamW: two fp32 moments per parameter and a 4-byte step count per tensor
        moments = 8 * row["trainable_params"]
        assert moments < row["optimizer_state_bytes"] <= moments + 4 * 200
        assert row["s_per_step"] > 0 and row["peak_rss_mib"] > 0
