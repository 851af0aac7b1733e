"""A policy loss loaded from a file (actor_rollout_ref.actor.policy_loss.path / name), as custom rewards are."""

from __future__ import annotations

import pytest
import torch

from gspo.config import ConfigError
from gspo.trainer import Trainer
from gspo.trainer.preflight import build_policy_loss

# The built-in GSPO loss re-exported from a user file: the update must be the same number for number.
GSPO_COPY = """
from gspo.algos import compute_policy_loss_gspo

def my_loss(old_log_prob, log_prob, advantages, response_mask, *, clip_ratio_low, clip_ratio_high):
    return compute_policy_loss_gspo(old_log_prob, log_prob, advantages, response_mask,
                                    clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high)
"""


@pytest.fixture
def loss_file(tmp_path):
    path = tmp_path / "my_loss.py"
    path.write_text(GSPO_COPY)
    return path


def test_loss_from_file_trains_like_the_builtin(make_config, loss_file):
    custom = Trainer(make_config(f"actor_rollout_ref.actor.policy_loss.path={loss_file}",
                                 "actor_rollout_ref.actor.policy_loss.name=my_loss",
                                 "actor_rollout_ref.actor.policy_loss.loss_mode=my_gspo"))
    got = custom.train_step()
    builtin = Trainer(make_config())
    want = builtin.train_step()
    assert got["actor/pg_loss"] == want["actor/pg_loss"]
    for a, b in zip(custom.model.parameters(), builtin.model.parameters()):
        assert torch.equal(a, b)


def test_loss_file_errors_name_the_key(make_config, loss_file, tmp_path):
    with pytest.raises(ConfigError, match="policy_loss.loss_mode: 'gspo' is a built-in loss"):
        make_config(f"actor_rollout_ref.actor.policy_loss.path={loss_file}")
    cfg = make_config(f"actor_rollout_ref.actor.policy_loss.path={loss_file}",
                      "actor_rollout_ref.actor.policy_loss.loss_mode=mine")
    with pytest.raises(ConfigError, match=r"policy_loss.path: policy loss file .* has no function "
                                          r"'compute_policy_loss'; callables in it: \['compute_policy_loss_gspo', "
                                          r"'my_loss'\]"):
        build_policy_loss(cfg)
    missing = make_config(f"actor_rollout_ref.actor.policy_loss.path={tmp_path / 'nope.py'}",
                          "actor_rollout_ref.actor.policy_loss.loss_mode=mine")
    with pytest.raises(ConfigError, match="policy loss file not found"):
        build_policy_loss(missing)
