import math

import pytest
import torch
from torch.testing import assert_close

from gspo.algos import compute_grpo_advantages

F64 = torch.float64
EPS = 1e-6
TIGHT = dict(rtol=1e-12, atol=1e-12)


def _case():
    # Non-contiguous groups: id 7 at positions 0, 2, 4; id 3 at 1, 3; id 11 alone at 5.
    scores = torch.tensor([1.0, 2.0, 0.0, 2.0, 0.5, 0.7], dtype=F64)
    ids = torch.tensor([7, 3, 7, 3, 7, 11])
    return scores, ids


def test_hand_values_normalised():
    scores, ids = _case()
    adv = compute_grpo_advantages(scores, ids)
    # group 7: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 -> (±0.5, 0) / (0.5 + eps)
    # group 3: all equal -> exactly 0.  group 11: singleton -> mean 0, std 1 -> 0.7 / (1 + eps)
    expected = torch.tensor(
        [0.5 / (0.5 + EPS), 0.0, -0.5 / (0.5 + EPS), 0.0, 0.0, 0.7 / (1 + EPS)], dtype=F64
    )
    assert_close(adv, expected, **TIGHT)
    assert adv[1].item() == 0.0 and adv[3].item() == 0.0
    assert adv[5].item() == pytest.approx(0.7, abs=1e-6)  # a group of one keeps its raw score


def test_hand_values_not_normalised():
    scores, ids = _case()
    adv = compute_grpo_advantages(scores, ids, norm_adv_by_std=False)
    assert_close(adv, torch.tensor([0.5, 0.0, -0.5, 0.0, 0.0, 0.7], dtype=F64), **TIGHT)


def test_std_is_unbiased():
    # [0, 1]: unbiased std = sqrt(0.5), population std would be 0.5 (giving ±1).
    adv = compute_grpo_advantages(torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([0, 0]), epsilon=0.0)
    assert_close(adv, torch.tensor([-0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)], dtype=F64), **TIGHT)


def test_all_equal_group_is_exactly_zero_despite_rounding():
    # 0.1 * 3 / 3 != 0.1 in binary floating point; the advantage must still be exactly 0.
    scores = torch.tensor([0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], dtype=F64)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert torch.equal(compute_grpo_advantages(scores, ids), torch.zeros(10, dtype=F64))
    assert torch.equal(compute_grpo_advantages(scores, ids, norm_adv_by_std=False), torch.zeros(10, dtype=F64))


def _loop_reference(scores, ids, norm, eps):
    out = torch.empty_like(scores)
    for gid in ids.unique():
        sel = ids == gid
        vals = scores[sel]
        if vals.numel() > 1:
            mean, std = vals.mean(), vals.std()
        else:
            mean, std = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
        out[sel] = (vals - mean) / (std + eps) if norm else vals - mean
    return out


@pytest.mark.parametrize("norm", [True, False])
def test_matches_naive_loop_on_random_shuffled_groups(norm):
    g = torch.Generator().manual_seed(0)
    ids = torch.repeat_interleave(torch.arange(9), torch.tensor([4, 1, 3, 8, 2, 1, 5, 4, 4])) * 13 - 40
    ids = ids[torch.randperm(ids.numel(), generator=g)]
    scores = torch.randn(ids.numel(), generator=g, dtype=F64)
    out = compute_grpo_advantages(scores, ids, norm_adv_by_std=norm)
    assert_close(out, _loop_reference(scores, ids, norm, EPS), **TIGHT)


def test_integer_scores_and_float32_dtype():
    adv = compute_grpo_advantages(torch.tensor([1, 0, 1, 1]), torch.tensor([0, 0, 0, 0]), norm_adv_by_std=False)
    assert adv.dtype == torch.get_default_dtype()
    assert_close(adv, torch.tensor([0.25, -0.75, 0.25, 0.25]))
    adv32 = compute_grpo_advantages(torch.tensor([0.0, 1.0], dtype=torch.float32), torch.tensor([5, 5]))
    assert adv32.dtype == torch.float32


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        compute_grpo_advantages(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        compute_grpo_advantages(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
