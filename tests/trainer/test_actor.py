"""The actor update: micro-batching and the on-policy shortcut leave the update unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from gspo.config import ActorConfig
from gspo.models import enable_activation_checkpointing
from gspo.trainer.actor import compute_log_probs, update_policy
from gspo.trainer.batch import RolloutBatch


@pytest.fixture
def batch_and_model(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    n, groups, prompt_len, response_len = 3, 2, 4, 5
    rows = n * groups
    response_mask = torch.ones(rows, response_len)
    for row, length in enumerate([5, 1, 3, 2, 4, 5]):  # ragged, including a length-1 response
        response_mask[row, length:] = 0
    prompt_mask = torch.ones(rows, prompt_len, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding on one row
    batch = RolloutBatch(prompt_ids=torch.randint(3, 15, (rows, prompt_len)) * prompt_mask, prompt_mask=prompt_mask,
                         response_ids=(torch.randint(3, 15, (rows, response_len)) * response_mask).long(),
                         response_mask=response_mask, group_ids=torch.arange(groups).repeat_interleave(n),
                         prompt_index=torch.arange(groups).repeat_interleave(n),
                         advantages=torch.tensor([1.0, -0.5, -0.5, 0.7, -1.2, 0.5], dtype=torch.float64))
    return batch, model


def _updated(model, batch, **cfg_overrides):
    model = copy.deepcopy(model)
    cfg = replace(ActorConfig(), **{"ppo_mini_batch_size": 2, "grad_clip": 1e9, **cfg_overrides})
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    metrics = update_policy(model, optimizer, batch, cfg, n=3, temperature=1.0, autocast_dtype=None,
                            max_response_length=5)
    return model, metrics


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batching_gives_the_full_batch_update(batch_and_model, agg):
    batch, model = batch_and_model
    full, full_metrics = _updated(model, batch, ppo_micro_batch_size_per_gpu=6, loss_agg_mode=agg)
    micro, micro_metrics = _updated(model, batch, ppo_micro_batch_size_per_gpu=4, loss_agg_mode=agg)
    for (name, a), b in zip(full.named_parameters(), micro.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert full_metrics["actor/pg_loss"] == pytest.approx(micro_metrics["actor/pg_loss"], rel=1e-10)


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
