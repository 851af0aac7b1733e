"""Data parallelism on CPU: 2 gloo ranks under torchrun vs 1 process, same config and seed.

Sampling is seeded per response (see gspo.rollout.seeded), so both runs generate the same responses, keep the
same groups and take the same optimizer steps; parameters then agree to float32 reduction-order noise. Tolerance:
1e-5 absolute on every parameter after two AdamW steps at lr 1e-2 (measured differences are ~2e-6).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gspo.cli import torchrun_command
from gspo.config import ConfigError, load_config
from tests.presets import PRESET_ARGS

WORKER = Path(__file__).with_name("dist_worker.py")
ATOL = 1e-5
# Keys' bias shifts every attention logit of a query by the same amount, so softmax makes its gradient exactly
# zero in math; in float it is rounding noise, which AdamW's normalisation turns into lr-sized random steps. Its
# value is not reproducible across reduction orders (nor meaningful), so it is left out of the comparison.
UNIDENTIFIABLE = "self_attn.k_proj.bias"


def parity_args(tiny_model_dir, addition_files, parity_reward, out: Path, steps: int,
                test_freq: int | None = None) -> list[str]:
    """The parity runs' command line; validation after the last step unless ``test_freq`` says otherwise."""
    train, val = addition_files
    return [*PRESET_ARGS, f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"data.val_files=[{val}]",
            f"custom_reward_function.path={parity_reward}", f"trainer.default_local_dir={out}",
            # 6 prompts per generation batch for 4 trained: dynamic sampling filters and trims; 2 mini-batches
            # per step, so the second is off-policy and the clip acts.
            "data.train_batch_size=4", "data.gen_batch_size=6", "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.2",
            "actor_rollout_ref.actor.optim.lr=0.01", "data.max_response_length=4",
            f"trainer.total_training_steps={steps}", "trainer.save_freq=1", "trainer.max_actor_ckpt_to_keep=0",
            f"trainer.test_freq={test_freq or steps}", "trainer.logger=[]", "trainer.device=cpu"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}  # two processes on two cores: no spinning OpenMP threads


def run_checked(command: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def torchrun_prefix(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _comparable(weights: dict[str, torch.Tensor]) -> list[str]:
    names = [name for name in weights if not name.endswith(UNIDENTIFIABLE)]
    assert len(names) >= len(weights) - 2  # one per layer of the 2-layer test model
    return names


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, addition_files, parity_reward):
    """A 3-step single-process run, and a 2-step run on 2 ranks resumed on 1 rank for step 3."""
    root = tmp_path_factory.mktemp("distributed")
    single, pair = root / "single", root / "pair"
    # One validation prompt for two ranks: rank 1 has nothing to generate right after an update (it must still
    # take part in the all-gather of the policy the hf engine generates with).
    one_prompt = root / "val1.jsonl"
    one_prompt.write_text(addition_files[1].read_text().splitlines()[0] + "\n")

    def args(out: Path, steps: int) -> list[str]:
        return [*parity_args(tiny_model_dir, addition_files, parity_reward, out, steps),
                f"data.val_files=[{one_prompt}]"]

    run_checked([sys.executable, str(WORKER), str(root / "single.json"), *args(single, 3)])
    run_checked([*torchrun_prefix(2), str(WORKER), str(root / "pair.json"), *args(pair, 2)])
    shutil.copytree(pair, root / "resumed")
    run_checked([sys.executable, str(WORKER), str(root / "resumed.json"), *args(root / "resumed", 3)])
    kept = {name: json.loads((root / f"{name}.json").read_text()) for name in ("single", "pair", "resumed")}
    return root, kept


def test_two_ranks_keep_the_same_groups_as_one(runs):
    _, kept = runs
    assert kept["pair"]["world_size"] == 2 and kept["single"]["world_size"] == 1
    assert kept["pair"]["kept"] == kept["single"]["kept"][:2]
    assert all(len(step) == 4 * 4 for step in kept["pair"]["kept"])  # exactly train_batch_size groups x n
    assert "val/acc_mean" in _metrics(runs[0] / "pair")[-1]  # validation with an idle rank did not hang
    # Dynamic sampling did act: the first generation batch of 6 prompts had all-equal groups or a surplus to trim.
    metrics = _metrics(runs[0] / "pair")
    assert [m["train/kept_prompts"] for m in metrics if m["step"] > 0] == \
        [m["train/kept_prompts"] for m in _metrics(runs[0] / "single") if 0 < m["step"] <= 2]


def test_two_ranks_take_the_same_optimizer_steps_as_one(runs):
    root, _ = runs
    for step in (1, 2):
        one = _weights(root / "single" / "checkpoints" / f"global_step_{step}" / "model")
        two = _weights(root / "pair" / "checkpoints" / f"global_step_{step}" / "model")
        assert one.keys() == two.keys()
        for name in _comparable(one):
            torch.testing.assert_close(two[name], one[name], rtol=0, atol=ATOL, msg=f"step {step}: {name}")
    single = {m["step"]: m for m in _metrics(root / "single")}
    for m in _metrics(root / "pair"):
        for name in ("actor/pg_loss", "actor/grad_norm", "actor/pg_clipfrac", "actor/seq_importance_ratio",
                     "reward/kept/score_mean", "reward/all/score_mean", "val/acc_mean"):
            if name in m and name in single[m["step"]]:  # validation runs at each run's last step only
                assert m[name] == pytest.approx(single[m["step"]][name], abs=ATOL), (m["step"], name)


def test_checkpoint_of_two_ranks_is_sharded_and_resumes_on_one_rank(runs):
    root, kept = runs
    checkpoint = root / "pair" / "checkpoints" / "global_step_2"
    assert sorted(p.name for p in (checkpoint / "rng").iterdir()) == ["rank_0.pt", "rank_1.pt"]
    assert len(list((checkpoint / "state").glob("*.distcp"))) == 2  # one shard file per rank
    assert json.loads((checkpoint / "trainer_state.json").read_text())["world_size"] == 2
    # Step 3 on one rank after two steps on two ranks = step 3 of the uninterrupted single-process run.
    assert kept["resumed"]["kept"] == kept["single"]["kept"][2:]
    one = _weights(root / "single" / "final_model")
    resumed = _weights(root / "resumed" / "final_model")
    for name in _comparable(one):
        torch.testing.assert_close(resumed[name], one[name], rtol=0, atol=ATOL, msg=name)


def test_gspo_train_launches_torchrun_from_n_gpus_per_node(tiny_model_dir, addition_files, parity_reward, tmp_path):
    out = tmp_path / "run"
    args = parity_args(tiny_model_dir, addition_files, parity_reward, out, steps=1) + ["trainer.n_gpus_per_node=2"]
    proc = run_checked([sys.executable, "-m", "gspo", "train", *args])
    # Named once, by rank 0 of the relaunch (not by the launcher, not by rank 1), before anything else it prints.
    assert proc.stdout.count("preset: addition") == 1 and proc.stdout.startswith("preset: addition"), proc.stdout
    assert (out / "checkpoints" / "global_step_1" / "rng" / "rank_1.pt").is_file()
    assert [m["step"] for m in _metrics(out)] == [0, 1]  # rank 0 alone logs
    assert (out / "final_model" / "model.safetensors").is_file()


def test_torchrun_command(make_config, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "a=1"]
    assert torchrun_command(make_config(), argv) is None
    command = torchrun_command(make_config("trainer.n_gpus_per_node=4"), argv)
    assert command[1:] == ["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=4", "--standalone",
                           "-m", "gspo.train", "a=1"]
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="trainer.nnodes=2: set MASTER_ADDR"):
        torchrun_command(make_config("trainer.nnodes=2", "trainer.n_gpus_per_node=2"), argv)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("NODE_RANK", "1")
    command = torchrun_command(make_config("trainer.nnodes=2", "trainer.n_gpus_per_node=2"), argv)
    assert "--node_rank=1" in command and "--master_addr=10.0.0.1" in command and "--master_port=29500" in command
    monkeypatch.setenv("WORLD_SIZE", "4")  # already under torchrun: run here
    assert torchrun_command(make_config("trainer.n_gpus_per_node=4"), argv) is None


def test_mini_batch_must_split_evenly_over_processes(make_config):
    with pytest.raises(ConfigError, match="actor_rollout_ref.actor.ppo_mini_batch_size.*3 processes"):
        make_config("trainer.n_gpus_per_node=3")  # 4 prompts x 4 responses = 16 rows


def test_config_error_names_key_for_bad_process_counts():
    with pytest.raises(ConfigError, match="trainer.nnodes"):
        load_config(None, ["trainer.nnodes=0"])


def test_torchrun_waits_for_a_graceful_stop(monkeypatch):
    from gspo.cli import GRACEFUL_STOP_TIMEOUT_S, torchrun_env

    monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    assert torchrun_env()["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(GRACEFUL_STOP_TIMEOUT_S)
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "90")  # the user's choice wins
    assert torchrun_env()["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "90"
