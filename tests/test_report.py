"""`gspo report`: a synthetic metrics.jsonl -> report.png (readable panels) + report.md; gaps are skipped."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from gspo.cli import main
from gspo.report import PANELS, read_metrics, series, write_report

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_rows(num_steps: int = 30, test_freq: int = 5) -> list[dict]:
    """A run that learns: step 0 is validation only; val every test_freq steps; every training metric per step."""
    rows = [{"step": 0, "val/acc_mean": 0.20, "val/score_mean": 0.20, "timing/val": 12.0}]
    for step in range(1, num_steps + 1):
        progress = step / num_steps
        row = {"step": step, "reward/all/acc_mean": 0.2 + 0.5 * progress,
               "reward/kept/acc_mean": 0.45 + 0.1 * progress,
               "train/filtered_prompts_ratio": 0.2 + 0.4 * progress, "train/num_gen_batches": 1 + (step % 3 == 0),
               "actor/pg_clipfrac_lower": 0.01 * (1 + math.sin(step)), "actor/pg_clipfrac_upper": 0.02 * progress,
               "actor/seq_importance_ratio": 1.0 + 1e-4 * math.cos(step),
               "actor/seq_importance_ratio_max": 1.0 + 5e-4, "actor/seq_importance_ratio_min": 1.0 - 4e-4,
               "actor/entropy": 0.9 - 0.5 * progress, "response_length/mean": 300 - 100 * progress,
               "timing/gen": 20.0, "timing/reward": 0.5, "timing/old_log_prob": 3.0, "timing/update": 8.0,
               "timing/adv": 0.01, "timing/step": 32.0 if step != 10 else 52.0}
        if step % test_freq == 0:
            row.update({"val/acc_mean": 0.2 + 0.5 * progress - (0.1 if step == num_steps else 0.0),
                        "val/score_mean": 0.2 + 0.5 * progress})
        rows.append(row)
    return rows


def write_run(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_full_report(tmp_path):
    run = write_run(tmp_path / "run", synthetic_rows())
    png, md, summary = write_report(run)
    assert png == run / "report.png" and png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 50_000  # seven panels of lines and areas, not an empty canvas
    text = md.read_text()
    # val acc: 0.20 at step 0; last at step 30 = 0.7 - 0.1; best at step 25: 0.2 + 0.5 * 25/30.
    assert summary["steps"] == 30 and summary["val_acc_start"] == 0.2 and summary["val_acc_end_step"] == 30
    assert summary["val_acc_best_step"] == 25 and summary["val_acc_best"] == pytest.approx(0.2 + 0.5 * 25 / 30)
    assert summary["step_time_mean_s"] == pytest.approx((29 * 32 + 52) / 30)
    assert summary["filtered_ratio_mean"] == pytest.approx(0.2 + 0.4 * 15.5 / 30)
    assert summary["clipfrac_upper_end"] == pytest.approx(0.02)
    assert "| training steps | 30 (30 logged) |" in text
    assert "| val acc: start / end / best | 0.2000 (step 0) / 0.6000 (step 30) / 0.6167 (step 25) |" in text
    assert "| mean step time | 32.67 s |" in text and "![training curves](report.png)" in text


def test_missing_metrics_are_skipped(tmp_path):
    # A vanilla-PPO run without validation or timing: only some panels have data.
    rows = [{"step": s, "reward/all/acc_mean": 0.1 * s, "actor/entropy": 1.0 / s, "actor/pg_clipfrac_lower": 0.0}
            for s in range(1, 6)]
    png, md, summary = write_report(write_run(tmp_path / "run", rows))
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert summary["val_acc_start"] is None and summary["step_time_mean_s"] is None
    text = md.read_text()
    assert "n/a (step" not in text and "| val acc: start / end / best | n/a / n/a / n/a |" in text


def test_only_unknown_metrics_write_markdown_without_plot(tmp_path, capsys):
    run = write_run(tmp_path / "run", [{"step": 1, "custom/thing": 3.0}])
    assert main(["report", str(run)]) == 0
    assert "no known metric logged" in capsys.readouterr().out
    assert not (run / "report.png").exists() and (run / "report.md").is_file()


def test_series_skips_non_finite_and_resumed_repeats_last_wins(tmp_path):
    path = write_run(tmp_path, [{"step": 1, "a": 1.0}, {"step": 2, "a": float("nan")}, {"step": 3, "a": "x"},
                                {"step": 2, "a": 5.0}, {"step": 4, "b": 1.0}]) / "metrics.jsonl"
    assert series(read_metrics(path), "a") == ([1, 2], [1.0, 5.0])


def test_panels_use_metric_names_the_trainer_logs():
    import inspect

    from gspo.algos import gspo_loss, loss_metrics
    from gspo.trainer import actor, dynamic_sampling, generation, producer, trainer, update

    modules = (gspo_loss, loss_metrics, actor, dynamic_sampling, generation, producer, trainer, update)
    logged = "".join(inspect.getsource(m) for m in modules)
    for _, _, metrics, _ in PANELS:
        for name, _ in metrics:
            assert f'"{name}"' in logged, name


@pytest.mark.parametrize("content, expected", [
    (None, "no metrics file"),
    ("", "no metrics logged yet"),
    ('{"step": 1}\n{oops\n', "metrics.jsonl:2: invalid JSON"),
    ('{"loss": 1}\n', "metrics.jsonl:1: expected a JSON object with a numeric 'step'"),
])
def test_bad_run_dir_exits_2(tmp_path, capsys, content, expected):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    assert expected in capsys.readouterr().err


def test_not_a_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "RUN_DIR:" in capsys.readouterr().err


def test_missing_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path / "run", synthetic_rows(3))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert main(["report", str(run)]) == 2  # named input: the line says what to install
    assert "pip install 'gspo[report]'" in capsys.readouterr().err


def test_title_is_the_experiment_name_or_a_distinguishable_folder(tmp_path):
    from gspo.report import run_name

    named = write_run(tmp_path / "a" / "run", synthetic_rows(4, 2))
    (named / "config.yaml").write_text("trainer:\n  experiment_name: gspo-epslow-3e-4\n")
    write_report(named)
    assert (named / "report.md").read_text().startswith("# Run report: gspo-epslow-3e-4")
    plain = write_run(tmp_path / "tiny-gsm8k" / "run", synthetic_rows(4, 2))
    assert run_name(plain) == "tiny-gsm8k/run"
    assert run_name(write_run(tmp_path / "gspo-addition", synthetic_rows(4, 2))) == "gspo-addition"


def test_identical_val_lines_are_drawn_once_with_both_labels():
    from gspo.report import _merge_identical

    same = [("val/acc_mean", "val acc", [0, 5], [0.2, 0.4]), ("val/score_mean", "val score", [0, 5], [0.2, 0.4])]
    assert _merge_identical(same) == [("val/acc_mean", "val acc = val score", [0, 5], [0.2, 0.4])]
    different = [same[0], ("val/score_mean", "val score", [0, 5], [0.2, 0.5])]
    assert _merge_identical(different) == different
