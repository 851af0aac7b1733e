"""The command line: `gspo validate` accepts good input, rejects bad input with exit 2 and the key named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gspo.cli import main
from tests.presets import PRESET_ARGS
from tests.test_config import SEED_OVERRIDES


def _base(tiny_model_dir, addition_files) -> list[str]:
    """The tiny model and local addition data on the addition preset (``--preset`` first: it must precede the
    overrides)."""
    train, val = addition_files
    return [*PRESET_ARGS, f"actor_rollout_ref.model.path={tiny_model_dir}", f"data.train_files=[{train}]",
            f"data.val_files=[{val}]"]


def test_validate_accepts_seed_override_line(tiny_model_dir, addition_files, capsys):
    assert main(["validate", *_base(tiny_model_dir, addition_files), *SEED_OVERRIDES]) == 0
    out = capsys.readouterr().out
    assert "loss_mode: gspo" in out and "ok: model" in out and "64 train prompts" in out


@pytest.mark.parametrize("override, expected", [
    ("algorithm.filter_groups.metrc=acc", "did you mean 'algorithm.filter_groups.metric'"),
    ("actor_rollout_ref.actor.clip_ratio_low=2", "actor_rollout_ref.actor.clip_ratio_low"),
    ("actor_rollout_ref.rollout.n=0", "actor_rollout_ref.rollout.n"),
    ("algorithm.filter_groups.metric=loss", "algorithm.filter_groups.metric"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=dpo", "actor_rollout_ref.actor.policy_loss.loss_mode"),
    ("actor_rollout_ref.actor.loss_agg_mode=sum", "actor_rollout_ref.actor.loss_agg_mode"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size=3", "must divide data.train_batch_size"),
    ("data.train_batch_size=128", "data.train_batch_size: 128 is larger than the 64 usable prompts"),
    ("data.train_files=[/nonexistent/train.jsonl]", "data.train_files: /nonexistent/train.jsonl"),
    ("actor_rollout_ref.model.path=/nonexistent/model", "actor_rollout_ref.model.path: '/nonexistent/model' does not"),
    ("custom_reward_function.path=/nonexistent/reward.py", "/nonexistent/reward.py"),
])
def test_validate_rejects_bad_input_naming_the_key(tiny_model_dir, addition_files, capsys, override, expected):
    args = ["validate", *_base(tiny_model_dir, addition_files), "data.gen_batch_size=32",
            "actor_rollout_ref.actor.ppo_mini_batch_size=16", override]
    assert main(args) == 2
    assert expected in capsys.readouterr().err


def test_python_dash_m_entry_points_agree(tiny_model_dir, addition_files):
    args = _base(tiny_model_dir, addition_files) + ["actor_rollout_ref.rollout.n=0"]
    for entry in (["-m", "gspo", "validate"], ["-m", "gspo.train"]):
        proc = subprocess.run([sys.executable, *entry, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "actor_rollout_ref.rollout.n: 0 must be >= 1" in proc.stderr


def test_train_names_its_preset_on_its_first_line(tmp_path, capsys):
    """`gspo train` with no model path is the embedded default run (preset addition); it says so first."""
    assert main(["train", f"trainer.default_local_dir={tmp_path / 'run'}", "trainer.total_training_steps=1",
                 "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.logger=[]",
                 "trainer.device=cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("preset: addition (gspo/presets/addition.yaml"), first


def test_validate_names_the_preset_as_a_yaml_comment(tiny_model_dir, addition_files, capsys):
    assert main(["validate", *_base(tiny_model_dir, addition_files)[2:], "--preset", "none",
                 "data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# preset: none (verl's defaults")  # the flag may follow the overrides
    assert "lr: 1.0e-06" in out and "max_prompt_length: 512" in out


@pytest.mark.parametrize("args, expected", [
    ([], "addition"),  # no model path: the embedded default run
    (["actor_rollout_ref.model.path=embedded://sums"], "sums"),
    (["actor_rollout_ref.model.path=/models/qwen"], None),
    (["--preset", "none"], None),
    (["--preset", "sums", "actor_rollout_ref.model.path=/models/qwen"], "sums"),
])
def test_preset_auto_follows_the_model_path(args, expected):
    from gspo.cli import _hoist_options, _parser
    from gspo.config.loading import MODEL_PATH_KEY
    from gspo.config.presets import choose_preset

    parsed = _parser().parse_args(_hoist_options(["validate", *args]))
    paths = [item.split("=", 1)[1] for item in parsed.overrides if item.startswith(MODEL_PATH_KEY + "=")]
    assert choose_preset(parsed.preset, paths[-1] if paths else None) == expected


def test_an_unknown_preset_is_refused_naming_the_choices(capsys):
    assert main(["validate", "--preset", "adition"]) == 2
    assert "--preset adition: no such preset; choose one of addition, sums" in capsys.readouterr().err
