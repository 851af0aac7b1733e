"""The vllm engine against the hf engine and the trainer's forward pass, and its weight updates."""

from __future__ import annotations

import json

import pytest
import torch

from gspo.config import ConfigError, load_config, new_rollout_config
from gspo.rollout import (
    EngineSpec,
    RolloutEngine,
    SamplingParams,
    build_rollout_engine,
    group_keys,
    response_mask_from_ids,
)
from gspo.rollout.vllm_engine import engine_kwargs
from gspo.tasks.addition import ADDITION_ASSET_DIR
from gspo.trainer.actor import compute_log_probs
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.parallel import iter_full_parameters
from tests_vllm.conftest import build_vllm


def _val_prompts(tokenizer, count: int) -> list[list[int]]:
    rows = [json.loads(line) for line in (ADDITION_ASSET_DIR / "val.jsonl").read_text().splitlines()[:count]]
    return [tokenizer.encode(row["prompt"]) for row in rows]


def _trainer_log_probs(policy, generation, temperature: float) -> torch.Tensor:
    groups = generation.response_ids.shape[0]
    batch = RolloutBatch.from_generation(generation, group_ids=torch.arange(groups), prompt_index=torch.arange(groups))
    return compute_log_probs(policy, batch, micro_batch_size=groups, temperature=temperature, autocast_dtype=None)


def test_engine_has_the_interface(embedded):
    _, _, hf, engine = embedded
    assert isinstance(engine, RolloutEngine) and isinstance(hf, RolloutEngine)
    assert engine.eos_token_ids == hf.eos_token_ids
    assert not engine.seeded_per_response and not engine.log_probs_match_trainer


def test_greedy_tokens_equal_the_hf_engine(embedded):
    policy, tokenizer, hf, engine = embedded
    prompts = _val_prompts(tokenizer, 64)
    params = SamplingParams(n=1, do_sample=False, max_new_tokens=6)
    ours, theirs = engine.generate(prompts, params), hf.generate(prompts, params)
    assert torch.equal(ours.response_mask, theirs.response_mask)
    assert torch.equal(ours.response_ids, theirs.response_ids)
    assert torch.equal(ours.prompt_ids, theirs.prompt_ids) and torch.equal(ours.prompt_mask, theirs.prompt_mask)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_equal_a_trainer_forward(embedded, temperature):
    policy, tokenizer, _, engine = embedded
    prompts = _val_prompts(tokenizer, 16)
    params = SamplingParams(n=4, temperature=temperature, max_new_tokens=6)
    generation = engine.generate(prompts, params, group_keys(3, torch.arange(16)), return_log_probs=True)
    assert generation.response_ids.shape[0] == 64
    # The hf engine's mask: up to and including the first EOS; padding after it.
    assert torch.equal(generation.response_mask, response_mask_from_ids(generation.response_ids, engine.eos_token_ids))
    assert (generation.log_probs[generation.response_mask == 0] == 0).all()
    recomputed = _trainer_log_probs(policy, generation, temperature)
    torch.testing.assert_close(generation.log_probs, recomputed, rtol=0, atol=1e-4)
    # n samples of one request differ, and the same group keys give the same samples.
    assert len({tuple(row.tolist()) for row in generation.response_ids[:4]}) > 1
    again = engine.generate(prompts, params, group_keys(3, torch.arange(16)), return_log_probs=True)
    assert torch.equal(again.response_ids, generation.response_ids)
    other = engine.generate(prompts, params, group_keys(4, torch.arange(16)))
    assert not torch.equal(other.response_ids, generation.response_ids)


def test_truncation_gives_the_hf_mask(embedded):
    _, tokenizer, hf, engine = embedded
    prompts = _val_prompts(tokenizer, 16)
    params = SamplingParams(n=1, do_sample=False, max_new_tokens=2)  # shorter than any answer + EOS
    ours, theirs = engine.generate(prompts, params), hf.generate(prompts, params)
    assert ours.response_mask.sum().item() == 32 and torch.equal(ours.response_mask, theirs.response_mask)
    assert torch.equal(ours.response_ids, theirs.response_ids)


@pytest.fixture(scope="module")
def long_prompt_model(tmp_path_factory):
    """A random tied-embedding Qwen2 that takes prompts longer than one vLLM CPU KV block (128 tokens), so the
    prefix cache really holds a prompt block."""
    from transformers import Qwen2ForCausalLM

    from gspo.model.loading import load_tokenizer
    from gspo.tasks.addition import build_addition_model_config, build_addition_tokenizer

    folder = tmp_path_factory.mktemp("long_model")
    tokenizer = build_addition_tokenizer()
    # head_dim 32: vLLM's CPU attention has no kernel for the smallest head sizes.
    config = build_addition_model_config(len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, load_tokenizer(str(folder))


def test_a_sleep_cycle_around_a_weight_update_follows_vllms_contract(embedded):
    # vLLM's CPU worker keeps its memory through sleep, but its executor and scheduler keep the sleep state: the
    # engine must leave them fully awake, or generation would find the scheduler paused.
    from gspo.rollout.vllm_engine import Memory

    policy, tokenizer, _, engine = embedded
    prompts = _val_prompts(tokenizer, 8)
    params = SamplingParams(n=1, do_sample=False, max_new_tokens=6)
    before = engine.generate(prompts, params)
    engine.sleep_during_update = True
    try:
        engine.release_memory()
        engine.release_memory()
        assert engine.memory is Memory.ASLEEP and engine.llm.llm_engine.is_sleeping()
        engine.update_weights(iter_full_parameters(policy, "cpu"))  # the same weights: the tokens must not change
        assert engine.memory is Memory.WEIGHTS_AWAKE and engine.llm.llm_engine.is_sleeping()  # KV cache asleep
        engine.resume_memory()
        assert engine.memory is Memory.AWAKE and not engine.llm.llm_engine.is_sleeping()
        after = engine.generate(prompts, params)
    finally:
        engine.sleep_during_update = False
        engine.resume_memory()
    assert torch.equal(after.response_ids, before.response_ids)


def test_engine_follows_pushed_weights_only_with_push_cache_reset_and_tied_output_layer(long_prompt_model):
    from gspo.model.loading import load_causal_lm

    folder, tokenizer = long_prompt_model
    policy = load_causal_lm(str(folder), torch.device("cpu"))
    assert policy.config.tie_word_embeddings
    engine = build_vllm(folder, policy, tokenizer, max_prompt_length=160, max_response_length=8, micro_batch_size=8)
    prompt = [tokenizer.encode("12+34=" * 24)]  # 144 tokens: one full block is cached
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=8)

    def error() -> float:  # engine log-probs against the current policy's forward pass
        generation = engine.generate(prompt, params, group_keys(0, torch.arange(1)), return_log_probs=True)
        return (generation.log_probs - _trainer_log_probs(policy, generation, 1.0)).abs().max().item()

    def perturb() -> None:
        with torch.no_grad():
            for param in policy.parameters():
                param.add_(torch.randn_like(param) * 0.5)

    assert error() < 1e-4  # and the prompt's first block is now in the prefix cache
    torch.manual_seed(1)
    perturb()
    assert error() > 1e-2  # no push: the engine still samples from the old weights
    # Push without resetting the prefix cache: the cached prompt block was computed with the old weights.
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter_full_parameters(policy, "cpu")})
    assert error() > 1e-2
    engine.update_weights(iter_full_parameters(policy, "cpu"))  # push + reset
    assert error() < 1e-4
    # Push without the tied output layer's second name: vLLM's CPU backend keeps lm_head as its own tensor.
    perturb()
    untied = [(name, t) for name, t in iter_full_parameters(policy, "cpu") if name != "lm_head.weight"]
    engine.update_weights(iter(untied))
    assert error() > 1e-2
    engine.update_weights(iter_full_parameters(policy, "cpu"))
    assert error() < 1e-4


def _spec(**rollout) -> EngineSpec:
    return EngineSpec(model_path=ADDITION_ASSET_DIR, policy=lambda: None, pad_token_id=0, eos_token_ids=[1],
                      device=torch.device("cpu"), rollout=new_rollout_config(name="vllm", **rollout),
                      max_prompt_length=16, max_response_length=6)


def test_rollout_keys_reach_vllm_and_impossible_ones_name_the_key():
    kwargs = engine_kwargs(_spec(max_num_batched_tokens=512, enforce_eager=False, micro_batch_size=1024))
    assert kwargs["max_model_len"] == 22 and kwargs["max_num_batched_tokens"] == 512
    assert kwargs["max_num_seqs"] == 512 and kwargs["enforce_eager"] is False
    assert kwargs["dtype"] == "float32" and kwargs["enable_chunked_prefill"] is False
    assert kwargs["logprobs_mode"] == "processed_logprobs" and kwargs["distributed_executor_backend"] == "uni"
    assert engine_kwargs(_spec(max_model_len=20, dtype="bfloat16"))["max_model_len"] == 20
    # The one construction path checks first: what vLLM's CPU build cannot run fails naming the key.
    with pytest.raises(ConfigError, match="actor_rollout_ref.rollout.enable_chunked_prefill"):
        build_rollout_engine(_spec(enable_chunked_prefill=True))
    with pytest.raises(ConfigError, match="actor_rollout_ref.rollout.max_num_batched_tokens"):
        build_rollout_engine(_spec(max_num_batched_tokens=8))


@pytest.mark.parametrize("override, key", [("actor_rollout_ref.rollout.enable_chunked_prefill=true",
                                            "enable_chunked_prefill"),
                                           ("actor_rollout_ref.rollout.max_num_batched_tokens=8",
                                            "max_num_batched_tokens")])
def test_validation_refuses_what_the_engine_would_refuse(override, key):
    # With vLLM installed, `gspo validate` (load_config) refuses at once what training would refuse at start-up.
    with pytest.raises(ConfigError, match=f"actor_rollout_ref.rollout.{key}: "):
        load_config(None, ["actor_rollout_ref.rollout.name=vllm", "trainer.device=cpu", override])


def test_eval_hands_vllm_every_prompt_at_once(tmp_path, monkeypatch):
    # vLLM schedules its own batches: one generate() call with every prompt, max_num_seqs at vLLM's default
    # rather than batch_size x n.
    from gspo.evaluate import evaluate, parse_eval_args
    from gspo.rollout import vllm_engine

    handed, built = [], []
    generate, kwargs_of = vllm_engine.VLLMRolloutEngine.generate, vllm_engine.engine_kwargs
    monkeypatch.setattr(vllm_engine.VLLMRolloutEngine, "generate",
                        lambda self, prompts, *args, **kw: handed.append(len(prompts)) or generate(self, prompts, *args,
                                                                                                   **kw))
    monkeypatch.setattr(vllm_engine, "engine_kwargs", lambda spec: built.append(kwargs_of(spec)) or built[-1])
    cfg = parse_eval_args(["engine=vllm", "limit=12", "batch_size=4", "max_response_length=6", "max_prompt_length=16",
                           "device=cpu", f"output_dir={tmp_path}"])
    summary = evaluate("embedded://addition", [str(ADDITION_ASSET_DIR / "val.jsonl")], cfg)
    assert handed == [12] and built[0]["max_num_seqs"] == 256 and summary["num_prompts"] == 12

