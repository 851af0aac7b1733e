"""The trainer and its reward workers: a stop signal ends a wait on hung rewards within seconds (the step is
abandoned, the one-line "stopped" exit); the math-verify worker settings are config keys, recorded in config.yaml."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from gspo.config import ConfigError, load_config
from gspo.rewards.math import pool as math_pool
from gspo.trainer import Trainer
from gspo.trainer.signals import STOP_GRACE_S, StepAbandoned, StopRequest
from tests.presets import PRESET_ARGS


def test_a_stop_ends_a_reward_wait_only_after_the_grace_period():
    with StopRequest() as stop:
        wait_started = time.monotonic()
        stop.check_during_wait(wait_started)  # no signal: nothing happens
        os.kill(os.getpid(), signal.SIGTERM)
        stop.check_during_wait(wait_started)  # rewards that finish within the grace let the step finish
        time.sleep(STOP_GRACE_S)
        with pytest.raises(StepAbandoned, match="SIGTERM received while a step waited for rewards") as info:
            stop.check_during_wait(wait_started)
    assert info.value.exit_code == 128 + signal.SIGTERM


def test_sigterm_while_rewards_hang_stops_the_run_within_seconds(tiny_model_dir, addition_files, tmp_path):
    called = tmp_path / "reward_called"
    reward = tmp_path / "hangs.py"
    reward.write_text("import pathlib, time\n"
                      "def compute_score(response_text, ground_truth, extra_info):\n"
                      f"    pathlib.Path({str(called)!r}).touch()\n"
                      "    time.sleep(3600)\n")
    train, val = addition_files
    args = [*PRESET_ARGS, f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"data.val_files=[{val}]", f"custom_reward_function.path={reward}",
            f"trainer.default_local_dir={tmp_path / 'run'}", "data.train_batch_size=4", "data.gen_batch_size=8",
            "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "data.max_response_length=4", "trainer.val_before_train=false", "trainer.test_freq=-1",
            "trainer.logger=[]", "trainer.device=cpu", "reward_model.timeout_s=600"]
    proc = subprocess.Popen([sys.executable, "-m", "gspo", "train", *args], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not called.exists() and proc.poll() is None:
            time.sleep(0.1)
        assert called.exists(), proc.stderr.read()[-2000:] if proc.poll() is not None else "no reward call"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        elapsed = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert any(line.startswith("gspo train: stopped: SIGTERM received while a step waited for rewards")
               for line in stderr.split("\n")), stderr[-2000:]
    assert elapsed < 15, elapsed  # the grace (1 s) and a poll, then the interpreter's exit; never the 600 s limit


def test_math_worker_settings_are_recorded_in_config_yaml_and_size_the_pool(make_config, tmp_path):
    old = math_pool.set_shared_pool(None)
    try:
        Trainer(make_config("reward_model.math_workers=3", "reward_model.math_timeout_s=2.5",
                            "trainer.total_training_steps=1")).fit()
        recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["reward_model"]
        assert (recorded["math_workers"], recorded["math_timeout_s"]) == (3, 2.5)
        assert math_pool._shared_sizes == (3, 2.5)
    finally:
        math_pool.configure_shared_pool()
        math_pool.set_shared_pool(old)


@pytest.mark.parametrize(("override", "message"), [
    ("reward_model.math_workers=-1", "reward_model.math_workers: -1 must be >= 0"),
    ("reward_model.math_timeout_s=0", "reward_model.math_timeout_s: 0.0 must be > 0"),
])
def test_bad_math_worker_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
