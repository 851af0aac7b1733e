import math

import pytest
import torch
from torch.testing import assert_close

from gspo.algos import KL_TYPES, kl_penalty

F64 = torch.float64


def test_types_tuple():
    assert KL_TYPES == ("kl", "abs", "mse", "low_var_kl")


def test_hand_values():
    logp = torch.tensor([-1.0, -2.0], dtype=F64)
    ref = torch.tensor([-1.5, -1.0], dtype=F64)
    # d = logp - ref = [0.5, -1.0]
    assert_close(kl_penalty(logp, ref, "kl"), torch.tensor([0.5, -1.0], dtype=F64))
    assert_close(kl_penalty(logp, ref, "abs"), torch.tensor([0.5, 1.0], dtype=F64))
    assert_close(kl_penalty(logp, ref, "mse"), torch.tensor([0.125, 0.5], dtype=F64))
    # k3 with r = ref - logp = [-0.5, 1.0]: e^r - r - 1
    expected = torch.tensor([math.exp(-0.5) + 0.5 - 1.0, math.e - 2.0], dtype=F64)
    assert_close(kl_penalty(logp, ref, "low_var_kl"), expected, rtol=1e-14, atol=1e-14)


def test_low_var_kl_clamps():
    logp = torch.tensor([0.0, 0.0, 0.0], dtype=F64)
    ref = torch.tensor([30.0, -30.0, 2.0], dtype=F64)
    # r = 30 -> clamp 20 -> huge -> 10; r = -30 -> clamp -20 -> e^-20 + 19 -> 10; r = 2 -> e^2 - 3
    assert_close(kl_penalty(logp, ref, "low_var_kl"), torch.tensor([10.0, 10.0, math.exp(2) - 3], dtype=F64))


def test_k1_and_k3_are_unbiased_estimators_of_kl():
    # E_{x ~ p}[k(x)] = KL(p || q) exactly for k1 and k3 over a small categorical.
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(6, generator=g, dtype=F64), -1)
    logq = torch.log_softmax(torch.randn(6, generator=g, dtype=F64), -1)
    p = logp.exp()
    kl = (p * (logp - logq)).sum()
    assert_close((p * kl_penalty(logp, logq, "kl")).sum(), kl, rtol=1e-12, atol=1e-12)
    assert_close((p * kl_penalty(logp, logq, "low_var_kl")).sum(), kl, rtol=1e-12, atol=1e-12)
    assert (kl_penalty(logp, logq, "low_var_kl") >= 0).all()


def test_errors():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown kl_type") as err:
        kl_penalty(x, x, "k9")
    assert all(name in str(err.value) for name in KL_TYPES)
    with pytest.raises(ValueError):
        kl_penalty(x, torch.zeros(3), "kl")
