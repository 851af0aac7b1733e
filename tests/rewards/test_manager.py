from __future__ import annotations

import math
import textwrap

import pytest
import torch

from gspo.rewards import RewardBatch, RewardError, RewardManager, load_custom_reward


def score(manager, responses, lengths=None, gts=None, sources=None, extras=None):
    n = len(responses)
    return manager.score(
        responses,
        lengths if lengths is not None else [1] * n,
        gts if gts is not None else [None] * n,
        sources if sources is not None else ["unknown"] * n,
        extras if extras is not None else [{}] * n,
    )


def test_registry_lookup_per_data_source():
    batch = score(
        RewardManager(),
        ["#### 72", "#### 71", " 579 ", "57"],
        gts=["72", "72", "579", "579"],
        sources=["openai/gsm8k", "gsm8k", "addition", "addition"],
    )
    assert isinstance(batch, RewardBatch)
    for t in (batch.seq_reward, batch.seq_final_reward, batch.acc, batch.overlong_penalty):
        assert t.dtype == torch.float32 and t.shape == (4,)
    assert batch.seq_reward.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert batch.acc.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.equal(batch.seq_final_reward, batch.seq_reward)
    assert batch.num_errors == 0
    # Only what the reward side alone knows: the reward means are taken from the tensors by the caller, once.
    assert batch.metrics == {"reward/errors": 0.0, "reward/overlong_penalty_mean": 0.0, "reward/overlong_ratio": 0.0}


def test_extra_info_reaches_reward_fn():
    batch = score(RewardManager(), ["it is 72"], gts=["72"], sources=["gsm8k"], extras=[{"method": "flexible"}])
    assert batch.seq_reward.tolist() == [1.0]


def test_custom_fn_serves_every_source_and_acc_separate():
    def fn(response, gt, extra):
        return {"score": len(response) / 10, "acc": float(response == gt), "format": 1}

    batch = score(RewardManager(fn), ["abc", "hello"], gts=["abc", "x"], sources=["nope", "gsm8k"])
    torch.testing.assert_close(batch.seq_reward, torch.tensor([0.3, 0.5]))
    assert batch.acc.tolist() == [1.0, 0.0]
    assert batch.extras == [{"format": 1.0}, {"format": 1.0}]
    assert batch.metrics["reward/extra/format"] == 1.0


def test_reward_fn_cannot_mutate_extra_info():
    def fn(response, gt, extra):
        extra["seen"] = True
        return 0.0

    extras = [{"a": 1}]
    score(RewardManager(fn), ["x"], extras=extras)
    assert extras == [{"a": 1}]


def test_unknown_data_source_raises_even_in_zero_mode():
    with pytest.raises(RewardError, match="no reward function registered for data_source 'mystery'"):
        score(RewardManager(on_error="zero"), ["x"], sources=["mystery"])


def test_overlong_shaping_applies_to_final_reward_only():
    manager = RewardManager(
        lambda r, g, e: {"score": 1.0, "acc": 1.0},
        overlong_enable=True,
        overlong_buffer_len=20,
        overlong_penalty_factor=1.0,
        max_response_length=100,
    )
    batch = score(manager, ["a", "b", "c", "d"], lengths=torch.tensor([50, 80, 90, 100]))
    assert batch.seq_reward.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert batch.acc.tolist() == [1.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(batch.overlong_penalty, torch.tensor([0.0, 0.0, -0.5, -1.0]))
    torch.testing.assert_close(batch.seq_final_reward, torch.tensor([1.0, 1.0, 0.5, 0.0]))
    assert batch.metrics["reward/overlong_penalty_mean"] == pytest.approx(-0.375)
    assert batch.metrics["reward/overlong_ratio"] == 0.5


def test_overlong_disabled_ignores_lengths():
    batch = score(RewardManager(lambda r, g, e: 1.0, max_response_length=10), ["a"], lengths=[10_000])
    assert batch.seq_final_reward.tolist() == [1.0]
    batch = RewardManager(lambda r, g, e: 1.0).score(["a"], None, [None], ["x"], [None])
    assert batch.seq_final_reward.tolist() == [1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_error": "ignore"}, "on_error must be one of"),
        ({"overlong_enable": True, "overlong_buffer_len": 10}, "max_response_length is required"),
        ({"overlong_enable": True, "overlong_buffer_len": 0, "max_response_length": 100}, "buffer_len must be > 0"),
        ({"overlong_enable": True, "overlong_buffer_len": 200, "max_response_length": 100}, "buffer_len"),
    ],
)
def test_invalid_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RewardManager(**kwargs)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="ground_truths has 1 entries but there are 2 responses"):
        RewardManager(lambda r, g, e: 0.0).score(["a", "b"], [1, 1], ["x"], ["s", "s"], [{}, {}])
    with pytest.raises(ValueError, match=r"response_lengths must have shape \(2,\)"):
        RewardManager(lambda r, g, e: 0.0).score(["a", "b"], [1], ["x", "y"], ["s", "s"], [{}, {}])


def test_empty_batch():
    batch = RewardManager(lambda r, g, e: 0.0).score([], [], [], [], [])
    assert batch.seq_reward.shape == (0,)
    assert batch.metrics == {"reward/errors": 0.0}


# --- a user's reward file, loaded by path -------------------------------------------------------

CUSTOM = """
import math

def good(response_text, ground_truth, extra_info):
    return {"score": 2.0 if response_text == ground_truth else -1.0, "acc": float(response_text == ground_truth)}

def raises(response_text, ground_truth, extra_info):
    if response_text == "boom":
        raise ZeroDivisionError("kaboom")
    return 1.0

def returns_nan(response_text, ground_truth, extra_info):
    return math.nan if response_text == "nan" else 1.0

def returns_string(response_text, ground_truth, extra_info):
    return "1.0" if response_text == "str" else 1.0
"""


@pytest.fixture
def custom_file(tmp_path):
    path = tmp_path / "user_reward.py"
    path.write_text(textwrap.dedent(CUSTOM))
    return path


def test_custom_file_good(custom_file):
    batch = score(RewardManager(load_custom_reward(custom_file, "good")), ["7", "8"], gts=["7", "7"])
    assert batch.seq_reward.tolist() == [2.0, -1.0]
    assert batch.acc.tolist() == [1.0, 0.0]


def test_raise_mode_shows_context_and_chains(custom_file):
    manager = RewardManager(load_custom_reward(custom_file, "raises"), on_error="raise")
    response = "boom"
    with pytest.raises(RewardError) as info:
        score(manager, ["fine", response], gts=["g1", "g2"], sources=["src_a", "src_b"])
    message = str(info.value)
    assert "'raises'" in message
    assert "ZeroDivisionError: kaboom" in message
    assert "data_source='src_b'" in message
    assert "ground_truth='g2'" in message
    assert "sample 1" in message
    assert "response: 'boom'" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_raise_mode_truncates_long_response(custom_file):
    manager = RewardManager(load_custom_reward(custom_file, "returns_nan"))
    with pytest.raises(RewardError) as info:
        score(manager, ["nan"])
    assert "non-finite score: nan" in str(info.value)
    assert "'returns_nan'" in str(info.value)

    manager = RewardManager(lambda r, g, e: 1 / 0)
    with pytest.raises(RewardError) as info:
        score(manager, ["y" * 5000])
    assert "y" * 200 in str(info.value) and "y" * 201 not in str(info.value)


@pytest.mark.parametrize(
    ("name", "bad_response", "match"),
    [
        ("raises", "boom", "ZeroDivisionError"),
        ("returns_nan", "nan", "non-finite score"),
        ("returns_string", "str", "non-numeric score: str"),
    ],
)
def test_error_modes(custom_file, name, bad_response, match):
    fn = load_custom_reward(custom_file, name)
    responses = ["ok", bad_response, "ok"]
    with pytest.raises(RewardError, match=match) as info:
        score(RewardManager(fn, on_error="raise"), responses, sources=["ds"] * 3, gts=["gt"] * 3)
    assert "data_source='ds'" in str(info.value) and "ground_truth='gt'" in str(info.value)

    batch = score(RewardManager(fn, on_error="zero"), responses)
    assert batch.num_errors == 1
    assert batch.seq_reward.tolist() == [1.0, 0.0, 1.0]
    assert batch.acc.tolist() == [1.0, 0.0, 1.0]
    assert batch.metrics["reward/errors"] == 1.0
    assert not any(math.isnan(v) for v in batch.metrics.values())


def test_zero_mode_still_applies_overlong_penalty():
    manager = RewardManager(
        lambda r, g, e: math.nan,
        on_error="zero",
        overlong_enable=True,
        overlong_buffer_len=10,
        max_response_length=20,
        overlong_penalty_factor=1.0,
    )
    batch = score(manager, ["a"], lengths=[15])
    assert batch.seq_reward.tolist() == [0.0]
    assert batch.seq_final_reward.tolist() == [-0.5]
    assert batch.acc.tolist() == [0.0]
