"""Run by tests/trainer/test_sharded_loading.py under torchrun (2 gloo ranks): load a model sharded, generate
with it on rank 0 alone through the hf engine, take a training backward, report.

``python sharded_loading_worker.py MODEL_DIR OUT_DIR`` writes, per rank, ``rank_R.pt``: the non-persistent
buffers, facts about the shards and rank 0's generation; rank 0 also ``full_state.pt``: the gathered full
state dict.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROMPTS = [[2, 3, 4, 5, 9], [6, 7, 3], [2, 5, 6, 7, 8, 9]]  # token ids of the tiny model's vocabulary
NUM_RESPONSES = 4


def main(model_dir: str, out_dir: str) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    from gspo.config import new_rollout_config
    from gspo.distributed import full_tensor_of, init_distributed
    from gspo.rollout import EngineSpec, SamplingParams, group_keys
    from gspo.rollout.hf import build_hf_engine
    from gspo.trainer.checkpoint import full_model_state_dict
    from gspo.trainer.parallel import shard_model
    from gspo.trainer.sharded_loading import load_sharded_causal_lm, non_persistent_buffers

    dist = init_distributed("cpu")
    model = load_sharded_causal_lm(
        model_dir, dist, device=torch.device("cpu"),
        shard=lambda m: shard_model(m, world_size=dist.world_size, bf16=False, cpu_offload=False, device_type="cpu"))
    tensors = [*model.parameters(), *model.buffers()]
    report = {
        "buffers": {name: buffer.clone() for name, buffer in non_persistent_buffers(model).items()},
        "all_sharded": all(isinstance(p, DTensor) for p in model.parameters()),
        "any_meta": any(t.is_meta for t in tensors),
        "tied": model.lm_head.weight is model.model.embed_tokens.weight,
        "local_parameter_bytes": sum(p.to_local().nbytes for p in model.parameters()),
        "generation_config": model.generation_config.to_dict(),
    }
    engine = build_hf_engine(EngineSpec(
        model_path=Path(model_dir), policy=lambda: model, pad_token_id=0, eos_token_ids=[1],
        device=torch.device("cpu"), rollout=new_rollout_config(), max_prompt_length=8, max_response_length=4,
        world_size=dist.world_size))
    engine.resume_memory()  # every rank: the all-gather
    if dist.is_main:  # rank 1 has nothing to generate, as a rank with no prompts in a small batch
        params = SamplingParams(n=NUM_RESPONSES, max_new_tokens=4)
        generation = engine.generate(PROMPTS, params, group_keys(1, torch.arange(len(PROMPTS))), True)
        report["generation"] = (PROMPTS, NUM_RESPONSES, generation.response_ids, generation.log_probs)
    engine.release_memory()
    report["engine_generates_with_the_policy"] = engine.model is model
    report["sharded_after_release"] = all(isinstance(p, DTensor) for p in model.parameters())
    model(input_ids=torch.tensor([PROMPTS[0]])).logits.sum().backward()  # FSDP trains as before
    report["sharded_gradients"] = all(isinstance(p.grad, DTensor) for p in model.parameters())
    model.zero_grad(set_to_none=True)
    # What the vllm engine pushes for load_format=dummy: every parameter whole (an all-gather each).
    report["vllm_dummy_push_shapes"] = {name: tuple(full_tensor_of(param).shape)
                                        for name, param in model.named_parameters(remove_duplicate=False)}
    full = full_model_state_dict(model, dist)
    out = Path(out_dir)
    torch.save(report, out / f"rank_{dist.rank}.pt")
    if dist.is_main:
        torch.save(full, out / "full_state.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
