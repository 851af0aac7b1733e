import pytest
import torch
from torch.testing import assert_close

from gspo.algos import LOSS_AGG_MODES, agg_loss

F64 = torch.float64


def _batch():
    # Row 0: 3 tokens (1+2+3 = 6, mean 2); row 1: length-1 (5); row 2: fully masked;
    # row 3: 4 tokens (13+14+15+16 = 58, mean 14.5). 8 tokens, 3 non-empty rows, T = 4.
    loss = torch.arange(1.0, 17.0, dtype=F64).reshape(4, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=F64)
    return loss, mask


EXPECTED = {
    "token-mean": 69.0 / 8,  # (6 + 5 + 58) / 8 tokens
    "seq-mean-token-sum": 69.0 / 3,  # (6 + 5 + 58) / 3 non-empty rows
    "seq-mean-token-mean": (2.0 + 5.0 + 14.5) / 3,
    "seq-mean-token-sum-norm": 69.0 / (3 * 4),  # / (num_seqs * T)
}


def test_modes_tuple():
    assert LOSS_AGG_MODES == ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_hand_values(mode):
    loss, mask = _batch()
    assert_close(agg_loss(loss, mask, mode), torch.tensor(EXPECTED[mode], dtype=F64), rtol=1e-12, atol=1e-12)


def test_empty_row_does_not_count_as_a_sequence():
    loss, mask = _batch()
    # Dropping the empty row must not change any mode.
    keep = torch.tensor([0, 1, 3])
    for mode in LOSS_AGG_MODES:
        assert_close(agg_loss(loss[keep], mask[keep], mode), agg_loss(loss, mask, mode))


def test_sum_norm_with_explicit_length():
    loss, mask = _batch()
    # 69 / (3 * 10): the constant is the generation budget, not the padded width.
    out = agg_loss(loss, mask, "seq-mean-token-sum-norm", max_response_len=10)
    assert_close(out, torch.tensor(2.3, dtype=F64))
    with pytest.raises(ValueError):
        agg_loss(loss, mask, "seq-mean-token-sum-norm", max_response_len=0)


def test_seq_mean_token_mean_gradient():
    loss, mask = _batch()
    loss.requires_grad_(True)
    agg_loss(loss, mask, "seq-mean-token-mean").backward()
    # d/dl_it = M_it / (|y_i| * N_seq): 1/9 on row 0, 1/3 on row 1, 1/12 on row 3.
    expected = mask * torch.tensor([1 / 9, 1 / 3, 0.0, 1 / 12], dtype=F64)[:, None]
    assert_close(loss.grad, expected)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_all_masked_is_zero_with_finite_grad(mode):
    loss = torch.randn(3, 5, dtype=F64, requires_grad=True)
    mask = torch.zeros(3, 5, dtype=F64)
    out = agg_loss(loss, mask, mode)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(loss.grad, torch.zeros_like(loss))


def test_bool_mask_matches_float_mask():
    loss, mask = _batch()
    for mode in LOSS_AGG_MODES:
        assert_close(agg_loss(loss, mask.bool(), mode), agg_loss(loss, mask, mode))


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_global_counts_make_micro_batches_sum_to_full_batch(mode, as_tensor):
    torch.manual_seed(0)
    loss_full = torch.randn(6, 5, dtype=F64, requires_grad=True)
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]],
        dtype=F64,
    )
    full = agg_loss(loss_full, mask, mode)
    (g_full,) = torch.autograd.grad(full, loss_full)

    n_tok = mask.sum()
    n_seq = (mask.sum(-1) > 0).sum()
    if not as_tensor:
        n_tok, n_seq = int(n_tok), int(n_seq)
    parts = [
        agg_loss(loss_full[rows], mask[rows], mode, global_num_tokens=n_tok, global_num_seqs=n_seq)
        for rows in (slice(0, 3), slice(3, 6))
    ]
    total = parts[0] + parts[1]
    (g_parts,) = torch.autograd.grad(total, loss_full)
    assert_close(total, full, rtol=1e-12, atol=1e-12)
    assert_close(g_parts, g_full, rtol=1e-12, atol=1e-12)


def test_global_counts_clamp_at_one():
    loss = torch.ones(1, 2, dtype=F64)
    mask = torch.ones(1, 2, dtype=F64)
    assert agg_loss(loss, mask, "token-mean", global_num_tokens=0).item() == 2.0
    assert agg_loss(loss, mask * 0, "seq-mean-token-mean", global_num_seqs=0).item() == 0.0


def test_unknown_mode_lists_choices():
    loss, mask = _batch()
    with pytest.raises(ValueError, match="unknown loss_agg_mode") as err:
        agg_loss(loss, mask, "seq-mean")
    for mode in LOSS_AGG_MODES:
        assert mode in str(err.value)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        agg_loss(torch.zeros(2, 3), torch.ones(2, 4), "token-mean")
    with pytest.raises(ValueError):
        agg_loss(torch.zeros(6), torch.ones(6), "token-mean")
