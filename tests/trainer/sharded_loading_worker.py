"""Run by tests/trainer/test_sharded_loading.py under torchrun (2 gloo ranks): load a model sharded, report.

``python sharded_loading_worker.py MODEL_DIR OUT_DIR`` writes, per rank, ``rank_R.pt``: the non-persistent
buffers, and facts about the shards; rank 0 also ``full_state.pt``: the gathered full state dict.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(model_dir: str, out_dir: str) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    from gspo.distributed import init_distributed
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
    full = full_model_state_dict(model, dist)
    out = Path(out_dir)
    torch.save(report, out / f"rank_{dist.rank}.pt")
    if dist.is_main:
        torch.save(full, out / "full_state.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
