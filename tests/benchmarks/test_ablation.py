"""benchmarks/ablation.py --quick: both tasks, both losses, every sampling mode, on a tiny budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


def _load():
    spec = importlib.util.spec_from_file_location("ablation", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_ablation_writes_json_table_and_plot(tmp_path):
    out, png = tmp_path / "ablation.json", tmp_path / "ablation.png"
    report = _load().main(["--quick", "--out", str(out), "--plot", str(png)])
    assert json.loads(out.read_text())["summary"] == report["summary"]
    assert png.stat().st_size > 10_000
    cells = {(r["task"], r["loss"], r["sampling"]) for r in report["summary"]}
    assert cells == {(t, loss, s) for t in ("addition", "sums") for loss in ("gspo", "grpo")
                     for s in ("off", "verl", "ours")}
    for run in report["runs"]:
        assert run["generated_tokens"] >= run["budget_tokens"] > 0  # every run spends the same budget
        assert run["steps"] >= 1 and len(run["curve"]) == 2 and 0.0 <= run["final_val_acc"] <= 1.0
        assert run["seq_ratio_spread_mean"] is not None
        assert (run["token_ratio_spread_mean"] is None) == (run["loss"] == "gspo")
        if run["sampling"] == "off":
            assert run["filtered_prompts_ratio_mean"] == 0.0
    assert report["table"].count("\n") == len(report["summary"]) + 1
