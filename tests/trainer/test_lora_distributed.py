"""LoRA under torchrun + FSDP2: 2 gloo ranks agree with 1 process (as tests/trainer/test_distributed.py does for
full fine-tuning). Tolerance 1e-5 absolute after two AdamW steps at lr 1e-2, as there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")
ATOL = 1e-5


def _args(tiny_model_dir, addition_files, parity_reward, out: Path) -> list[str]:
    train, val = addition_files
    return [f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]", f"data.val_files=[{val}]",
            f"custom_reward_function.path={parity_reward}", f"trainer.default_local_dir={out}",
            "data.train_batch_size=4", "data.gen_batch_size=6", "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.2",
            "actor_rollout_ref.actor.optim.lr=0.01", "data.max_response_length=4",
            "actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8",
            "actor_rollout_ref.actor.use_kl_loss=true",  # the reference (adapters off) runs sharded too
            "trainer.total_training_steps=2", "trainer.save_freq=1", "trainer.test_freq=-1", "trainer.logger=[]",
            "trainer.device=cpu"]


def _run(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, addition_files, parity_reward):
    root = tmp_path_factory.mktemp("lora_distributed")
    _run([sys.executable, str(WORKER), str(root / "single.json"),
          *_args(tiny_model_dir, addition_files, parity_reward, root / "single")])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
          str(root / "pair.json"), *_args(tiny_model_dir, addition_files, parity_reward, root / "pair")])
    return root


def test_two_ranks_train_the_same_adapters_as_one(runs):
    single, pair = (json.loads((runs / f"{name}.json").read_text()) for name in ("single", "pair"))
    assert pair["world_size"] == 2 and pair["kept"] == single["kept"]
    for folder, file in (("final_adapter", "adapter_model.safetensors"), ("final_model", "model.safetensors")):
        one, two = load_file(runs / "single" / folder / file), load_file(runs / "pair" / folder / file)
        assert one.keys() == two.keys() and one
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=0, atol=ATOL, msg=f"{folder}: {name}")
    checkpoint = runs / "pair" / "checkpoints" / "global_step_2"
    assert len(list((checkpoint / "state").glob("*.distcp"))) == 2 and (checkpoint / "adapter").is_dir()
    metrics = [json.loads(line) for line in (runs / "pair" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["actor/kl_loss"] > 0  # the adapters moved the policy away from the reference
