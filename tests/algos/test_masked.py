import torch
from torch.testing import assert_close

from gspo.algos import masked_mean, masked_sum


def test_masked_sum_and_mean_full_and_per_row():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.float64)
    # full: (1 + 2 + 7 + 8 + 9) = 27 over 5 tokens
    assert_close(masked_sum(values, mask), torch.tensor(27.0, dtype=torch.float64))
    assert_close(masked_mean(values, mask), torch.tensor(27.0 / 5, dtype=torch.float64))
    # per row: [3/2, 0 (empty row, denominator clamped to 1), 24/3]
    assert_close(masked_mean(values, mask, dim=-1), torch.tensor([1.5, 0.0, 8.0], dtype=torch.float64))
    assert_close(masked_sum(values, mask, dim=0), torch.tensor([8.0, 10.0, 9.0], dtype=torch.float64))


def test_masked_positions_may_hold_non_finite_values():
    values = torch.tensor([[1.0, float("-inf")], [float("nan"), 3.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = masked_mean(values, mask)
    assert_close(out, torch.tensor(2.0, dtype=torch.float64))
    out.backward()
    assert_close(values.grad, torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64))


def test_all_masked_gives_zero_not_nan():
    values = torch.randn(2, 3)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    assert masked_mean(values, mask).item() == 0.0
    assert masked_mean(values, mask, dim=-1).tolist() == [0.0, 0.0]
