"""LoRA under torchrun + FSDP2: 2 gloo ranks agree with 1 process (as tests/trainer/test_distributed.py does for
full fine-tuning). Tolerance 1e-5 absolute after two AdamW steps at lr 1e-2, as there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_distributed import ATOL, WORKER, parity_args, run_checked, torchrun_prefix


def _args(tiny_model_dir, addition_files, parity_reward, out: Path) -> list[str]:
    return [*parity_args(tiny_model_dir, addition_files, parity_reward, out, steps=2),
            "trainer.max_actor_ckpt_to_keep=-1",  # the test reads the last checkpoint's shards
            "actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8",
            "actor_rollout_ref.actor.use_kl_loss=true"]  # the reference (adapters off) runs sharded too


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, addition_files, parity_reward):
    root = tmp_path_factory.mktemp("lora_distributed")
    run_checked([sys.executable, str(WORKER), str(root / "single.json"),
          *_args(tiny_model_dir, addition_files, parity_reward, root / "single")])
    run_checked([*torchrun_prefix(2), str(WORKER),
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
