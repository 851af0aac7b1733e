"""A rollout pool (actor_rollout_ref.rollout.mode=async): one trainer rank and one rollout rank under torchrun
(gloo, 1 thread each), on the tiny model, 3 steps with dynamic sampling, validation and a checkpoint each step.

- k = 0 is on-policy: parameters and every metric but wall-clock ones equal a mode=sync run's, bit for bit.
- k = 1 and 2: a delay injected on either side (the rollout generating slowly, the trainer taking batches slowly)
  changes nothing, bit for bit: each batch is produced by exactly the policy version the schedule names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gspo.trainer.async_rollout import DELAY_ENV
from tests.trainer.test_distributed import parity_args

ASYNC = ["actor_rollout_ref.rollout.mode=async", "actor_rollout_ref.rollout.n_gpus_per_node=1"]
WALL_CLOCK = ("timing/", "perf/", "async/trainer_wait_s", "async/rollout_wait_s")


def run_args(tiny_model_dir, addition_files, parity_reward, out: Path, steps: int = 3) -> list[str]:
    """The data-parallel parity runs' command line, validating every 2 steps."""
    return parity_args(tiny_model_dir, addition_files, parity_reward, out, steps, test_freq=2)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", DELAY_ENV)}
    return {**env, "OMP_NUM_THREADS": "1", "GSPO_NUM_THREADS": "1", **extra}


def train(args: list[str], *, ranks: int = 1, **env: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] \
        if ranks > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "gspo.train", *args], capture_output=True, text=True, timeout=600,
                          env=_env(**env))


def train_checked(args: list[str], **kwargs) -> None:
    proc = train(args, **kwargs)
    assert proc.returncode == 0, proc.stderr[-4000:]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)}


def assert_same_run(a: Path, b: Path, *, only_common_keys: bool = False) -> None:
    one, two = load_file(a / "final_model" / "model.safetensors"), load_file(b / "final_model" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name], two[name]), name
    rows_a, rows_b = rows(a), rows(b)
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b, strict=True):
        x, y = comparable(x), comparable(y)
        if only_common_keys:
            assert set(y) - set(x) <= {"async/staleness_mean", "async/staleness_max"}, set(y) ^ set(x)
            y = {k: v for k, v in y.items() if k in x}
        assert x == y


@pytest.fixture(scope="module")
def args(tiny_model_dir, addition_files, parity_reward):
    return lambda out, *extra: [*run_args(tiny_model_dir, addition_files, parity_reward, out), *extra]


def test_async_k0_equals_sync(args, tmp_path):
    sync, pooled = tmp_path / "sync", tmp_path / "async"
    train_checked(args(sync))
    train_checked(args(pooled, *ASYNC, "async_training.staleness_threshold=0"), ranks=2)
    assert_same_run(sync, pooled, only_common_keys=True)
    trained = [r for r in rows(pooled) if r["step"] > 0]
    assert all(r["async/staleness_max"] == 0 for r in trained)
    assert all("timing/weight_sync" in r for r in trained[:-1])  # the last version is used by no batch


def test_async_k0_with_lora_equals_sync(args, tmp_path):
    """LoRA beside a rollout pool: both pools load the frozen base, only the adapters are published."""
    lora = ["actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8",
            "trainer.total_training_steps=2"]
    sync, pooled = tmp_path / "sync", tmp_path / "async"
    train_checked(args(sync, *lora))
    train_checked(args(pooled, *lora, *ASYNC, "async_training.staleness_threshold=0"), ranks=2)
    assert_same_run(sync, pooled, only_common_keys=True)
    assert all("timing/weight_sync" in r for r in rows(pooled) if r["step"] == 1)


@pytest.fixture(scope="module")
def slow_rollout(args, tmp_path_factory) -> Path:
    """k = 1, 3 steps, the rollout rank sleeping 0.3 s before each batch (the trainer waits for it)."""
    out = tmp_path_factory.mktemp("async") / "slow_rollout"
    train_checked(args(out, *ASYNC), ranks=2, **{DELAY_ENV: "rollout=0.3"})
    return out


def test_async_k1_does_not_depend_on_timing(args, tmp_path, slow_rollout):
    slow_trainer = tmp_path / "slow_trainer"  # the rollout rank waits for the trainer instead
    train_checked(args(slow_trainer, *ASYNC), ranks=2, **{DELAY_ENV: "trainer=0.3"})
    assert_same_run(slow_rollout, slow_trainer)
    trained = [r for r in rows(slow_rollout) if r["step"] > 0]
    assert [r["async/staleness_max"] for r in trained] == [0, 1, 1]  # step 0 is generated by version 0 = max(0, -1)
    # Stale rows are trained with the decoupled objective and its weight statistics logged; step 0's are not.
    assert "async/behav_weight_mean" not in trained[0]
    assert all(r["async/stale_rows_frac"] == 1.0 and 0 < r["async/behav_weight_mean"] <= 2.0 for r in trained[1:])
    assert all(r["async/trainer_wait_s"] >= 0 and r["async/rollout_wait_s"] >= 0 for r in trained)


def test_async_k2_does_not_depend_on_timing(args, tmp_path):
    k2 = [*ASYNC, "async_training.staleness_threshold=2", "trainer.total_training_steps=4"]
    slow_rollout, slow_trainer = tmp_path / "slow_rollout", tmp_path / "slow_trainer"
    train_checked(args(slow_rollout, *k2), ranks=2, **{DELAY_ENV: "rollout=0.3"})
    train_checked(args(slow_trainer, *k2), ranks=2, **{DELAY_ENV: "trainer=0.3"})
    assert_same_run(slow_rollout, slow_trainer)
    assert [r["async/staleness_max"] for r in rows(slow_rollout) if r["step"] > 0] == [0, 1, 2, 2]


def test_two_trainer_ranks_shard_over_their_own_group(args, tmp_path):
    """Trainer ranks 0 and 1 (FSDP2 over a sub-group of the two, the KL reference sharded beside the policy),
    rollout rank 2: it trains and checkpoints one shard per trainer rank; the rollout rank writes nothing to the
    run folder."""
    out = tmp_path / "pools"
    train_checked(args(out, *ASYNC, "trainer.n_gpus_per_node=2", "trainer.total_training_steps=2",
                       "actor_rollout_ref.actor.use_kl_loss=true"), ranks=3)
    checkpoint = out / "checkpoints" / "global_step_2"
    assert len(list((checkpoint / "state").glob("*.distcp"))) == 2
    assert sorted(p.name for p in (checkpoint / "rng").iterdir()) == ["rank_0.pt", "rank_1.pt"]
    assert [r["async/staleness_max"] for r in rows(out) if r["step"] > 0] == [0, 1]
    assert all(r["actor/kl_loss"] >= 0 for r in rows(out) if r["step"] > 0)


def test_a_run_killed_with_batches_in_flight_resumes_exactly(args, tmp_path, slow_rollout):
    """k = 1, 3 steps: the trainer rank dies (like kill -9) after step 2's row, before its checkpoint; the same
    command resumes from step 1's checkpoint, which holds step 2's batch (generated by version 0) and the rollout
    side's sampler and dynamic-sampling state after it. Parameters and rows equal an uninterrupted run's."""
    killed = tmp_path / "killed"
    crashed = train(args(killed, *ASYNC), ranks=2, GSPO_CRASH_AT="after_row:2")
    assert crashed.returncode != 0
    state = json.loads((killed / "checkpoints" / "global_step_1" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["async_queue"]] == [1]  # the batch of the second step (0-based 1)
    assert "sampler" in state and "dynamic_sampling" in state
    train_checked(args(killed, *ASYNC), ranks=2)
    assert_same_run(slow_rollout, killed)


FAILING_REWARD = "def compute_score(response_text, ground_truth, extra_info):\n    raise ValueError('no score today')\n"


def _gspo_train(args: list[str], **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """`gspo train` (which launches torchrun itself), its result and wall time."""
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gspo", "train", *args], capture_output=True, text=True, timeout=300,
                          env=_env(**env))
    return proc, time.perf_counter() - start


def _leftovers(marker: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if str(marker) in line]


def test_an_error_on_the_rollout_rank_stops_the_trainer_with_it_in_one_line(args, tmp_path):
    reward = tmp_path / "failing.py"
    reward.write_text(FAILING_REWARD)
    out = tmp_path / "run"
    proc, _ = _gspo_train(args(out, *ASYNC, f"custom_reward_function.path={reward}",
                               "trainer.val_before_train=false"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gspo train: error:")]
    assert len(lines) == 1 and "rollout rank 1" in lines[0] and "no score today" in lines[0], proc.stderr[-3000:]
    assert _leftovers(out) == []


@pytest.mark.parametrize("crash", ["rollout_batch:1", "after_row:1"])
def test_a_dead_rank_stops_the_other_pool_in_bounded_time_without_orphans(args, tmp_path, crash):
    """A rollout rank killed while it generates, or the trainer rank killed after a step: the other side stops
    (its connection closes; torchrun stops the rest), no process of the run is left."""
    out = tmp_path / "run"
    proc, seconds = _gspo_train(args(out, *ASYNC, "trainer.total_training_steps=6"), GSPO_CRASH_AT=crash)
    assert proc.returncode != 0
    assert seconds < 90, seconds
    assert _leftovers(out) == []
    if crash.startswith("rollout"):  # the trainer names the rank, unless torchrun's stop reached it first
        assert "rollout rank 1 stopped without a message" in proc.stderr or "SIGTERM" in proc.stderr, proc.stderr


def test_two_node_groups_on_localhost(args, tmp_path):
    """The same `gspo train` line on two "nodes" (NODE_RANK 0 trains, NODE_RANK 1 generates), joined through
    torchrun's rendezvous on localhost, trains as the one-node launch does."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "nodes"
    command = [sys.executable, "-m", "gspo", "train", *args(out, *ASYNC, "trainer.total_training_steps=2")]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank)))
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    trained = [r for r in rows(out) if r["step"] > 0]
    assert [r["async/staleness_max"] for r in trained] == [0, 1]
    assert (out / "final_model" / "model.safetensors").is_file()


def test_a_stop_signal_checkpoints_with_the_batches_in_flight_and_resumes(args, tmp_path):
    """SIGTERM to `gspo train` mid-run: the trainer finishes its step and checkpoints (taking the queued batch
    from the rollout rank, which leaves stopping to the trainer), exits 143 with one line; the same command then
    completes the run."""
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "gspo", "train",
               *args(out, *ASYNC, "trainer.total_training_steps=12", "trainer.save_freq=-1", "trainer.test_freq=-1")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("gspo train:")][0].startswith(
        "gspo train: stopped: SIGTERM received"), stderr[-3000:]
    step = int((out / "checkpoints" / "latest").read_text().strip().rsplit("_", 1)[-1])
    queued = json.loads((out / "checkpoints" / f"global_step_{step}" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in queued["async_queue"]] == [step]
    assert _leftovers(out) == []
    train_checked(command[4:], ranks=2)  # the same arguments, through torchrun as in the other tests
    assert [r["step"] for r in rows(out)] == list(range(13))
