"""The actor update: micro-batching (fixed or packed by tokens), logits chunking and the on-policy shortcut
leave the update unchanged."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from gspo.config import ActorConfig
from gspo.distributed import DistContext
from gspo.model.loading import enable_activation_checkpointing
from gspo.trainer.actor import compute_log_probs, even_out, forward_response, update_policy
from gspo.trainer.batch import RolloutBatch
from gspo.trainer.update_context import UpdateContext


@pytest.fixture
def batch_and_model(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    n, groups, prompt_len, response_len = 3, 2, 4, 5
    rows = n * groups
    response_mask = torch.ones(rows, response_len)
    for row, length in enumerate([5, 1, 3, 2, 4, 5]):  # ragged, including a length-1 response
        response_mask[row, length:] = 0
    prompt_mask = torch.ones(groups, prompt_len, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding on the first group's prompt
    prompt_ids = torch.randint(3, 15, (groups, prompt_len)) * prompt_mask
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)  # n per group
    batch = RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                         response_ids=(torch.randint(3, 15, (rows, response_len)) * response_mask).long(),
                         response_mask=response_mask, group_ids=torch.arange(groups).repeat_interleave(n),
                         prompt_index=torch.arange(groups).repeat_interleave(n),
                         advantages=torch.tensor([1.0, -0.5, -0.5, 0.7, -1.2, 0.5], dtype=torch.float64))
    return batch, model


def _updated(model, batch, **cfg_overrides):
    model = copy.deepcopy(model)
    # Exactness tests of micro-batching / packing / checkpointing run the plain forward; the shared-prompt forward
    # is compared with it separately (it reorders float sums, so it agrees to ~1e-8 relative, not bit for bit).
    cfg = replace(ActorConfig(), **{"ppo_mini_batch_size": 2, "grad_clip": 1e9, "share_prompt_forward": False,
                                    **cfg_overrides})
    context = UpdateContext(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), actor=cfg,
                            responses_per_prompt=3, temperature=1.0, max_response_length=5)
    return model, update_policy(batch, context)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batching_gives_the_full_batch_update(batch_and_model, agg):
    batch, model = batch_and_model
    _assert_same_update(_updated(model, batch, ppo_micro_batch_size_per_gpu=6, loss_agg_mode=agg),
                        _updated(model, batch, ppo_micro_batch_size_per_gpu=4, loss_agg_mode=agg),
                        rtol=1e-10)


def test_gradient_checkpointing_gives_the_same_update(batch_and_model):
    batch, model = batch_and_model
    plain, _ = _updated(model, batch)
    checkpointed = copy.deepcopy(model)
    enable_activation_checkpointing(checkpointed)
    recomputed, _ = _updated(checkpointed, batch)
    for a, b in zip(plain.parameters(), recomputed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_on_policy_shortcut_equals_explicit_old_log_probs(batch_and_model):
    batch, model = batch_and_model
    with_old = replace(batch, old_log_probs=compute_log_probs(model, batch, micro_batch_size=4, temperature=1.0,
                                                              autocast_dtype=None))
    shortcut, _ = _updated(model, batch)
    explicit, metrics = _updated(model, with_old)
    for a, b in zip(shortcut.parameters(), explicit.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert metrics["actor/seq_importance_ratio"] == pytest.approx(1.0, abs=1e-9)


def _off_policy(batch, model):
    """Old and reference log-probs from the starting model: with two epochs the second sees ratios != 1."""
    old = compute_log_probs(model, batch, micro_batch_size=6, temperature=1.0, autocast_dtype=None)
    return replace(batch, old_log_probs=old, ref_log_probs=old - 0.05 * batch.response_mask)


_LEAN = dict(ppo_mini_batch_size=1, ppo_epochs=2, entropy_coeff=0.01, use_kl_loss=True, kl_loss_coef=0.1,
             ppo_micro_batch_size_per_gpu=6, clip_ratio_low=0.2, clip_ratio_high=0.2)


def _assert_same_update(expected, actual, rtol=1e-9, atol=1e-12):
    """Two ``_updated`` results: the same parameters and the same metrics."""
    (model_a, metrics_a), (model_b, metrics_b) = expected, actual
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=name)
    assert metrics_a.keys() == metrics_b.keys()
    for name, value in metrics_a.items():
        assert metrics_b[name] == pytest.approx(value, rel=rtol, abs=atol), name


# Real lengths (prompt + response) are 7, 5, 7, 6, 8, 9: a budget of 9 forces one sequence per micro-batch (row 0
# alone then loses two prompt columns, row 1 four response columns), 16 packs pairs, 64 takes a mini-batch whole.
@pytest.mark.parametrize("max_tokens", [9, 16, 64])
def test_packed_micro_batches_give_the_same_update(batch_and_model, max_tokens):
    batch, model = batch_and_model
    batch = _off_policy(batch, model)
    fixed = _updated(model, batch, **_LEAN)
    packed = _updated(model, batch, **_LEAN, use_dynamic_bsz=True, ppo_max_token_len_per_gpu=max_tokens)
    _assert_same_update(fixed, packed)
    assert fixed[1]["actor/seq_importance_ratio"] != pytest.approx(1.0, abs=1e-6)  # the off-policy path ran


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_packing_is_exact_for_every_aggregation(batch_and_model, agg):
    batch, model = batch_and_model
    fixed = _updated(model, batch, loss_agg_mode=agg, ppo_micro_batch_size_per_gpu=4)
    packed = _updated(model, batch, loss_agg_mode=agg, use_dynamic_bsz=True, ppo_max_token_len_per_gpu=30)
    _assert_same_update(fixed, packed)


@pytest.mark.parametrize("max_tokens", [9, 16, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_compute_log_probs_returns_the_same_tensor(batch_and_model, max_tokens, temperature):
    batch, model = batch_and_model
    common = dict(micro_batch_size=4, temperature=temperature, autocast_dtype=None)
    fixed = compute_log_probs(model, batch, **common)
    packed = compute_log_probs(model, batch, **common, max_token_len=max_tokens)
    assert packed.shape == batch.response_mask.shape
    torch.testing.assert_close(packed, fixed, rtol=1e-10, atol=1e-12)
    assert (packed[batch.response_mask == 0] == 0).all()
    # The in-place temperature of the no-grad path matches the autograd path.
    with torch.enable_grad():
        reference, _ = forward_response(model, batch, temperature=temperature, autocast_dtype=None, with_entropy=False)
    torch.testing.assert_close(fixed, reference.detach() * batch.response_mask, rtol=1e-10, atol=1e-12)


def test_chunked_logits_give_the_same_loss_and_gradients(batch_and_model):
    batch, model = batch_and_model
    batch = _off_policy(batch, model)
    plain = _updated(model, batch, **_LEAN)
    chunked = _updated(model, batch, **_LEAN, logits_chunk_size=7)  # 7 does not divide the N*R = 30 positions
    _assert_same_update(plain, chunked)
    both = _updated(model, batch, **_LEAN, logits_chunk_size=2, use_dynamic_bsz=True, ppo_max_token_len_per_gpu=16)
    _assert_same_update(plain, both)


def test_chunked_log_probs_and_entropy_match_plain(batch_and_model):
    batch, model = batch_and_model
    grads = []
    for chunk in (0, 4):
        model.zero_grad(set_to_none=True)
        log_probs, entropy = forward_response(model, batch, temperature=0.8, autocast_dtype=None, with_entropy=True,
                                              logits_chunk_size=chunk)
        ((log_probs * batch.response_mask).sum() + (entropy * batch.response_mask).sum()).backward()
        grads.append((log_probs.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]))
    (lp_a, ent_a, grad_a), (lp_b, ent_b, grad_b) = grads
    torch.testing.assert_close(lp_a, lp_b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ent_a, ent_b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@dataclass(frozen=True)
class _PeerHasTwoMoreMicroBatches(DistContext):
    """A rank whose peer packed two more micro-batches (what all_reduce_max would report under FSDP)."""

    world_size: int = 2

    def all_reduce_max(self, value: int) -> int:
        return value + 2


def test_even_out_pads_with_discarded_one_row_micro_batches(batch_and_model):
    batch, _ = batch_and_model
    micro_batches = batch.split(4)
    pairs = even_out(micro_batches, _PeerHasTwoMoreMicroBatches())
    assert [is_real for _, is_real in pairs] == [True, True, False, False]
    assert all(micro.num_sequences == 1 for micro, is_real in pairs if not is_real)
    assert even_out(micro_batches, DistContext()) == [(m, True) for m in micro_batches]


@pytest.mark.parametrize("max_tokens", [None, 18])
def test_extra_forwards_for_peers_leave_log_probs_unchanged(batch_and_model, max_tokens):
    batch, model = batch_and_model
    common = dict(micro_batch_size=4, temperature=1.0, autocast_dtype=None, max_token_len=max_tokens)
    alone = compute_log_probs(model, batch, **common)
    padded = compute_log_probs(model, batch, **common, dist=_PeerHasTwoMoreMicroBatches())
    assert torch.equal(alone, padded)


def test_first_mini_batch_needs_no_old_log_probs(batch_and_model):
    # Two mini-batches of one group: the first is taken before any optimizer step, so its old log-probs are the
    # current ones; NaN there must never be read, and the update equals the one with every old log-prob given.
    batch, model = batch_and_model
    old = compute_log_probs(model, batch, micro_batch_size=4, temperature=1.0, autocast_dtype=None)
    partial = old.clone()
    partial[:3] = float("nan")
    explicit, explicit_metrics = _updated(model, replace(batch, old_log_probs=old), ppo_mini_batch_size=1,
                                          clip_ratio_low=0.2, clip_ratio_high=0.2)
    skipped, skipped_metrics = _updated(model, replace(batch, old_log_probs=partial), ppo_mini_batch_size=1,
                                        clip_ratio_low=0.2, clip_ratio_high=0.2)
    assert explicit_metrics["actor/num_updates"] == 2.0
    for a, b in zip(explicit.parameters(), skipped.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert skipped_metrics["actor/pg_loss"] == pytest.approx(explicit_metrics["actor/pg_loss"], rel=1e-9)


@pytest.mark.parametrize("order", ["grouped", "shuffled"])
def test_shared_prompt_forward_gives_the_same_log_probs_and_gradients(batch_and_model, order):
    # Each group's prompt encoded once vs every row's full sequence; rows in any order (packing reorders them).
    from gspo.trainer.shared_prefix import can_share_prompts

    batch, model = batch_and_model
    if order == "shuffled":
        batch = batch.select(torch.tensor([4, 0, 5, 2, 1, 3]))
    assert can_share_prompts(model, batch)
    results = []
    for share in (False, True):
        model.zero_grad()
        log_probs, _ = forward_response(model, batch, temperature=0.7, autocast_dtype=None, with_entropy=False,
                                        share_prompts=share)
        (log_probs * batch.response_mask * batch.advantages[:, None]).sum().backward()
        results.append((log_probs.detach(), [p.grad.clone() for p in model.parameters()]))
    (plain, plain_grads), (shared, shared_grads) = results
    mask = batch.response_mask.bool()
    torch.testing.assert_close(shared[mask], plain[mask], rtol=1e-9, atol=1e-12)
    # Attention's internals keep float32 precision in places even for a float64 model, and the shared prompt
    # sums its n rows' gradients in a different order: agreement is ~1e-8 relative, a wrong gradient is O(1).
    for a, b in zip(plain_grads, shared_grads):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)  # gradients reach ~30


def test_shared_prompt_forward_handles_one_token_responses_and_declines_mixed_prompts(batch_and_model):
    from gspo.trainer.shared_prefix import can_share_prompts

    batch, model = batch_and_model
    one_token = replace(batch, response_ids=batch.response_ids[:, :1], response_mask=batch.response_mask[:, :1])
    plain = forward_response(model, one_token, temperature=1.0, autocast_dtype=None, with_entropy=False)[0]
    shared = forward_response(model, one_token, temperature=1.0, autocast_dtype=None, with_entropy=False,
                              share_prompts=True)[0]
    torch.testing.assert_close(shared, plain, rtol=1e-9, atol=1e-12)
    two_passes = forward_response(model, one_token, temperature=1.0, autocast_dtype=None, with_entropy=False,
                                  share_prompts=True, uniform_passes=True)[0]  # FSDP: same passes on every rank
    torch.testing.assert_close(two_passes, plain, rtol=1e-9, atol=1e-12)
    mixed = replace(batch, prompt_ids=batch.prompt_ids.roll(1, 0))  # a group whose rows carry different prompts
    assert not can_share_prompts(model, mixed)
    assert not can_share_prompts(model, batch.select(torch.tensor([0, 3])))  # one row per group: nothing to share


def test_shared_prompt_update_equals_the_plain_update(batch_and_model):
    batch, model = batch_and_model
    _assert_same_update(_updated(model, batch, ppo_mini_batch_size=1, share_prompt_forward=False),
                        _updated(model, batch, ppo_mini_batch_size=1, share_prompt_forward=True),
                        rtol=1e-6, atol=1e-6)


def test_entropy_checkpointing_gives_the_same_update_with_an_entropy_bonus(batch_and_model):
    batch, model = batch_and_model
    batch = _off_policy(batch, model)
    plain = _updated(model, batch, entropy_coeff=0.01)
    recomputed = _updated(model, batch, entropy_coeff=0.01, entropy_checkpointing=True, logits_chunk_size=4)
    _assert_same_update(plain, recomputed)
