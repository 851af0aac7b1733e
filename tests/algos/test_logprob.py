import math

import pytest
import torch
from torch.testing import assert_close

from gspo.algos import entropy_from_logits, log_probs_from_logits

F64 = torch.float64


def _data(dtype=F64, shape=(2, 5, 11)):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(*shape, generator=g, dtype=F64) * 4).to(dtype)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return logits, labels


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 10, 1000])
def test_log_probs_match_log_softmax(chunk_size):
    logits, labels = _data()
    expected = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    out = log_probs_from_logits(logits, labels, chunk_size=chunk_size)
    assert out.shape == labels.shape and out.dtype == F64
    assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_log_prob_gradient_matches_log_softmax():
    logits, labels = _data()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    weights = torch.randn(labels.shape, dtype=F64)
    (log_probs_from_logits(a, labels, chunk_size=3) * weights).sum().backward()
    (torch.log_softmax(b, -1).gather(-1, labels[..., None]).squeeze(-1) * weights).sum().backward()
    assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_logits_computed_in_float32(dtype):
    logits, labels = _data(dtype)
    out = log_probs_from_logits(logits, labels)
    assert out.dtype == torch.float32
    expected = torch.log_softmax(logits.to(F64), -1).gather(-1, labels[..., None]).squeeze(-1)
    assert_close(out.to(F64), expected, rtol=1e-5, atol=1e-5)


def test_extreme_logits_are_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e30, 0.0, 1e30]], dtype=torch.float32)
    out = log_probs_from_logits(logits, torch.tensor([0, 0]))
    assert torch.isfinite(out[0]) and out[0].item() == 0.0
    assert out[1].item() == float("-inf") or out[1].item() < -1e29
    assert torch.isfinite(entropy_from_logits(logits[:1]))


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 100])
def test_entropy_matches_categorical(chunk_size):
    logits, _ = _data()
    expected = torch.distributions.Categorical(logits=logits).entropy()
    out = entropy_from_logits(logits, chunk_size=chunk_size)
    assert out.shape == logits.shape[:-1]
    assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_entropy_hand_values():
    # uniform over 4 -> ln 4; one-hot-ish (one logit far above) -> ~0.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]], dtype=F64)
    expected = torch.tensor([math.log(4.0), 0.0], dtype=F64)
    assert_close(entropy_from_logits(logits), expected, atol=1e-12, rtol=0)


def test_entropy_bf16_returns_float32():
    logits, _ = _data(torch.bfloat16)
    assert entropy_from_logits(logits).dtype == torch.float32


def test_validation():
    logits, labels = _data()
    with pytest.raises(ValueError):
        log_probs_from_logits(logits, labels[:, :3])
    with pytest.raises(ValueError):
        log_probs_from_logits(logits, labels, chunk_size=0)
    with pytest.raises(ValueError):
        entropy_from_logits(logits, chunk_size=-2)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_entropy_checkpointing_gives_the_same_values_and_gradients(chunk_size):
    logits, _ = _data()
    results = []
    for checkpointing in (False, True):
        leaf = logits.clone().requires_grad_(True)
        entropy = entropy_from_logits(leaf, chunk_size=chunk_size, checkpointing=checkpointing)
        (entropy * torch.arange(entropy.numel(), dtype=F64).reshape(entropy.shape)).sum().backward()
        results.append((entropy.detach(), leaf.grad))
    (plain, plain_grad), (recomputed, recomputed_grad) = results
    assert_close(recomputed, plain, rtol=0, atol=0)
    assert_close(recomputed_grad, plain_grad, rtol=1e-14, atol=1e-14)


def test_entropy_checkpointing_saves_no_vocabulary_sized_tensor_for_backward():
    logits = torch.randn(4, 6, 50, dtype=F64, requires_grad=True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    for checkpointing in (False, True):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            entropy_from_logits(logits, checkpointing=checkpointing)
        largest = max(saved, default=0)
        if checkpointing:
            assert largest <= logits.numel()  # at most the input itself, which the caller holds anyway
        else:
            assert saved.count(logits.numel()) >= 2  # the softmax (and more) kept beside the input
