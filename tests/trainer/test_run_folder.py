"""Fault injection on the run folder: kill at each commit point, one writer per folder, no resume of another run.

Crashing runs are forked from the test process (``os._exit`` at a named point through ``GSPO_CRASH_AT``: no
cleanup, no flush, as ``kill -9``); resumes run in-process through the CLI entry point, so exit codes and the
one-line messages are what a user sees.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gspo.cli import main
from gspo.trainer.run_folder import CRASH_EXIT_CODE, LOCK_FILE, RunFolderError, acquire_lock, release_lock
from tests.trainer.test_reliability import _base_args

VOLATILE = ("timing/", "perf/")  # wall-clock metrics: the only ones allowed to differ after a resume


def _args(tiny_model_dir, addition_files, parity_reward, out: Path, *extra: str) -> list[str]:
    return [*_base_args(tiny_model_dir, addition_files, parity_reward, out), "trainer.total_training_steps=3",
            "trainer.save_freq=1", "trainer.val_before_train=true", "trainer.max_actor_ckpt_to_keep=2", *extra]


def _forked(target, *args) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def _train_and_crash(args: list[str], crash_at: str) -> subprocess.CompletedProcess:
    """``gspo train`` in a process of its own that dies at ``crash_at``. Not forked from this one: a fork of a
    process whose OpenMP pool has run (the reference run above) can deadlock in the child's first parallel op."""
    return subprocess.run([sys.executable, "-m", "gspo.cli", "train", *args], capture_output=True, text=True,
                          env={**os.environ, "GSPO_CRASH_AT": crash_at}, timeout=600)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE)}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, addition_files, parity_reward, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *_args(tiny_model_dir, addition_files, parity_reward, out)]) == 0
    return _rows(out), load_file(out / "final_model" / "model.safetensors")


@pytest.mark.parametrize("crash_at", ["after_validation:0", "after_row:2", "after_rename:2", "after_latest:2",
                                      "during_export"])
def test_kill_at_each_commit_point_then_resume_logs_each_step_once(
        crash_at, reference, tiny_model_dir, addition_files, parity_reward, tmp_path):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, addition_files, parity_reward, out)
    crashed = _train_and_crash(args, crash_at)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert main(["train", *args]) == 0  # the same command resumes
    rows, weights = reference
    assert [r["step"] for r in _rows(out)] == [0, 1, 2, 3]
    assert [_stable(r) for r in _rows(out)] == [_stable(r) for r in rows]
    resumed = load_file(out / "final_model" / "model.safetensors")
    assert all(torch.equal(resumed[name], value) for name, value in weights.items())
    assert not any(p.name.startswith(".tmp_") for p in (out / "checkpoints").iterdir())


def test_torn_last_metrics_line_is_repaired(tmp_path, caplog):
    from gspo.trainer.metrics import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "x": 1}\n{"step": 1, "x": 2}\n{"step": 2, "x"')
    with caplog.at_level(logging.WARNING):
        MetricsLogger(tmp_path, [], resume_step=2).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1]
    assert "metrics.jsonl:3: dropping an unreadable row" in caplog.text


def _hold_lock(folder: Path, ready) -> None:
    acquire_lock(folder)
    ready.set()
    time.sleep(300)


def test_second_run_on_a_folder_exits_2_naming_it_and_the_holder_then_takes_over_a_dead_holders_lock(
        tiny_model_dir, addition_files, parity_reward, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    out.mkdir()
    ready = multiprocessing.get_context("fork").Event()
    holder = _forked(_hold_lock, out, ready)
    assert ready.wait(60)
    args = _args(tiny_model_dir, addition_files, parity_reward, out, "trainer.total_training_steps=1")
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert f"{out} is in use by another gspo train (pid {holder.pid}" in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()  # nothing written by the refused run
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    with caplog.at_level(logging.WARNING):
        assert main(["train", *args]) == 0
    assert f"took over the lock of {out} left by pid {holder.pid}" in caplog.text
    assert (out / LOCK_FILE).read_text() == ""  # released at the end


def _try_lock(folder: Path) -> None:
    try:
        acquire_lock(folder)
    except RunFolderError:
        os._exit(2)
    os._exit(0)


def test_lock_is_per_folder_and_reentrant_in_one_process(tmp_path):
    (tmp_path / "other").mkdir()
    acquire_lock(tmp_path)
    try:
        acquire_lock(tmp_path)  # a second Trainer of this process on the same folder
        refused, unrelated = _forked(_try_lock, tmp_path), _forked(_try_lock, tmp_path / "other")
        refused.join(60), unrelated.join(60)
        assert (refused.exitcode, unrelated.exitcode) == (2, 0)
    finally:
        release_lock(tmp_path)
    allowed = _forked(_try_lock, tmp_path)
    allowed.join(60)
    assert allowed.exitcode == 0


def test_resume_with_different_training_keys_exits_2_listing_them_and_the_ways_out(
        tiny_model_dir, addition_files, parity_reward, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, addition_files, parity_reward, out, "trainer.total_training_steps=1")
    assert main(["train", *args]) == 0
    capsys.readouterr()
    changed = [*args, "trainer.total_training_steps=2", "actor_rollout_ref.actor.optim.lr=0.002", "trainer.seed=7"]
    # gspo validate says what gspo train would do with the folder: resume the same run, refuse a different one.
    assert main(["validate", *args, "trainer.total_training_steps=2"]) == 0
    assert f"resumes from {out / 'checkpoints' / 'global_step_1'}" in capsys.readouterr().out
    assert main(["validate", *changed]) == 2
    assert "actor_rollout_ref.actor.optim.lr: 0.0001 in the checkpoint, 0.002 now" in capsys.readouterr().err
    assert main(["train", *changed]) == 2
    err = capsys.readouterr().err
    assert "actor_rollout_ref.actor.optim.lr: 0.0001 in the checkpoint, 0.002 now" in err
    assert "trainer.seed: 1 in the checkpoint, 7 now" in err
    assert "new trainer.default_local_dir" in err and "trainer.resume_mode=disable" in err
    assert (out / "config.yaml").read_text().count("lr: 0.0001") == 1  # the folder's record is untouched
    # Scheduling / logging / retention keys may change: the run continues to step 2.
    with caplog.at_level(logging.INFO):
        assert main(["train", *args, "trainer.total_training_steps=2", "trainer.save_freq=2",
                     "trainer.max_actor_ckpt_to_keep=3"]) == 0
    assert "trainer.save_freq: 1 -> 2" in caplog.text
    assert [r["step"] for r in _rows(out)] == [0, 1, 2]
    # The same command again on the finished run: already complete, exit 0 (a scheduler's retry succeeds).
    assert main(["train", *args, "trainer.total_training_steps=2"]) == 0
    assert "gspo train: already complete:" in capsys.readouterr().out
    assert main(["validate", *args, "trainer.total_training_steps=2"]) == 0
    assert "gspo validate: already complete:" in capsys.readouterr().out
    # total_training_steps below the checkpoint's step: nothing to train, and the line says what to do.
    assert main(["train", *args, "trainer.total_training_steps=1"]) == 2
    assert "at or below the step of the checkpoint" in capsys.readouterr().err
    # The second way out: start over in the same folder, the previous run set aside whole.
    assert main(["train", *changed, "trainer.resume_mode=disable"]) == 0
    assert [r["step"] for r in _rows(out)] == [0, 1, 2]
    assert [r["step"] for r in _rows(out / "previous_runs" / "1")] == [0, 1, 2]
