import math
import warnings

import pytest
import torch
from torch.testing import assert_close

from gspo.algos import LOSS_AGG_MODES, POLICY_LOSSES, compute_policy_loss, register_policy_loss
from gspo.algos import gspo_loss as gspo_loss_module

F64 = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)
SILENCE_GSPO_LENGTH_WARNING = pytest.mark.filterwarnings("ignore:GSPO with loss_agg_mode")


def _t(rows):
    return torch.tensor(rows, dtype=F64)


# ---------------------------------------------------------------------------- GSPO, by hand


def _gspo_case():
    """Five rows, T = 3, clip range [0.9, 1.05].

    row 0: len 2, log-ratios [0.2, 0.0] -> L = 0.1,  s = e^0.1  = 1.10517 > 1.05, A = +1   -> upper clip
    row 1: len 3, log-ratios [-0.3, -0.3, 0] -> L = -0.2, s = e^-0.2 = 0.81873 < 0.9, A = -2 -> lower clip
    row 2: len 1, log-ratio 0.02 -> s = e^0.02 in range, A = 0.5 -> unclipped
    row 3: fully masked (A = 3 must be ignored)
    row 4: len 2, log-ratios [0.5, 0.5] -> s = e^0.5, A = 0 -> loss 0, not "clipped" (terms equal)
    Padding holds garbage (-inf / 7.0) that must not leak.
    """
    ninf = float("-inf")
    old = _t([[-1.0, -2.0, 7.0], [-0.5, -0.7, -0.9], [-1.2, 7.0, 7.0], [7.0, 7.0, 7.0], [-3.0, -1.0, 7.0]])
    ratio = _t([[0.2, 0.0, 0.0], [-0.3, -0.3, 0.0], [0.02, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    mask = _t([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    log_prob = torch.where(mask.bool(), old + ratio, torch.full_like(old, ninf)).requires_grad_(True)
    adv = _t([[1.0] * 3, [-2.0] * 3, [0.5] * 3, [3.0] * 3, [0.0] * 3])
    return old, log_prob, adv, mask


def test_gspo_hand_values_and_metrics():
    old, log_prob, adv, mask = _gspo_case()
    loss, m = compute_policy_loss(
        old, log_prob, adv, mask, loss_mode="gspo", clip_ratio_low=0.1, clip_ratio_high=0.05
    )
    # per-sequence losses: -1 * 1.05, -(-2) * 0.9, -0.5 * e^0.02, 0; mean over 4 non-empty rows
    expected = (-1.05 + 1.8 - 0.5 * math.exp(0.02) + 0.0) / 4
    assert_close(loss, torch.tensor(expected, dtype=F64), **TIGHT)
    assert m["actor/pg_loss"] == pytest.approx(expected, abs=1e-15)
    # 8 tokens: rows 0 (2 tokens, upper) and 1 (3 tokens, lower) are clipped.
    assert m["actor/pg_clipfrac"] == pytest.approx(5 / 8, abs=1e-15)
    assert m["actor/pg_clipfrac_lower"] == pytest.approx(3 / 8, abs=1e-15)
    assert m["actor/pg_clipfrac_upper"] == pytest.approx(2 / 8, abs=1e-15)
    assert m["actor/pg_clipfrac"] == m["actor/pg_clipfrac_lower"] + m["actor/pg_clipfrac_upper"]
    # ppo_kl = mean(old - new) = -(0.2 - 0.6 + 0.02 + 1.0) / 8
    assert m["actor/ppo_kl"] == pytest.approx(-0.62 / 8, abs=1e-15)
    s = [math.exp(0.1), math.exp(-0.2), math.exp(0.02), math.exp(0.5)]
    assert m["actor/seq_importance_ratio"] == pytest.approx(sum(s) / 4, abs=1e-15)
    assert m["actor/seq_importance_ratio_max"] == pytest.approx(math.exp(0.5), abs=1e-15)
    assert m["actor/seq_importance_ratio_min"] == pytest.approx(math.exp(-0.2), abs=1e-15)
    assert all(type(v) is float for v in m.values())
    assert "actor/pg_clipfrac_dual" not in m

    loss.backward()
    # Only row 2 carries gradient: d/dlogp = -A * s / (|y| * N_seq) = -0.5 e^0.02 / (1 * 4).
    expected_grad = torch.zeros(5, 3, dtype=F64)
    expected_grad[2, 0] = -0.5 * math.exp(0.02) / 4
    assert_close(log_prob.grad, expected_grad, **TIGHT)


def test_gspo_unclipped_gradient_is_sequence_ratio_times_token_grad():
    old, log_prob, adv, mask = _gspo_case()
    loss, m = compute_policy_loss(old, log_prob, adv, mask, clip_ratio_low=10.0, clip_ratio_high=10.0)
    assert m["actor/pg_clipfrac"] == 0.0
    loss.backward()
    # d/dlogp_it = -A_i s_i / (|y_i| * 4) on every response token.
    s = torch.tensor([math.exp(0.1), math.exp(-0.2), math.exp(0.02), 1.0, math.exp(0.5)], dtype=F64)
    lengths = _t([2, 3, 1, 1, 2])
    expected = -adv[:, 0] * s / (lengths * 4)
    assert_close(log_prob.grad, expected[:, None] * mask, **TIGHT)


# ------------------------------------------------------- GSPO vs a direct sequence-level version


def _direct_gspo(old, log_prob, adv_seq, mask, low, high):
    lengths = mask.sum(-1)
    L = ((log_prob - old) * mask).sum(-1) / lengths.clamp(min=1)
    s = torch.exp(L)  # gradient flows through L
    per_seq = torch.maximum(-adv_seq * s, -adv_seq * torch.clamp(s, 1 - low, 1 + high))
    valid = lengths > 0
    return per_seq[valid].mean()


def test_gspo_gradient_matches_direct_sequence_level_implementation():
    g = torch.Generator().manual_seed(1234)
    B, T = 10, 7
    lengths = torch.tensor([7, 1, 3, 0, 5, 2, 6, 4, 7, 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(F64)
    old = -torch.rand(B, T, generator=g, dtype=F64) * 3
    log_prob = (old + 0.08 * torch.randn(B, T, generator=g, dtype=F64)).requires_grad_(True)
    # Advantage signs: agree with the sign of L_i on even rows (those far enough out get clipped,
    # on both sides), disagree on odd rows (never clipped); row 6 has A = 0.
    L = ((log_prob.detach() - old) * mask).sum(-1) / lengths.clamp(min=1)
    alternate = torch.tensor([1.0, -1.0] * (B // 2), dtype=F64)
    adv_seq = torch.rand(B, generator=g, dtype=F64).add(0.5) * torch.sign(L) * alternate
    adv_seq[6] = 0.0
    adv = adv_seq[:, None].expand(B, T).contiguous()
    low, high = 0.015, 0.03

    loss, m = compute_policy_loss(old, log_prob, adv, mask, clip_ratio_low=low, clip_ratio_high=high)
    (grad,) = torch.autograd.grad(loss, log_prob)
    direct = _direct_gspo(old, log_prob, adv_seq, mask, low, high)
    (grad_direct,) = torch.autograd.grad(direct, log_prob)

    assert 0.0 < m["actor/pg_clipfrac"] < 1.0, "the case must mix clipped and unclipped sequences"
    assert m["actor/pg_clipfrac_lower"] > 0 and m["actor/pg_clipfrac_upper"] > 0
    assert_close(loss, direct, **TIGHT)
    assert_close(grad, grad_direct, **TIGHT)


def test_gspo_token_with_per_token_advantages():
    # GSPO-token (Sec. 4.3): grad of l_it wrt logp_it is -A_it * s_i, unclipped; mean over tokens then rows.
    g = torch.Generator().manual_seed(7)
    mask = _t([[1, 1, 1], [1, 1, 0]])
    old = -torch.rand(2, 3, generator=g, dtype=F64)
    log_prob = (old + 0.01 * torch.randn(2, 3, generator=g, dtype=F64)).requires_grad_(True)
    adv = torch.randn(2, 3, generator=g, dtype=F64)
    loss, m = compute_policy_loss(old, log_prob, adv, mask, clip_ratio_low=1.0, clip_ratio_high=1.0)
    loss.backward()
    with torch.no_grad():
        s = torch.exp(((log_prob - old) * mask).sum(-1) / mask.sum(-1))
        expected_loss = ((-adv * s[:, None] * mask).sum(-1) / mask.sum(-1)).mean()
        expected_grad = -adv * s[:, None] * mask / (mask.sum(-1, keepdim=True) * 2)
    assert_close(loss.detach(), expected_loss, **TIGHT)
    assert_close(log_prob.grad, expected_grad, **TIGHT)


# ----------------------------------------------------------------------------- on-policy


def test_gspo_on_policy_ratio_is_one_and_loss_is_minus_mean_advantage():
    g = torch.Generator().manual_seed(3)
    mask = _t([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    old = -torch.rand(4, 4, generator=g, dtype=F64) * 5
    log_prob = old.clone().requires_grad_(True)
    adv_seq = _t([1.5, -0.5, 0.25, 9.0])
    adv = adv_seq[:, None].expand(4, 4)
    loss, m = compute_policy_loss(old, log_prob, adv, mask)
    # s_i == 1 exactly, nothing clipped, loss = -mean of the 3 non-empty rows' advantages.
    assert_close(loss, torch.tensor(-(1.5 - 0.5 + 0.25) / 3, dtype=F64), **TIGHT)
    assert m["actor/seq_importance_ratio"] == 1.0
    assert m["actor/seq_importance_ratio_max"] == 1.0 and m["actor/seq_importance_ratio_min"] == 1.0
    assert m["actor/pg_clipfrac"] == 0.0 and m["actor/ppo_kl"] == 0.0
    loss.backward()
    expected = (-adv_seq / (mask.sum(-1).clamp(min=1) * 3))[:, None] * mask
    assert_close(log_prob.grad, expected, **TIGHT)


# ---------------------------------------------------------------- one-token responses: gspo == vanilla


@pytest.mark.parametrize("loss_agg_mode", ["seq-mean-token-mean", "token-mean"])
@SILENCE_GSPO_LENGTH_WARNING
def test_single_token_responses_gspo_equals_vanilla(loss_agg_mode):
    g = torch.Generator().manual_seed(11)
    B, T = 12, 3
    mask = torch.zeros(B, T, dtype=F64)
    mask[:, 0] = 1.0
    mask[5] = 0.0  # one empty row too
    old = -torch.rand(B, T, generator=g, dtype=F64) * 2
    log_prob = (old + 0.3 * torch.randn(B, T, generator=g, dtype=F64)).requires_grad_(True)
    adv = torch.randn(B, 1, generator=g, dtype=F64).expand(B, T).contiguous()
    kw = dict(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=1e9, loss_agg_mode=loss_agg_mode)

    loss_g, m_g = compute_policy_loss(old, log_prob, adv, mask, loss_mode="gspo", **kw)
    (grad_g,) = torch.autograd.grad(loss_g, log_prob)
    loss_v, m_v = compute_policy_loss(old, log_prob, adv, mask, loss_mode="vanilla", **kw)
    (grad_v,) = torch.autograd.grad(loss_v, log_prob)

    assert 0.0 < m_v["actor/pg_clipfrac"] < 1.0
    assert_close(loss_g, loss_v, **TIGHT)
    assert_close(grad_g, grad_v, **TIGHT)
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/pg_clipfrac_upper", "actor/ppo_kl"):
        assert m_g[key] == pytest.approx(m_v[key], abs=1e-15)


# ----------------------------------------------------------------------- vanilla, by hand


def test_vanilla_hand_values_and_metrics():
    # clip [0.8, 1.28], c = 3, token-mean over 7 tokens.
    # row 0, A = +1: r = 1.5 -> max(-1.5, -1.28) = -1.28 (upper clip); r = 0.5 -> -0.5; r = 1 -> -1
    # row 1, A = -1: r = 0.5 -> max(0.5, 0.8) = 0.8 (lower clip); r = 1.5 -> 1.5; r = 5 -> min(3, 5) = 3 (dual)
    # row 2, A = 0, length 1: 0.   row 3: fully masked.
    # sum = -1.28 - 0.5 - 1 + 0.8 + 1.5 + 3 = 2.52 -> 2.52 / 7 = 0.36
    lr = _t([[math.log(1.5), math.log(0.5), 0.0], [math.log(0.5), math.log(1.5), math.log(5.0)],
             [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = _t([[1, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    old = -torch.ones(4, 3, dtype=F64)
    log_prob = (old + lr).requires_grad_(True)
    adv = _t([[1.0] * 3, [-1.0] * 3, [0.0] * 3, [2.0] * 3])
    loss, m = compute_policy_loss(
        old, log_prob, adv, mask, loss_mode="vanilla", clip_ratio_low=0.2, clip_ratio_high=0.28,
        clip_ratio_c=3.0, loss_agg_mode="token-mean",
    )
    assert_close(loss, torch.tensor(0.36, dtype=F64), **TIGHT)
    assert m["actor/pg_clipfrac"] == pytest.approx(2 / 7, abs=1e-15)
    assert m["actor/pg_clipfrac_lower"] == pytest.approx(1 / 7, abs=1e-15)
    assert m["actor/pg_clipfrac_upper"] == pytest.approx(1 / 7, abs=1e-15)
    assert m["actor/pg_clipfrac_dual"] == pytest.approx(1 / 7, abs=1e-15)
    kl = -(math.log(1.5) + math.log(0.5) + math.log(0.5) + math.log(1.5) + math.log(5.0) + 0.3) / 7
    assert m["actor/ppo_kl"] == pytest.approx(kl, abs=1e-15)
    # Token ratios 1.5, 0.5, 1 | 0.5, 1.5, 5 | e^0.3; sequence ratios are the geometric means per row:
    # 0.75^(1/3), 3.75^(1/3), e^0.3 (row 3 is empty and left out).
    assert m["actor/token_importance_ratio_min"] == pytest.approx(0.5, abs=1e-12)
    assert m["actor/token_importance_ratio_max"] == pytest.approx(5.0, abs=1e-12)
    seq = [0.75 ** (1 / 3), 3.75 ** (1 / 3), math.exp(0.3)]
    assert m["actor/seq_importance_ratio"] == pytest.approx(sum(seq) / 3, abs=1e-12)
    assert m["actor/seq_importance_ratio_min"] == pytest.approx(min(seq), abs=1e-12)
    assert m["actor/seq_importance_ratio_max"] == pytest.approx(max(seq), abs=1e-12)
    loss.backward()
    # d/dlogp = -A r / 7 on unclipped tokens; 0 where clipped, dual-clipped or A = 0.
    expected = _t([[0.0, -0.5 / 7, -1.0 / 7], [0.0, 1.5 / 7, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(log_prob.grad, expected, **TIGHT)


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_vanilla_rejects_clip_ratio_c_not_above_one(c):
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        compute_policy_loss(x, x, x, torch.ones(1, 2), loss_mode="vanilla", clip_ratio_c=c)


# ------------------------------------------------------------------------ extreme ratios


@pytest.mark.parametrize("loss_mode", ["gspo", "vanilla"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_log_ratios_give_finite_loss_and_grad(loss_mode, sign):
    old = torch.zeros(3, 4, dtype=F64)
    log_prob = _t([[60.0, 80.0, 0.0, 0.0], [-900.0, -50.0, -70.0, 0.0], [0.01, 0.0, 0.0, 0.0]]).requires_grad_(True)
    mask = _t([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    adv = torch.full((3, 4), sign, dtype=F64)
    loss, m = compute_policy_loss(
        old, log_prob, adv, mask, loss_mode=loss_mode, clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_prob.grad).all()
    assert all(math.isfinite(v) for v in m.values())
    if loss_mode == "gspo":
        # L_0 = 70 is clamped to 10; L_1 = -340 -> s_1 = e^-340.
        assert m["actor/seq_importance_ratio_max"] == pytest.approx(math.exp(10.0), rel=1e-12)
        if sign < 0:
            # A = -1: row 0 takes the unclipped term -A * e^10; row 1 the clipped 0.8; row 2 e^0.01.
            expected = (math.exp(10.0) + 0.8 + math.exp(0.01)) / 3
            assert_close(loss.detach(), torch.tensor(expected, dtype=F64), **TIGHT)


def test_non_finite_padding_does_not_poison_loss_or_grad():
    old = _t([[-1.0, float("nan")], [-2.0, -1.0]])
    log_prob = _t([[-0.9, float("-inf")], [-2.1, -1.1]]).requires_grad_(True)
    adv = _t([[1.0, float("inf")], [-1.0, -1.0]])
    mask = _t([[1, 0], [1, 1]])
    for mode in ("gspo", "vanilla"):
        loss, m = compute_policy_loss(old, log_prob, adv, mask, loss_mode=mode)
        (grad,) = torch.autograd.grad(loss, log_prob)
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad[0, 1] == 0.0
        assert all(math.isfinite(v) for v in m.values())


# ------------------------------------------------------------------------ degenerate batches


@pytest.mark.parametrize("loss_mode", ["gspo", "vanilla"])
@SILENCE_GSPO_LENGTH_WARNING
def test_all_masked_batch_gives_zero_loss_and_metrics(loss_mode):
    old = -torch.rand(2, 3, dtype=F64)
    log_prob = (old + 1.0).requires_grad_(True)
    adv = torch.ones(2, 3, dtype=F64)
    mask = torch.zeros(2, 3, dtype=F64)
    for agg in LOSS_AGG_MODES:
        loss, m = compute_policy_loss(old, log_prob, adv, mask, loss_mode=loss_mode, loss_agg_mode=agg)
        (grad,) = torch.autograd.grad(loss, log_prob)
        assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
        assert all(v == 0.0 for v in m.values()), m


@SILENCE_GSPO_LENGTH_WARNING
def test_global_counts_pass_through_to_aggregation():
    g = torch.Generator().manual_seed(5)
    mask = _t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    old = -torch.rand(4, 3, generator=g, dtype=F64)
    log_prob = (old + 0.1 * torch.randn(4, 3, generator=g, dtype=F64)).requires_grad_(True)
    adv = torch.randn(4, 1, generator=g, dtype=F64).expand(4, 3)
    for mode in ("gspo", "vanilla"):
        for agg in LOSS_AGG_MODES:
            kw = dict(loss_mode=mode, loss_agg_mode=agg, clip_ratio_low=0.05, clip_ratio_high=0.05)
            full, _ = compute_policy_loss(old, log_prob, adv, mask, **kw)
            # 6 response tokens and 3 non-empty rows in the full batch.
            kw.update(global_num_tokens=6, global_num_seqs=3)
            halves = [
                compute_policy_loss(old[r], log_prob[r], adv[r], mask[r], **kw)[0] for r in (slice(0, 2), slice(2, 4))
            ]
            assert_close(halves[0] + halves[1], full, **TIGHT)


# ------------------------------------------------------------------------------ warnings


def test_length_weighted_gspo_warns_once_per_mode():
    gspo_loss_module._warn_length_weighted_gspo.cache_clear()
    x = torch.zeros(2, 3, dtype=F64)
    mask = torch.ones(2, 3, dtype=F64)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                compute_policy_loss(x, x, x, mask, loss_agg_mode="token-mean")
                compute_policy_loss(x, x, x, mask, loss_agg_mode="seq-mean-token-sum")
                compute_policy_loss(x, x, x, mask, loss_agg_mode="seq-mean-token-sum-norm")
                compute_policy_loss(x, x, x, mask, loss_agg_mode="seq-mean-token-mean")
                compute_policy_loss(x, x, x, mask, loss_mode="vanilla", loss_agg_mode="token-mean")
        messages = [str(w.message) for w in caught]
        assert len(messages) == 3, messages
        for mode in ("'token-mean'", "'seq-mean-token-sum'", "'seq-mean-token-sum-norm'"):
            assert sum(mode in msg for msg in messages) == 1
        assert all(issubclass(w.category, UserWarning) for w in caught)
        assert caught[0].filename == __file__  # stacklevel points at the caller
    finally:
        gspo_loss_module._warn_length_weighted_gspo.cache_clear()


# ------------------------------------------------------------------------- registry/errors


def test_unknown_loss_mode_lists_choices():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="unknown loss_mode") as err:
        compute_policy_loss(x, x, x, torch.ones(1, 2), loss_mode="ppo")
    assert "gspo" in str(err.value) and "vanilla" in str(err.value)


def test_unknown_agg_mode_lists_choices():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="unknown loss_agg_mode") as err:
        compute_policy_loss(x, x, x, torch.ones(1, 2), loss_agg_mode="mean")
    assert all(mode in str(err.value) for mode in LOSS_AGG_MODES)


def test_shape_and_clip_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        compute_policy_loss(x, x, torch.zeros(2, 1), torch.ones(2, 3))
    with pytest.raises(ValueError, match="clip ratios"):
        compute_policy_loss(x, x, x, torch.ones(2, 3), clip_ratio_low=-0.1)


def test_register_custom_policy_loss_and_duplicate():
    """A registered loss returns the per-token loss; compute_policy_loss aggregates it with the global counts and
    passes only the hyper-parameters the loss names (here clip_ratio_high, not clip_ratio_c)."""
    assert {"gspo", "vanilla"} <= set(POLICY_LOSSES)
    seen = {}

    @register_policy_loss("test-constant")
    def constant_loss(old_log_prob, log_prob, advantages, response_mask, *, clip_ratio_high):
        seen["clip_ratio_high"] = clip_ratio_high
        return log_prob * 0 + 42.0, {"actor/extra": torch.tensor(7.0)}

    try:
        x = torch.zeros(1, 2)
        # token-mean over 2 tokens with a global count of 4: 42 * 2 / 4 = 21
        loss, m = compute_policy_loss(x, x, x, torch.ones(1, 2), loss_mode="test-constant",
                                      loss_agg_mode="token-mean", global_num_tokens=4)
        assert loss.item() == 21.0 and m == {"actor/pg_loss": 21.0, "actor/extra": 7.0}
        assert seen == {"clip_ratio_high": 4e-4}
        with pytest.raises(ValueError, match="already registered"):
            register_policy_loss("test-constant")(constant_loss)
    finally:
        POLICY_LOSSES.pop("test-constant")


def test_loss_returning_a_scalar_is_rejected():
    def scalar_loss(old_log_prob, log_prob, advantages, response_mask):
        return log_prob.sum(), {}

    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="per-token"):
        compute_policy_loss(x, x, x, torch.ones(1, 2), loss_mode=scalar_loss)


def test_gspo_does_not_take_clip_ratio_c():
    assert POLICY_LOSSES["gspo"].hyperparameters == ("clip_ratio_low", "clip_ratio_high")
    assert "clip_ratio_c" in POLICY_LOSSES["vanilla"].hyperparameters


def test_float32_inputs_and_bool_mask():
    old = torch.tensor([[-1.0, -2.0]])
    log_prob = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0]])
    loss, m = compute_policy_loss(old, log_prob, adv, torch.tensor([[True, False]]))
    assert loss.dtype == torch.float32 and loss.item() == -1.0
    assert m["actor/seq_importance_ratio"] == 1.0
