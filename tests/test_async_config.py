"""actor_rollout_ref.rollout.mode=async: the staleness bound and the pool layout are checked before anything runs,
each failure naming its key, through load_config and `gspo validate`."""

from __future__ import annotations

import pytest

from gspo.cli import main
from gspo.config import ConfigError
from gspo.config.validation import rollout_pool_size

ASYNC = ["actor_rollout_ref.rollout.mode=async", "actor_rollout_ref.rollout.n_gpus_per_node=1"]


def test_defaults_are_sync_without_a_rollout_pool(make_config):
    cfg = make_config()
    assert cfg.actor_rollout_ref.rollout.mode == "sync"
    assert cfg.async_training.staleness_threshold == 1
    assert rollout_pool_size(cfg) == 0


def test_async_with_a_rollout_pool(make_config):
    cfg = make_config(*ASYNC, "async_training.staleness_threshold=2")
    assert rollout_pool_size(cfg) == 1 and cfg.async_training.staleness_threshold == 2


@pytest.mark.parametrize("overrides, expected", [
    (["actor_rollout_ref.rollout.mode=later"], "actor_rollout_ref.rollout.mode"),
    ([*ASYNC, "async_training.staleness_threshold=-1"], "async_training.staleness_threshold: -1 must be >= 0"),
    ([*ASYNC, "async_training.behav_imp_weight_cap=0"], "async_training.behav_imp_weight_cap"),
    ([*ASYNC, "trainer.n_gpus_per_node=0"], "needs trainer ranks beside it"),
    (["actor_rollout_ref.rollout.n_gpus_per_node=2"], "only actor_rollout_ref.rollout.mode=async uses"),
    ([*ASYNC, "actor_rollout_ref.rollout.nnodes=2", "trainer.n_gpus_per_node=2"],
     "actor_rollout_ref.rollout.n_gpus_per_node: 1 differs from trainer.n_gpus_per_node=2"),
    ([*ASYNC, "actor_rollout_ref.rollout.n_gpus_per_node=-1"], "actor_rollout_ref.rollout.n_gpus_per_node"),
    ([*ASYNC, "algorithm.filter_groups.keep_surplus=true"], "algorithm.filter_groups.max_surplus_age: 1 drops"),
    # A staleness bound without a rollout pool would be read by nothing.
    (["async_training.staleness_threshold=2"], "async_training.staleness_threshold: is read only with a rollout"),
    (["actor_rollout_ref.rollout.mode=async", "async_training.staleness_threshold=0"],
     "async_training.staleness_threshold"),
])
def test_impossible_layouts_are_rejected_naming_the_key(make_config, overrides, expected):
    with pytest.raises(ConfigError) as info:
        make_config(*overrides)
    assert expected in str(info.value)


def test_gspo_validate_rejects_rollout_ranks_without_trainer_ranks(make_config, tiny_model_dir, addition_files,
                                                                   parity_reward, capsys):
    train, val = addition_files
    args = ["validate", f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"custom_reward_function.path={parity_reward}", *ASYNC, "trainer.n_gpus_per_node=0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "trainer.n_gpus_per_node" in err and "actor_rollout_ref.rollout.n_gpus_per_node" in err


def test_torchrun_launch_of_the_two_pools(make_config, monkeypatch):
    """One node: trainer and rollout ranks together. A multi-node launch (NODE_RANK set): node groups, the
    trainer's first, the same processes on each; unequal counts are refused naming both keys."""
    from gspo.cli import torchrun_command

    for name in ("WORLD_SIZE", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    one_node = torchrun_command(make_config(*ASYNC, "trainer.n_gpus_per_node=2"), ["train"])
    assert "--nnodes=1" in one_node and "--nproc_per_node=3" in one_node and "--standalone" in one_node
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    groups = torchrun_command(make_config(*ASYNC, "actor_rollout_ref.rollout.nnodes=2"), ["train"])
    assert "--nnodes=3" in groups and "--nproc_per_node=1" in groups and "--node_rank=1" in groups
    with pytest.raises(ConfigError, match="actor_rollout_ref.rollout.n_gpus_per_node=1 differs from trainer"):
        torchrun_command(make_config(*ASYNC, "trainer.n_gpus_per_node=2"), ["train"])
