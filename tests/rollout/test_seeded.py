"""Seeded sampling: exact distribution, independence from batching, and the HF engine path."""

from __future__ import annotations

import math

import pytest
import torch

from gspo.model.loading import load_causal_lm, load_tokenizer
from gspo.rollout import HFRolloutEngine, SamplingParams, group_keys, response_keys
from gspo.rollout.seeded import GumbelNoise, draw_tokens, gumbel_noise, mix32


def _sample_keys(seed: int, group_ids: torch.Tensor, n: int) -> torch.Tensor:
    """(G * n,) keys for n responses to each group, group-major like the rollout rows."""
    return response_keys(group_keys(seed, group_ids), n)


def test_mix32_matches_reference_murmur3_finaliser():
    def fmix32(h: int) -> int:  # the reference, in Python's unbounded ints
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    assert mix32(torch.tensor(values)).tolist() == [fmix32(v) for v in values]


def _keys(seed: int, group_ids: torch.Tensor, n: int) -> torch.Tensor:
    """(G * n,) keys of n responses to each group, group-major: what the hf engine derives."""
    return response_keys(group_keys(seed, group_ids), n)


def test_keys_are_distinct_and_depend_on_seed_group_and_sample():
    keys = _keys(1, torch.arange(1000), 16)
    assert keys.shape == (16000,) and keys.unique().numel() == 16000
    assert not torch.equal(keys, _keys(2, torch.arange(1000), 16))
    # A group's keys do not depend on which other groups are in the call.
    assert torch.equal(_keys(1, torch.tensor([7]), 16), keys[7 * 16:8 * 16])


def test_gumbel_noise_is_a_pure_function_with_gumbel_moments():
    keys = _keys(0, torch.arange(64), 8)
    noise = gumbel_noise(keys, position=3, vocab_size=500)
    assert torch.equal(noise, gumbel_noise(keys, 3, 500))
    assert torch.equal(noise[10:20], gumbel_noise(keys[10:20], 3, 500))  # independent of the batch
    assert not torch.equal(noise, gumbel_noise(keys, 4, 500))
    # Standard Gumbel: mean = Euler-Mascheroni 0.5772, variance = pi^2 / 6 = 1.6449; 256k draws.
    assert noise.mean().item() == pytest.approx(0.5772, abs=0.01)
    assert noise.var().item() == pytest.approx(math.pi ** 2 / 6, abs=0.02)


def _float64_gumbel(keys: torch.Tensor, position: int, vocab_size: int) -> torch.Tensor:
    """The reference: the same 32-bit hashes turned into Gumbel noise in float64."""
    row = mix32(keys ^ mix32(torch.tensor(position) + 0x632BE5AB))
    bits = mix32(row[:, None] ^ mix32(torch.arange(vocab_size) + 0x5BD1E995)[None, :])
    return -torch.log(-torch.log1p(-(bits.double() + 0.5) * 2.0 ** -32))


def test_gumbel_noise_pinned_values_and_float64_agreement():
    # Hashes of keys _sample_keys(0, [0, 1], 1) at position 0, tokens 0..3: 3005480533 90061219 1351756730
    # 1801739139 / 707053232 1756451390 1774812612 3148218729; noise = -ln(-ln(1 - (h + 0.5) / 2^32)).
    noise = gumbel_noise(_sample_keys(0, torch.arange(2), 1), position=0, vocab_size=4)
    assert noise.dtype == torch.float32
    expected = torch.tensor([[-0.1849844, 3.8541323, 0.9730121, 0.6090531],
                             [1.7155045, 0.6427120, 0.6290019, -0.2780206]])
    torch.testing.assert_close(noise, expected, rtol=0, atol=2e-7)
    # 1M draws against float64: within 1e-5 wherever U > 1e-3 (the float32 complement 1 - U keeps ~24 bits, so
    # as U -> 0 the noise loses precision and is floored at -2.81; noise that low practically never wins a draw).
    keys = _sample_keys(3, torch.arange(256), 1)
    noise, reference = gumbel_noise(keys, 5, 4096), _float64_gumbel(keys, 5, 4096)
    body = reference > -math.log(-math.log(1e-3))
    torch.testing.assert_close(noise[body].double(), reference[body], rtol=0, atol=1e-5)
    assert noise.min().item() >= -math.log(-math.log(2.0 ** -24)) - 1e-6 and noise.isfinite().all()


def test_noise_buffers_are_reused_and_never_leak_between_calls():
    keys = _sample_keys(0, torch.arange(8), 1)
    noise = GumbelNoise(vocab_size=500, max_rows=8)
    first = noise(keys, 3)
    address, first = first.data_ptr(), first.clone()
    fewer_rows = noise(keys[2:5], 7)
    assert fewer_rows.data_ptr() == address  # the same buffer: no allocation per token
    assert torch.equal(fewer_rows, gumbel_noise(keys[2:5], 7, 500))
    assert torch.equal(noise(keys, 3), first)


def test_sampled_tokens_are_those_of_the_float64_sampler():
    # 4,096 rows over a 2,048-token vocabulary: the same tokens as argmax(logits + float64 noise) drew.
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4096, 2048, generator=generator) * 3
    keys = _sample_keys(9, torch.arange(4096), 1)
    tokens, _ = draw_tokens(logits, temperature=1.0, top_k=-1, top_p=1.0, do_sample=True, keys=keys, position=2)
    assert torch.equal(tokens, (logits + _float64_gumbel(keys, 2, 2048).float()).argmax(-1))
    reused = GumbelNoise(2048, 4096)
    again, _ = draw_tokens(logits, temperature=1.0, top_k=-1, top_p=1.0, do_sample=True, keys=keys, position=2,
                           noise=reused)
    assert torch.equal(again, tokens)


def _draw(logits: torch.Tensor, seed: int, **knobs) -> torch.Tensor:
    keys = _keys(seed, torch.arange(logits.shape[0]), 1)
    knobs = {"temperature": 1.0, "top_k": -1, "top_p": 1.0, **knobs}
    return draw_tokens(logits, keys=keys, position=0, do_sample=True, **knobs)[0]


def test_gumbel_max_samples_the_softmax():
    # 3 tokens with probabilities 0.5 / 0.3 / 0.2, 40k independent rows: frequencies within 4 sigma (<= 0.01).
    probs = torch.tensor([0.5, 0.3, 0.2])
    draws = _draw(probs.log().expand(40000, 3), seed=5)
    assert torch.bincount(draws, minlength=3).float().div(40000).tolist() == pytest.approx(probs.tolist(), abs=0.01)


def test_temperature_top_k_and_top_p_apply_before_the_noise():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    assert set(_draw(logits, 3, top_k=2).unique().tolist()) == {0, 1}  # outside the top 2: never drawn
    assert set(_draw(logits, 3, top_p=0.5).unique().tolist()) == {0}  # token 0 alone holds 0.64 >= 0.5
    expected = torch.softmax(logits[0] / 2.0, -1)  # 0.4223 / 0.2562 / 0.1554 / 0.0942
    frequencies = torch.bincount(_draw(logits, 3, temperature=2.0), minlength=4).float() / 20000
    assert frequencies.tolist() == pytest.approx(expected.tolist(), abs=0.015)


def test_drawn_log_probs_use_temperature_over_the_whole_vocabulary():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tokens, log_probs = draw_tokens(logits, temperature=2.0, top_k=1, top_p=1.0, do_sample=True,
                                    keys=_keys(0, torch.arange(1), 1), position=0)
    assert tokens.tolist() == [0]  # top-k 1 leaves one choice
    assert log_probs.item() == pytest.approx(torch.log_softmax(logits[0] / 2.0, -1)[0].item())  # log 0.4223
    greedy, greedy_log_probs = draw_tokens(logits, temperature=1.0, top_k=-1, top_p=1.0, do_sample=False,
                                           keys=None, position=0)
    assert greedy.tolist() == [0] and greedy_log_probs.item() == pytest.approx(math.log(0.6439), abs=1e-4)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir), torch.device("cpu"))
    return HFRolloutEngine(
        model, pad_token_id=tokenizer.pad_token_id, eos_token_ids=[tokenizer.eos_token_id]
    ), tokenizer


def test_seeded_generation_does_not_depend_on_batching(engine):
    engine, tokenizer = engine
    prompts = [tokenizer.encode(text) for text in ["1+2=", "33+4=", "5+66=", "7+8="]]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    keys = group_keys(11, torch.arange(4))
    engine.micro_batch_size = 0
    whole = engine.generate(prompts, params, keys)
    engine.micro_batch_size = 3  # one prompt (x n) per call: different padding and batch shapes
    torch.manual_seed(123)  # the global RNG plays no part
    parts = engine.generate(prompts, params, keys)
    last_alone = engine.generate(prompts[3:], params, keys[3:])
    engine.micro_batch_size = 0
    assert torch.equal(whole.response_ids, parts.response_ids)
    assert torch.equal(whole.response_mask, parts.response_mask)
    width = last_alone.response_ids.shape[1]
    assert torch.equal(whole.response_ids[9:, :width], last_alone.response_ids)
    # Different keys give different responses (a random 2-layer model is near uniform over the vocabulary).
    other = engine.generate(prompts, params, group_keys(12, torch.arange(4)))
    assert not torch.equal(whole.response_ids, other.response_ids)


@pytest.mark.parametrize("temperature,top_k", [(1.0, -1), (0.7, 5)])
def test_sampler_log_probs_equal_a_recomputation(engine, temperature, top_k):
    # The sampler's log-probs use softmax(logits / T) over the whole vocabulary, as the trainer's forward does
    # (top-k only restricts which tokens can be drawn); KV-cached decoding vs one full forward: float noise.
    from gspo.trainer.actor import compute_log_probs
    from gspo.trainer.batch import RolloutBatch

    engine, tokenizer = engine
    prompts = [tokenizer.encode(text) for text in ["1+2=", "33+4=", "5+66="]]
    params = SamplingParams(n=4, temperature=temperature, top_k=top_k, max_new_tokens=6)
    generation = engine.generate(prompts, params, group_keys(3, torch.arange(3)), return_log_probs=True)
    batch = RolloutBatch.from_generation(
        generation, group_ids=torch.arange(3).repeat_interleave(4), prompt_index=torch.arange(3).repeat_interleave(4)
    )
    recomputed = compute_log_probs(
        engine.model, batch, micro_batch_size=12, temperature=temperature, autocast_dtype=None
    )
    assert generation.log_probs.shape == generation.response_ids.shape
    assert (generation.log_probs[generation.response_mask == 0] == 0).all()
    torch.testing.assert_close(generation.log_probs, recomputed, rtol=0, atol=1e-5)


def test_log_probs_need_seeded_sampling(engine):
    engine, tokenizer = engine
    with pytest.raises(ValueError, match="seeded sampling"):
        engine.generate([tokenizer.encode("1+2=")], SamplingParams(n=2), None, return_log_probs=True)


def test_greedy_decoding_matches_hf_generate(engine):
    # The engine's own loop (shared prefill, finished rows dropped) against transformers' generate.
    engine, tokenizer = engine
    prompts = [tokenizer.encode(text) for text in ["1+2=", "33+4=", "5+66=", "7+8="]]
    params = SamplingParams(n=2, do_sample=False, max_new_tokens=8)
    ours = engine.generate(prompts, params)
    for row, prompt in enumerate(prompts):
        expected = engine.model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=8,
            eos_token_id=engine.eos_token_ids,
            pad_token_id=engine.pad_token_id,
        )[0, len(prompt) :]
        length = int(ours.response_mask[2 * row].sum())
        assert ours.response_ids[2 * row, :length].tolist() == expected[:length].tolist()
        assert torch.equal(ours.response_ids[2 * row], ours.response_ids[2 * row + 1])  # greedy: n copies agree
