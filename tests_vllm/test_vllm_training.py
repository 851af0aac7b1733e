"""`gspo train actor_rollout_ref.rollout.name=vllm` on the embedded default, then `gspo eval engine=vllm`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gspo.tasks.addition import ADDITION_ASSET_DIR


def _gspo(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "gspo", *args], capture_output=True, text=True, timeout=timeout,
                            env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    """The embedded default (150 steps) with the vllm engine; its run folder."""
    run_dir = tmp_path_factory.mktemp("vllm_run")
    _gspo("train", "actor_rollout_ref.rollout.name=vllm", f"trainer.default_local_dir={run_dir}", "trainer.logger=[]",
          timeout=1500)
    return run_dir


def test_train_with_vllm_gains_20_points_and_logs_the_mismatch(vllm_run):
    rows = [json.loads(line) for line in (vllm_run / "metrics.jsonl").read_text().splitlines()]
    curve = [row["val/acc_mean"] for row in rows if "val/acc_mean" in row]
    assert curve[-1] - curve[0] >= 0.20, curve
    steps = [row for row in rows if row["step"] > 0]
    assert len(steps) == 150
    # vLLM's log-probs never stand in for the old policy's: recomputed, and the mismatch logged every step.
    assert all("timing/old_log_prob" in row and "training/rollout_probs_diff_mean" in row for row in steps)
    assert max(row["training/rollout_probs_diff_max"] for row in steps) < 1e-3  # fp32 on both sides
    assert (vllm_run / "final_model" / "model.safetensors").is_file()


def test_eval_with_vllm_matches_the_hf_engine(vllm_run, tmp_path):
    data = str(ADDITION_ASSET_DIR / "val.jsonl")
    summaries = {}
    for engine in ("vllm", "hf"):
        out = tmp_path / engine
        _gspo("eval", "--model", str(vllm_run / "final_model"), "--data", data, f"engine={engine}",
              "max_response_length=6", "max_prompt_length=16", "batch_size=64", f"output_dir={out}", timeout=900)
        summaries[engine] = json.loads((out / "summary.json").read_text())
    assert summaries["vllm"]["num_prompts"] == summaries["hf"]["num_prompts"] > 0
    assert summaries["vllm"]["pass@1"] == summaries["hf"]["pass@1"]  # greedy: the same tokens
    assert summaries["vllm"]["pass@1"] >= 0.5


def test_sampled_eval_with_vllm(vllm_run, tmp_path):
    _gspo("eval", "--model", str(vllm_run / "final_model"), "--data", str(ADDITION_ASSET_DIR / "val.jsonl"),
          "engine=vllm", "n=4", "temperature=1.0", "limit=32", "max_response_length=6", "max_prompt_length=16",
          f"output_dir={tmp_path}", timeout=900)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_prompts"] == 32 and summary["n"] == 4 and "pass@4" in summary


def test_a_rollout_pool_with_vllm_gains_20_points_one_version_behind(tmp_path):
    """mode=async, k = 1: trainer rank 0 and rollout rank 1, each vLLM engine in a process of its own (vLLM cannot
    join the pools' torchrun world), weights published after every update and pushed into the rollout rank's
    engine between batches."""
    engines_before = _engine_processes()
    _gspo("train", "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.mode=async",
          "actor_rollout_ref.rollout.n_gpus_per_node=1", "async_training.staleness_threshold=1",
          "trainer.cpu_threads=1", f"trainer.default_local_dir={tmp_path}", "trainer.logger=[]", timeout=1500)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [row["val/acc_mean"] for row in rows if "val/acc_mean" in row]
    assert curve[-1] - curve[0] >= 0.20, curve
    steps = [row for row in rows if row["step"] > 0]
    assert len(steps) == 150
    assert [row["async/staleness_max"] for row in steps] == [0] + [1] * 149
    assert all("timing/weight_sync" in row for row in steps[:-2])  # the last version is used by no batch
    assert all(0 < row["async/behav_weight_mean"] <= 2 for row in steps[1:])
    assert _engine_processes() <= engines_before  # no engine process outlives the run


def test_a_killed_rank_of_a_rollout_pool_leaves_no_engine_process(tmp_path):
    """The rollout rank dies like kill -9: the run stops with one line naming it, and neither rank's vLLM engine
    core (a process of its own) outlives the run. (The watcher itself: tests/rollout/test_process_guard.py.)"""
    crash = "rollout_batch:2"
    engines_before = _engine_processes()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1", "GSPO_CRASH_AT": crash}
    proc = subprocess.run([sys.executable, "-m", "gspo", "train", "actor_rollout_ref.rollout.name=vllm",
                           "actor_rollout_ref.rollout.mode=async", "actor_rollout_ref.rollout.n_gpus_per_node=1",
                           "trainer.total_training_steps=6", "trainer.val_before_train=false", "trainer.cpu_threads=1",
                           f"trainer.default_local_dir={tmp_path}", "trainer.logger=[]"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gspo train: error:")]
    # one line naming the rollout side ("rollout rank 1", or "the rollout pool" when a weight broadcast noticed first)
    assert len(errors) == 1 and "rollout" in errors[0] and "stopped without a message" in errors[0], \
        proc.stderr[-3000:]
    deadline = time.monotonic() + 10
    while _engine_processes() - engines_before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _engine_processes() <= engines_before


def _engine_processes() -> set[str]:
    """pid and title of every vLLM engine-core process (vLLM names them VLLM::EngineCore)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {line.strip() for line in ps.splitlines() if "EngineCore" in line}


def test_two_gloo_ranks_each_drive_their_own_engine(tmp_path):
    # torchrun on CPU: every rank builds its own in-process vLLM (external_launcher executor) for its prompts.
    _gspo("train", "actor_rollout_ref.rollout.name=vllm", "trainer.n_gpus_per_node=2", "trainer.total_training_steps=2",
          "trainer.test_freq=2", f"trainer.default_local_dir={tmp_path}", "trainer.logger=[]", timeout=900)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2]
    # Greedy validation before training: the same tokens as one process (and as the hf engine) give 0.326.
    assert rows[0]["val/acc_mean"] == pytest.approx(0.326171875)
    assert all("training/rollout_probs_diff_mean" in row for row in rows[1:])
    assert (tmp_path / "final_model" / "model.safetensors").is_file()
