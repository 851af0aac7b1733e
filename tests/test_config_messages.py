"""Keys are discoverable (`gspo config`) and mistakes get one line naming the key and what to write instead."""

from __future__ import annotations

import pytest

from gspo.cli import main
from gspo.config import ConfigError, load_config
from gspo.config_docs import describe_schema, format_keys
from gspo.verl_compat import VERL_KEYS


def test_every_schema_key_has_a_type_default_and_description():
    docs = describe_schema()
    assert len(docs) > 80
    missing = [d.key for d in docs if not d.doc]
    assert missing == [], f"document these keys with a comment above the field in gspo/config/schema.py: {missing}"
    by_key = {d.key: d for d in docs}
    assert by_key["actor_rollout_ref.actor.clip_ratio_low"].default == 0.2  # verl's; GSPO's 3e-4 is derived
    assert by_key["trainer.total_training_steps"].type == "int | None"


def test_gspo_config_lists_schema_and_verl_keys(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for doc in describe_schema():
        assert doc.key in out
    for entry in VERL_KEYS:
        assert entry.key in out
    assert "Lower clip range of the importance ratio" in format_keys("clip_ratio_low")
    assert "(verl: 0.2; differs because GSPO's sequence ratios" in format_keys("clip_ratio_low")
    assert "(verl:" not in format_keys("clip_ratio_c")  # at verl's default: no mark
    assert format_keys("no_such_key_anywhere") == "no key contains 'no_such_key_anywhere'"


def _error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    return str(info.value)


def test_a_bare_path_is_a_one_file_list():
    assert load_config(None, ["data.train_files=/data/train.parquet"]).data.train_files == ["/data/train.parquet"]
    assert load_config(None, ["trainer.logger=console"]).trainer.logger == ["console"]


def test_type_errors_say_the_expected_type_and_an_example():
    message = _error("data.train_batch_size=lots")
    assert message.startswith("data.train_batch_size: cannot take 'lots' (command line (data.train_batch_size=lots))")
    assert "expected an integer, e.g. data.train_batch_size=1024" in message
    assert "Value 'lots'" not in message  # OmegaConf's own wording stays out
    assert "expected true or false" in _error("data.shuffle=maybe")


def test_misspelt_choices_get_a_did_you_mean():
    message = _error("actor_rollout_ref.actor.loss_agg_mode=token_mean")
    assert "did you mean actor_rollout_ref.actor.loss_agg_mode=token-mean?" in message


def test_hydra_plus_prefixes_are_overrides_and_delete_is_refused():
    assert load_config(None, ["+data.train_batch_size=16", "++data.gen_batch_size=16"]).data.train_batch_size == 16
    assert "Hydra's ~key (delete) is not supported" in _error("~data.shuffle")


def test_project_and_experiment_name_give_verls_run_folder():
    cfg = load_config(None, ["trainer.project_name=RL-GSPO", "trainer.experiment_name=gspo-3b"])
    assert cfg.trainer.default_local_dir == "checkpoints/RL-GSPO/gspo-3b"
    cfg = load_config(None, ["trainer.experiment_name=x", "trainer.default_local_dir=/tmp/mine"])
    assert cfg.trainer.default_local_dir == "/tmp/mine"
    assert load_config(None, []).trainer.default_local_dir == "outputs/gspo-addition"


# --------------------------------------------------------------------------------------------- verl keys
@pytest.mark.parametrize("override", [
    "data.truncation=error",
    "algorithm.use_kl_in_reward=false",
    "algorithm.kl_ctrl.kl_coef=0.0",
    "actor_rollout_ref.model.use_remove_padding=true",
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size=1",
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size=1",
    "actor_rollout_ref.actor.fsdp_config.fsdp_size=-1",
    "actor_rollout_ref.ref.fsdp_config.param_offload=false",
    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=false",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=false",
    "reward_model.enable=false",
    "reward_model.reward_manager=dapo",
    "reward_model.reward_manager=naive",
    "+reward_model.reward_kwargs.overlong_buffer_cfg.log=false",
    "+reward_model.reward_kwargs.max_resp_len=6",
])
def test_verl_no_op_keys_are_accepted(override):
    load_config(None, [override])


@pytest.mark.parametrize("override, expected", [
    ("data.truncation=left", "prompts are never cut here"),
    ("algorithm.use_kl_in_reward=true", "use actor_rollout_ref.actor.use_kl_loss=true"),
    ("actor_rollout_ref.model.use_remove_padding=false", "rows are not unpadded here: attention is dense"),
    ("actor_rollout_ref.actor.ulysses_sequence_parallel_size=4", "sequence parallelism (Ulysses) is not implemented"),
    ("actor_rollout_ref.actor.fsdp_config.fsdp_size=8", "hybrid sharding is not implemented"),
    ("actor_rollout_ref.ref.fsdp_config.param_offload=true",
     "set actor_rollout_ref.actor.fsdp_config.param_offload=false to match"),
    ("actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true", "set actor_rollout_ref.actor.use_dynamic_bsz=false"),
    ("reward_model.reward_manager=prime", "reward manager 'prime' is not implemented"),
    ("reward_model.enable=true", "model-based rewards are not implemented"),
    ("+actor_rollout_ref.model.override_config.max_position_embeddings=32768", "edit config.json"),
    ("+reward_model.reward_kwargs.max_resp_len=99", "set data.max_response_length=99"),
])
def test_verl_keys_we_do_not_implement_fail_naming_key_and_alternative(override, expected):
    message = _error(override)
    key = override.lstrip("+").split("=")[0]
    assert message.startswith(f"{key}=") and f"({'command line'} ({override}))" in message
    assert expected in message


def test_verl_overlong_buffer_cfg_maps_to_our_buffer():
    cfg = load_config(None, ["data.max_response_length=8", "reward_model.reward_manager=dapo",
                             "+reward_model.reward_kwargs.overlong_buffer_cfg.enable=true",
                             "+reward_model.reward_kwargs.overlong_buffer_cfg.len=4",
                             "+reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=0.5",
                             "+reward_model.reward_kwargs.max_resp_len=8"])
    buffer = cfg.reward_model.overlong_buffer
    assert (buffer.enable, buffer.len, buffer.penalty_factor) == (True, 4, 0.5)
    assert "naive manager has no overlong shaping" in _error(
        "reward_model.reward_manager=naive", "+reward_model.reward_kwargs.overlong_buffer_cfg.enable=true")


def test_verl_log_prob_token_budgets_map_to_one_key_and_must_agree():
    cfg = load_config(None, ["actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=300",
                             "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=300"])
    assert cfg.actor_rollout_ref.actor.log_prob_max_token_len_per_gpu == 300
    assert "give them one value" in _error("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=300",
                                           "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=200")


def test_verl_keys_in_a_yaml_file_cite_the_line(tmp_path):
    path = tmp_path / "verl.yaml"
    path.write_text("data:\n  truncation: right\n")
    with pytest.raises(ConfigError, match=rf"data.truncation='right' \({path}:2\): prompts are never cut"):
        load_config(path, [])


def test_lr_warmup_steps_wins_over_the_ratio():
    import torch

    from gspo.config import OptimConfig
    from gspo.trainer.optim import build_scheduler

    def lrs(cfg: OptimConfig) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_scheduler(opt, cfg, total_steps=10)
        out = []
        for _ in range(4):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    assert lrs(OptimConfig(lr=1.0, lr_warmup_steps=2, lr_warmup_steps_ratio=0.5)) == [0.5, 1.0, 1.0, 1.0]
    assert lrs(OptimConfig(lr=1.0, lr_warmup_steps_ratio=0.4)) == [0.25, 0.5, 0.75, 1.0]


def test_gspo_config_shows_a_presets_values_beside_the_defaults(capsys):
    assert main(["config", "trainer.default_local_dir", "--preset", "addition"]) == 0
    assert "= null  [preset addition: outputs/gspo-addition]" in capsys.readouterr().out
    assert main(["config", "--preset", "nope"]) == 2
    assert "--preset nope: no such preset" in capsys.readouterr().err
