"""Bad input fails before any weights load, with one line naming the key / row and exit 2; a run that cannot make
progress and a signal during start-up end with one line and their documented exit codes, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

import gspo.trainer.builder as builder_module
from gspo.cli import main
from gspo.errors import EXIT_NO_PROGRESS
from tests.conftest import write_jsonl
from tests.trainer.test_reliability import _base_args


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load model weights fails the test: the error must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad input was reported")

    monkeypatch.setattr(builder_module, "load_causal_lm", refuse)


def _err_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "gspo " in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("override, key", [
    ("actor_rollout_ref.actor.optim.lr=inf", "actor_rollout_ref.actor.optim.lr: inf is not a finite number"),
    ("actor_rollout_ref.actor.optim.lr=.nan", "actor_rollout_ref.actor.optim.lr: nan is not a finite number"),
    ("actor_rollout_ref.actor.grad_clip=.inf", "actor_rollout_ref.actor.grad_clip: inf is not a finite number"),
    ("reward_model.timeout_s=-.inf", "reward_model.timeout_s: -inf is not a finite number"),
])
def test_non_finite_config_floats_are_rejected_naming_the_key(tiny_model_dir, addition_files, parity_reward,
                                                              tmp_path, capsys, no_weights, override, key):
    args = _base_args(tiny_model_dir, addition_files, parity_reward, tmp_path / "run")
    assert main(["train", *args, override]) == 2
    assert key in _err_line(capsys)


def test_non_finite_float_from_yaml_is_rejected(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("actor_rollout_ref:\n  actor:\n    clip_ratio_c: .inf\n")
    assert main(["validate", "--config", str(config)]) == 2
    assert "actor_rollout_ref.actor.clip_ratio_c: inf is not a finite number" in _err_line(capsys)


def test_dynamic_sampling_with_one_response_per_prompt_names_both_keys(tiny_model_dir, addition_files, parity_reward,
                                                                       tmp_path, capsys):
    args = _base_args(tiny_model_dir, addition_files, parity_reward, tmp_path / "run")
    assert main(["train", *args, "actor_rollout_ref.rollout.n=1"]) == 2
    line = _err_line(capsys)
    assert "algorithm.filter_groups.enable" in line and "actor_rollout_ref.rollout.n >= 2 (now 1)" in line


def _with_one_row_lacking_ground_truth(folder: Path) -> Path:
    rows = [{"prompt": f"{a}+{b}=", "ground_truth": str(a + b), "data_source": "addition"}
            for a in range(10) for b in range(10)][:64]
    del rows[37]["ground_truth"]
    return write_jsonl(folder / "train.jsonl", rows)


def test_builtin_reward_row_without_ground_truth_fails_before_weights_load(
        tiny_model_dir, addition_files, parity_reward, tmp_path, capsys, no_weights):
    train = _with_one_row_lacking_ground_truth(tmp_path)
    args = [a for a in _base_args(tiny_model_dir, addition_files, parity_reward, tmp_path / "run")
            if not a.startswith("custom_reward_function")]
    assert main(["train", *args, f"data.train_files=[{train}]"]) == 2
    line = _err_line(capsys)
    assert "data.train_files: row 37 (data_source='addition')" in line and "no ground truth" in line


def test_custom_reward_with_some_rows_lacking_ground_truth_fails(tiny_model_dir, addition_files, parity_reward,
                                                                 tmp_path, capsys, no_weights):
    train = _with_one_row_lacking_ground_truth(tmp_path)
    args = _base_args(tiny_model_dir, addition_files, parity_reward, tmp_path / "run")
    assert main(["train", *args, f"data.train_files=[{train}]"]) == 2
    assert "row 37" in _err_line(capsys)


def test_dynamic_sampling_cap_ends_in_one_line_and_exit_3(tiny_model_dir, addition_files, tmp_path, capsys):
    never = tmp_path / "never.py"
    never.write_text("def compute_score(response_text, ground_truth, extra_info):\n    return 0.0\n")
    args = _base_args(tiny_model_dir, addition_files, never, tmp_path / "run")
    assert main(["train", *args, "trainer.total_training_steps=1",
                 "algorithm.filter_groups.max_num_gen_batches=1"]) == EXIT_NO_PROGRESS
    line = _err_line(capsys)
    assert "dynamic sampling kept 0 of 8 prompt groups in 1 generation batches" in line


def _train(args: list[str]) -> None:
    os._exit(main(["train", *args]))


def test_sigterm_during_start_up_ends_in_one_line_and_exit_143(tiny_model_dir, addition_files, tmp_path, capfd):
    ready = tmp_path / "importing"
    slow = tmp_path / "slow_reward.py"  # imported while the trainer starts: a start-up that takes a while
    slow.write_text(f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(120)\n"
                    "def compute_score(response_text, ground_truth, extra_info):\n    return 0.0\n")
    args = _base_args(tiny_model_dir, addition_files, slow, tmp_path / "run")
    # Forked (an own process, as `gspo train` is; without paying the interpreter start-up again).
    proc = multiprocessing.get_context("fork").Process(target=_train, args=(args,), daemon=True)
    proc.start()
    deadline = time.time() + 120
    while not ready.exists() and time.time() < deadline and proc.is_alive():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(60)
    err = capfd.readouterr().err
    assert proc.exitcode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("gspo train: stopped: SIGTERM received outside a training step (start-up "
                                            "or final export): nothing more was trained or written; run the same "
                                            "command again to continue")
