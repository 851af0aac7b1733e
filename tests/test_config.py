"""The schema, YAML + override layering, and validation messages that name the key."""

from __future__ import annotations

import pytest

from gspo.config import ConfigError, GSPOConfig, load_config, to_yaml

SEED_OVERRIDES = [
    "algorithm.filter_groups.enable=true",
    "algorithm.filter_groups.metric=seq_reward",
    "algorithm.filter_groups.max_num_gen_batches=5",
    "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
    "actor_rollout_ref.actor.clip_ratio_low=0.0003",
    "actor_rollout_ref.actor.clip_ratio_high=0.0004",
    "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
    "actor_rollout_ref.rollout.n=8",
    "data.train_batch_size=16",
    "data.gen_batch_size=32",
    "trainer.total_training_steps=10",
]


def test_without_a_preset_the_defaults_are_the_dataclass_defaults():
    expected = GSPOConfig()
    expected.trainer.default_local_dir = "checkpoints/verl_examples/gsm8k"  # verl's layout, derived when null
    assert load_config(None, [], preset="none") == expected


def test_no_model_path_selects_the_addition_preset_the_embedded_default_run():
    cfg = load_config()
    assert cfg == load_config(None, [], preset="addition")
    assert cfg.actor_rollout_ref.model.path == "embedded://addition"
    assert (cfg.data.train_batch_size, cfg.data.gen_batch_size, cfg.trainer.total_training_steps) == (32, 48, 150)
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (16, 6)
    assert cfg.algorithm.filter_groups.enable and cfg.algorithm.filter_groups.max_num_gen_batches == 10
    assert cfg.trainer.default_local_dir == "outputs/gspo-addition"


def test_seed_override_line_is_valid_verbatim():
    cfg = load_config(None, SEED_OVERRIDES)
    assert cfg.algorithm.filter_groups.enable is True
    assert cfg.algorithm.filter_groups.metric == "seq_reward"
    assert cfg.algorithm.filter_groups.max_num_gen_batches == 5
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "gspo"
    assert cfg.actor_rollout_ref.actor.clip_ratio_low == 3e-4
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == 4e-4
    assert cfg.actor_rollout_ref.rollout.n == 8
    assert (cfg.data.train_batch_size, cfg.data.gen_batch_size, cfg.trainer.total_training_steps) == (16, 32, 10)


def test_yaml_then_overrides_last_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train_batch_size: 8\nactor_rollout_ref:\n  rollout:\n    n: 4\n")
    cfg = load_config(path, ["actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=8"])
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n) == (8, 2)


def test_scientific_notation_and_lists_and_null():
    cfg = load_config(
        None,
        [
            "actor_rollout_ref.actor.optim.lr=1e-6",
            "data.train_files=[a.jsonl,b.parquet]",
            "trainer.total_training_steps=null",
            "trainer.logger=[console,tensorboard]",
        ],
    )
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
    assert cfg.data.train_files == ["a.jsonl", "b.parquet"]
    assert cfg.trainer.total_training_steps is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm.filter_groups.enabel=true", "did you mean 'algorithm.filter_groups.enable'"),
        ("actor_rollout_ref.actor.clip_ratio=0.2", "did you mean 'actor_rollout_ref.actor.clip_ratio_c'"),
        ("trainer.epochs=3", "unknown config key 'trainer.epochs'"),
        ("actor_rollout_ref.rollout.n=abc", "actor_rollout_ref.rollout.n: cannot take 'abc'"),
        ("algorithm.filter_groups.enable=maybe", "algorithm.filter_groups.enable: cannot take 'maybe'"),
        (
            "actor_rollout_ref.actor.clip_ratio_low=1.5",
            "actor_rollout_ref.actor.clip_ratio_low: 1.5 must lie in (0, 1)",
        ),
        (
            "actor_rollout_ref.actor.clip_ratio_high=0",
            "actor_rollout_ref.actor.clip_ratio_high: 0.0 must lie in (0, 1)",
        ),
        ("actor_rollout_ref.rollout.n=0", "actor_rollout_ref.rollout.n: 0 must be >= 1"),
        ("algorithm.filter_groups.metric=reward", "algorithm.filter_groups.metric: 'reward' is not one of seq_reward"),
        ("actor_rollout_ref.actor.policy_loss.loss_mode=ppo", "loss_mode: 'ppo' is not one of gspo, vanilla"),
        ("actor_rollout_ref.actor.loss_agg_mode=mean", "loss_agg_mode: 'mean' is not one of token-mean"),
        (
            "actor_rollout_ref.actor.ppo_mini_batch_size=5",
            "ppo_mini_batch_size: 5 must divide data.train_batch_size=32",
        ),
        ("actor_rollout_ref.actor.kl_loss_type=k9", "kl_loss_type: 'k9' is not one of"),
        ("trainer.logger=[neptune]", "trainer.logger: 'neptune' is not one of console, tensorboard, wandb, mlflow"),
        ("trainer.resume_mode=resume_path", "trainer.resume_from_path: is required"),
        ("trainer.device=tpu", "trainer.device: 'tpu' is not one of auto, cpu, cuda"),
        ("reward_model.on_error=ignore", "reward_model.on_error: 'ignore' is not one of raise, zero"),
        ("data.gen_batch_size=0", "data.gen_batch_size: must be >= 1"),
        ("no_equals_sign", "is not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, expected):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_overlong_buffer_longer_than_responses_is_rejected():
    with pytest.raises(ConfigError, match="reward_model.overlong_buffer.len: 64 must lie in"):
        load_config(None, ["reward_model.overlong_buffer.enable=true", "reward_model.overlong_buffer.len=64"])


@pytest.mark.parametrize("overrides, expected", [
    (["algorithm.filter_groups.prefilter.probe_responses=1"],
     "algorithm.filter_groups.prefilter.probe_responses: probes the prompts the prefilter would skip: set "
     "algorithm.filter_groups.prefilter.enable=true too"),
    (["algorithm.filter_groups.prefilter.enable=true", "algorithm.filter_groups.prefilter.probe_responses=8",
      "actor_rollout_ref.rollout.n=8"],
     "algorithm.filter_groups.prefilter.probe_responses: must lie in [0, actor_rollout_ref.rollout.n=8)"),
])
def test_probe_responses_needs_the_prefilter_and_fewer_than_n(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)


@pytest.mark.parametrize("name", ["readmit_prob", "failed_readmit_prob"])
def test_a_prefilter_that_could_skip_every_prompt_is_rejected(name):
    prefilter = ["algorithm.filter_groups.prefilter.enable=true", f"algorithm.filter_groups.prefilter.{name}=0.0"]
    with pytest.raises(ConfigError) as info:
        load_config(None, prefilter)
    assert str(info.value).startswith(f"algorithm.filter_groups.prefilter.{name}: 0.0 never lets a skipped prompt "
                                      f"come back")
    assert "algorithm.filter_groups.prefilter.probe_responses >= 1" in str(info.value)
    load_config(None, [*prefilter, "algorithm.filter_groups.prefilter.probe_responses=1"])  # probes bring them back


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train_batch_size: 8\nalgorithm:\n  filter_groups:\n    enabled: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:5" in str(info.value) and "did you mean 'algorithm.filter_groups.enable'" in str(info.value)
    path.write_text("actor_rollout_ref:\n  rollout:\n    n: many\n")
    with pytest.raises(ConfigError, match=rf"actor_rollout_ref.rollout.n: cannot take 'many' \({path}:3\)"):
        load_config(path)


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, SEED_OVERRIDES)
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_recipe_config_is_valid():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipe" / "gspo" / "config" / "gspo_dynamic_sampling.yaml"
    cfg = load_config(recipe)
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "gspo"
    assert cfg.algorithm.filter_groups.enable


def test_generation_batches_that_cannot_fill_a_step_are_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"algorithm\.filter_groups\.max_num_gen_batches: data\.gen_batch_size=48 x "
                                          r"algorithm\.filter_groups\.max_num_gen_batches=10 = 480 prompts per step "
                                          r"can never fill data\.train_batch_size=512"):
        load_config(None, ["data.train_batch_size=512", "actor_rollout_ref.actor.ppo_mini_batch_size=16"])
    # Unlimited batches, adaptive sizing or no dynamic sampling can always fill it.
    for way_out in ("algorithm.filter_groups.max_num_gen_batches=0",
                    "algorithm.filter_groups.adaptive_gen_batch_size=true", "algorithm.filter_groups.enable=false"):
        load_config(None, ["data.train_batch_size=512", "actor_rollout_ref.actor.ppo_mini_batch_size=16", way_out])


def test_a_preset_run_folder_gives_way_to_a_named_experiment():
    assert load_config().trainer.default_local_dir == "outputs/gspo-addition"
    named = load_config(None, ["trainer.experiment_name=mine"])
    assert named.trainer.default_local_dir == "checkpoints/gspo/mine"
    verl = load_config(None, ["trainer.project_name=p", "trainer.experiment_name=e"], preset="none")
    assert verl.trainer.default_local_dir == "checkpoints/p/e"
