from __future__ import annotations

import pytest
import torch

from gspo.rewards import overlong_penalty

# max=100, buffer=20 -> expected length E = 80
CASES = [
    (0, 1.0, 0.0),
    (80, 1.0, 0.0),
    (81, 1.0, -0.05),
    (90, 1.0, -0.5),
    (95, 2.0, -1.5),
    (100, 1.0, -1.0),
    (100, 0.5, -0.5),
    (130, 1.0, -1.0),  # clamped past the maximum
]


@pytest.mark.parametrize(("length", "factor", "expected"), CASES)
def test_scalar(length, factor, expected):
    out = overlong_penalty(length, max_response_length=100, buffer_len=20, penalty_factor=factor)
    assert isinstance(out, float)
    assert out == pytest.approx(expected)


def test_tensor_matches_scalar():
    lengths = torch.tensor([c[0] for c in CASES])
    out = overlong_penalty(lengths, max_response_length=100, buffer_len=20, penalty_factor=1.0)
    expected = [overlong_penalty(int(n), max_response_length=100, buffer_len=20, penalty_factor=1.0) for n in lengths]
    assert out.dtype == torch.float32 and out.shape == lengths.shape
    torch.testing.assert_close(out, torch.tensor(expected))


def test_no_negative_zero():
    out = overlong_penalty(torch.tensor([10, 100]), max_response_length=100, buffer_len=20, penalty_factor=0.0)
    assert not torch.signbit(out).any()
    assert not str(overlong_penalty(10, max_response_length=100, buffer_len=20, penalty_factor=1.0)).startswith("-")


def test_buffer_equal_to_max():
    assert overlong_penalty(50, max_response_length=100, buffer_len=100, penalty_factor=1.0) == -0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_response_length": 100, "buffer_len": 0, "penalty_factor": 1.0}, "buffer_len must be > 0"),
        ({"max_response_length": 100, "buffer_len": -1, "penalty_factor": 1.0}, "buffer_len must be > 0"),
        (
            {"max_response_length": 10, "buffer_len": 20, "penalty_factor": 1.0},
            r"buffer_len \(20\) must be <= max_response_length",
        ),
        ({"max_response_length": 100, "buffer_len": 20, "penalty_factor": -1.0}, "penalty_factor must be >= 0"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(5, **kwargs)
