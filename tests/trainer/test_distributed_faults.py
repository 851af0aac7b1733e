"""Launched runs: SIGTERM to a torchrun run (2 gloo ranks on CPU, launched by `gspo train` itself) ends in one line
and exit 143 with a checkpoint; kill -9 of a rank's launcher stops the rank within seconds and frees the folder
(the launcher is a stand-in there: the rank's watchdog only sees its parent die, whoever that parent is)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gspo.trainer.checkpoint import select_checkpoint
from gspo.trainer.run_folder import RunFolderError, acquire_lock, release_lock
from tests.trainer.test_reliability import _base_args


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _wait_for_rows(out: Path, exit_code, rows: int) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and exit_code() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {rows} rows in {metrics}: {exit_code()}")


def test_sigterm_to_a_torchrun_run_ends_in_one_line_and_exit_143(tiny_model_dir, addition_files, parity_reward,
                                                                   tmp_path):
    out = tmp_path / "run"
    args = [*_base_args(tiny_model_dir, addition_files, parity_reward, out), "trainer.n_gpus_per_node=2",
            "trainer.total_training_steps=500", "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=1"]
    proc = subprocess.Popen([sys.executable, "-m", "gspo", "train", *args], stderr=subprocess.PIPE, text=True,
                            env=_env())
    _wait_for_rows(out, proc.poll, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("gspo train")]
    assert len(lines) == 1 and "SIGTERM received: stopped after step" in lines[0], err[-3000:]
    assert json.loads((select_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())["step"] >= 1


# Stands in for torchrun: starts one rank (marked as launched by torchrun) and waits. A process of its own, not a
# fork of the test: a rank forked from a daemonic multiprocessing child may not start its reward workers, and a fork
# after the test process's OpenMP pool ran can deadlock.
LAUNCHER = """
import os, subprocess, sys, time
env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
subprocess.Popen([sys.executable, "-m", "gspo", "train", *sys.argv[1:]], env=env)
time.sleep(600)
"""


def test_ranks_stop_within_seconds_when_their_launcher_is_killed(tiny_model_dir, addition_files, parity_reward,
                                                                 tmp_path):
    out = tmp_path / "run"
    args = [*_base_args(tiny_model_dir, addition_files, parity_reward, out), "trainer.total_training_steps=500"]
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], env=_env())
    _wait_for_rows(out, launcher.poll, 1)
    launcher.kill()
    launcher.wait()
    killed = time.time()
    while time.time() - killed < 15:
        try:
            acquire_lock(out)  # succeeds once the rank is gone (the kernel drops a dead holder's lock)
            break
        except RunFolderError:
            time.sleep(0.1)
    else:
        raise AssertionError("the rank outlived its launcher by 15 s")
    rows = (out / "metrics.jsonl").read_text()
    time.sleep(1)
    assert (out / "metrics.jsonl").read_text() == rows  # nothing written after
    release_lock(out)
