"""FSDP2 start-up on 2 gloo ranks: every rank builds the model on the meta device, rank 0 alone reads the
checkpoint and the shards arrive by broadcast (gspo.trainer.sharded_loading)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gspo.distributed import SINGLE_PROCESS
from gspo.model.loading import ModelLoadError, empty_causal_lm, load_causal_lm
from gspo.trainer.sharded_loading import block_names, file_blocks, non_persistent_buffers, read_on_rank0

WORKER = Path(__file__).with_name("sharded_loading_worker.py")



def _run_two_ranks(model_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(WORKER), str(model_dir), str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model stored in bfloat16: loading it in float32 converts every tensor."""
    folder = tmp_path_factory.mktemp("tiny_bf16")
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"), torch.bfloat16)
    model.save_pretrained(folder)
    for file in tiny_model_dir.glob("tokenizer*"):
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.fixture(scope="module", params=["float32 file", "bfloat16 file"])
def model_dir(request, tiny_model_dir, bf16_model_dir) -> Path:
    """Read from the files block by block (float32, as trained), or converted by from_pretrained (bfloat16)."""
    return tiny_model_dir if request.param == "float32 file" else bf16_model_dir


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, model_dir):
    out = tmp_path_factory.mktemp("sharded_loading")
    proc = _run_two_ranks(model_dir, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = [torch.load(out / f"rank_{rank}.pt", weights_only=False) for rank in range(2)]
    return torch.load(out / "full_state.pt"), reports


def test_sharded_model_holds_the_checkpoint_bit_for_bit(loaded, model_dir):
    full, reports = loaded
    expected = load_causal_lm(str(model_dir), torch.device("cpu")).state_dict()
    assert full.keys() == expected.keys()
    for name, tensor in expected.items():
        assert full[name].dtype == tensor.dtype and torch.equal(full[name], tensor), name
    for report in reports:
        assert report["all_sharded"] and not report["any_meta"]
        assert report["tied"]  # the LM head is still the embedding, one parameter


def test_each_rank_holds_half_of_the_parameters(loaded, model_dir):
    _, reports = loaded
    model = load_causal_lm(str(model_dir), torch.device("cpu"))
    total = sum(p.nbytes for p in model.parameters())  # tied weights counted once
    assert sum(r["local_parameter_bytes"] for r in reports) == total
    assert all(r["local_parameter_bytes"] <= 0.51 * total for r in reports)


def test_meta_built_ranks_get_the_rotary_frequencies(loaded, model_dir):
    _, reports = loaded
    expected = non_persistent_buffers(load_causal_lm(str(model_dir), torch.device("cpu")))
    assert sorted(expected) == ["model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"]
    for report in reports:
        assert report["buffers"].keys() == expected.keys()
        for name, buffer in expected.items():
            assert torch.equal(report["buffers"][name], buffer), name


def test_hf_engine_generates_with_the_sharded_policy_on_one_rank_alone(loaded, model_dir):
    from gspo.rollout import SamplingParams, group_keys
    from gspo.rollout.hf import HFRolloutEngine

    _, reports = loaded
    assert all(r["engine_generates_with_the_policy"] for r in reports)  # no copy of the weights
    assert all(r["sharded_after_release"] and r["sharded_gradients"] for r in reports)
    prompts, num_responses, response_ids, log_probs = reports[0]["generation"]
    plain = HFRolloutEngine(load_causal_lm(str(model_dir), torch.device("cpu")), pad_token_id=0, eos_token_ids=[1])
    params = SamplingParams(n=num_responses, max_new_tokens=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran: a matmul's reduction order depends on the thread count
    try:
        expected = plain.generate(prompts, params, group_keys(1, torch.arange(len(prompts))), True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(response_ids, expected.response_ids) and torch.equal(log_probs, expected.log_probs)


def test_vllm_dummy_weights_are_pushed_whole_from_the_sharded_policy(loaded, model_dir):
    _, reports = loaded
    model = load_causal_lm(str(model_dir), torch.device("cpu"))
    expected = {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}
    assert all(r["vllm_dummy_push_shapes"] == expected for r in reports)


def test_hf_engine_refuses_float32_generation_under_fsdp_on_cuda(tiny_model_dir):
    from gspo.config import ConfigError, new_rollout_config
    from gspo.rollout import EngineSpec
    from gspo.rollout.hf import build_hf_engine

    spec = EngineSpec(model_path=tiny_model_dir, policy=lambda: None, pad_token_id=0, eos_token_ids=[1],
                      device=torch.device("cuda"), rollout=new_rollout_config(dtype="float32"),
                      max_prompt_length=8, max_response_length=4, world_size=2)
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.rollout\.dtype=float32: with 2 processes"):
        build_hf_engine(spec)


def test_generation_config_comes_from_the_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"))
    model.generation_config.eos_token_id = [1, 7]
    model.save_pretrained(folder)
    assert empty_causal_lm(str(folder)).generation_config.eos_token_id == [1, 7]


def test_block_names_cover_every_name_once_one_block_per_layer(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"))
    blocks = block_names(model)
    assert len(blocks) == model.config.num_hidden_layers + 1
    assert all(name.startswith(f"model.layers.{i}.") for i, block in enumerate(blocks[:-1]) for name in block)
    names = [name for block in blocks for name in block]
    assert sorted(names) == sorted(model.state_dict()) and len(names) == len(set(names))
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= set(blocks[-1])


def test_rank_0_reads_blocks_from_the_files_only_when_they_hold_the_model_as_loaded(tiny_model_dir, bf16_model_dir):
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"))
    names = block_names(model)
    blocks = file_blocks(tiny_model_dir, names, model, torch.float32)
    assert blocks is not None and len(blocks) == len(names)
    root = blocks[-1]()  # the LM head is not in the file: it is read under the embedding's name
    assert "model.embed_tokens.weight" in root and torch.equal(root["lm_head.weight"], model.lm_head.weight)
    assert file_blocks(tiny_model_dir, names, model, torch.bfloat16) is None  # stored in another dtype
    converted = load_causal_lm(str(bf16_model_dir), torch.device("cpu"))
    assert file_blocks(bf16_model_dir, block_names(converted), converted, torch.float32) is None


def test_rank_0_refuses_a_checkpoint_whose_names_are_not_the_meta_models(tiny_model_dir):
    names = set(empty_causal_lm(str(tiny_model_dir)).state_dict())
    assert read_on_rank0(str(tiny_model_dir), torch.float32, SINGLE_PROCESS, expected_names=names) is not None
    with pytest.raises(ModelLoadError, match="actor_rollout_ref.model.path: .* other state-dict names .*lm_head"):
        read_on_rank0(str(tiny_model_dir), torch.float32, SINGLE_PROCESS, expected_names=names - {"lm_head.weight"})


def test_unreadable_weights_on_rank_0_fail_every_rank(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_model_dir.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # the header is cut: only rank 0 reads the weights
    proc = _run_two_ranks(broken, tmp_path)
    assert proc.returncode != 0
    assert "actor_rollout_ref.model.path: cannot load" in proc.stderr
    assert "rank 0 failed" in proc.stderr  # rank 1 did not wait for a broadcast that never came
